"""The event envelope that choreographed services exchange over a broker.

Every event says what happened (``type``), to which saga (``correlation_id``), because of
which earlier event (``causation_id``), who said so (``source``) and when (``time``), so a
tracker can rebuild a choreographed saga's timeline from events alone: that is the
"hard to trace" cost of choreography, paid once here instead of in every service.

On the wire an event is one compact JSON object with exactly the fields of :class:`Event`
(the optional ``traceparent`` only when it is set: see :mod:`sagakit.telemetry`).
``time`` is float seconds since the Unix epoch (UTC), like the saga log's timestamps: cheap
to make, to compare and to sort, and exact through JSON. :meth:`Event.parse` is strict,
because a consumer must tell a malformed message (dead-letter it at once) from one its
handler failed on (retry it); whatever is wrong, it raises :class:`MalformedEventError`.
"""

from __future__ import annotations

import json
import math
import os
import time as _time
from dataclasses import dataclass, fields
from typing import Any

from sagakit.errors import MalformedEventError
from sagakit.log._codec import ENCODE_ERRORS, encode

SCHEMA_VERSION = 1
"""The envelope version this sagakit writes and reads; a newer one is refused, not guessed."""


def new_event_id() -> str:
    """A fresh id: 12 hex digits of milliseconds since the epoch, then 80 random bits.

    Time-ordered ids keep an inbox table's primary key appending at its right edge and let
    an operator read the order of events from their ids.
    """
    return f"{_time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable fact, as published to a stream.

    ``data`` is any JSON value (dicts, lists, str, int, float, bool, None); build events
    with :meth:`new` so ids, correlation and causation are filled in consistently.
    """

    id: str
    type: str
    correlation_id: str
    causation_id: str | None
    source: str
    time: float
    schema_version: int
    data: Any
    traceparent: str | None = None
    """The W3C trace context of the span that emitted the event (OpenTelemetry installed
    and configured), which the handler's span continues; absent on the wire when None."""

    def __post_init__(self) -> None:
        for field in fields(self):
            problem = _CHECKS[field.name](getattr(self, field.name))
            if problem:
                raise MalformedEventError(f"{self._label()}: field {field.name!r} {problem}")
        if self.schema_version != SCHEMA_VERSION:
            raise MalformedEventError(_unsupported(self.schema_version))
        object.__setattr__(self, "time", float(self.time))

    @classmethod
    def new(
        cls,
        type: str,
        data: Any = None,
        *,
        source: str,
        correlation_id: str | None = None,
        caused_by: Event | None = None,
        traceparent: str | None = None,
    ) -> Event:
        """A new event, now.

        With ``caused_by``, the event joins its cause's saga (its ``correlation_id``) and
        records the cause's id as ``causation_id``. Without either, the event starts a new
        saga whose correlation id is the event's own id.
        """
        event_id = new_event_id()
        if caused_by is not None:
            if correlation_id is not None and correlation_id != caused_by.correlation_id:
                raise MalformedEventError(
                    f"event {type!r}: correlation_id {correlation_id!r} differs from that of "
                    f"the event that caused it ({caused_by.correlation_id!r})"
                )
            correlation_id = caused_by.correlation_id
        return cls(
            id=event_id,
            type=type,
            correlation_id=correlation_id or event_id,
            causation_id=caused_by.id if caused_by else None,
            source=source,
            time=_time.time(),
            schema_version=SCHEMA_VERSION,
            data=data,
            traceparent=traceparent,
        )

    def to_json(self) -> bytes:
        """The event as compact UTF-8 JSON; data that is not JSON is malformed."""
        try:
            wire = {name: getattr(self, name) for name in FIELDS}
            if self.traceparent is not None:
                wire["traceparent"] = self.traceparent
            text = encode(wire)
            return text.encode()
        except (*ENCODE_ERRORS, UnicodeEncodeError) as exc:
            raise MalformedEventError(f"{self._label()}: data is not JSON: {exc}") from exc

    @classmethod
    def parse(cls, data: bytes | str) -> Event:
        """The event in ``data``, or :class:`MalformedEventError` saying what is wrong."""
        obj = _decode(data)
        if not isinstance(obj, dict):
            raise MalformedEventError(f"not an event: expected a JSON object, got {_kind(obj)}")
        version = obj.get("schema_version")
        if _integer(version) is None and version != SCHEMA_VERSION:
            raise MalformedEventError(_unsupported(version))
        _check_fields(obj)
        return cls(**obj)

    def _label(self) -> str:
        event_id = self.id if isinstance(self.id, str) else "?"
        event_type = self.type if isinstance(self.type, str) else "?"
        return f"event {event_id!r} ({event_type})"


OPTIONAL = ("traceparent",)
"""The envelope's optional fields: written only when set, tolerated when absent."""
FIELDS = tuple(f.name for f in fields(Event) if f.name not in OPTIONAL)
"""The envelope's required fields, in wire order (the optional ones follow when set)."""


def _decode(data: bytes | str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise MalformedEventError(f"not an event: expected bytes or text, got {type(data)}")
    try:
        text = data if isinstance(data, str) else bytes(data).decode()
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise MalformedEventError(f"not UTF-8 text: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedEventError(f"not JSON: {exc}") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse ``{"id": 1, "id": 2}``: json.loads would silently keep the last."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_fields(obj: dict[str, Any]) -> None:
    missing = [name for name in FIELDS if name not in obj]
    extra = sorted(set(obj) - set(FIELDS) - set(OPTIONAL))
    problems = []
    if missing:
        problems.append("missing field(s) " + ", ".join(map(repr, missing)))
    if extra:
        problems.append("unexpected field(s) " + ", ".join(map(repr, extra)))
    if problems:
        raise MalformedEventError("not an event: " + "; ".join(problems))


def _unsupported(version: object) -> str:
    return (
        f"event schema_version {version!r} is not supported "
        f"(this sagakit reads version {SCHEMA_VERSION}; upgrade the consumer)"
    )


def _kind(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {_kind(value)}"
    return None if value else "must not be empty"


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _number(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number (seconds since the epoch), got {_kind(value)}"
    try:
        return None if math.isfinite(float(value)) else "must be finite"
    except OverflowError:
        return "is out of range"


def _integer(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {_kind(value)}"
    return None


def _anything(value: object) -> str | None:
    return None


_CHECKS = {
    "id": _text,
    "type": _text,
    "correlation_id": _text,
    "causation_id": _optional_text,
    "source": _text,
    "time": _number,
    "schema_version": _integer,
    "data": _anything,
    "traceparent": _optional_text,
}
