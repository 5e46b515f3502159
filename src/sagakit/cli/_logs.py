"""How ``sagakit worker`` writes its log: one line a record on stderr, as text or as JSON.

The library logs through stdlib ``logging`` under ``sagakit.*`` with the saga's facts as
fields (``saga_id``, ``saga_name``, ``saga_version``, ``step``, ``attempt``, ``key``); a
long-running worker sends them somewhere an operator can search, so JSON keeps them fields.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum

FIELDS = (
    "saga_id",
    "saga_name",
    "saga_version",
    "step",
    "attempt",
    "key",
    "event_type",
    "event_id",
    "stream",
    "service",
    "lease_owner",
    "sagas",
    "seconds",
)
"""The ``extra=`` fields sagakit's log records may carry."""


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class JsonLines(logging.Formatter):
    """A record as one JSON object: time (RFC 3339, UTC), level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({f: getattr(record, f) for f in FIELDS if hasattr(record, f)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


@contextlib.contextmanager
def logging_to_stderr(level: str, format: LogFormat) -> Iterator[None]:
    """While in the block, send sagakit's records at ``level`` and above to stderr, in
    ``format``; as it was afterwards (a command run in-process leaves no handler behind)."""
    handler = logging.StreamHandler(sys.stderr)
    if format is LogFormat.JSON:
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sagakit")
    before = (root.handlers, root.level, root.propagate)
    root.handlers, root.propagate = [handler], False
    root.setLevel(level.upper())
    try:
        yield
    finally:
        root.handlers, root.propagate = before[0], before[2]
        root.setLevel(before[1])
