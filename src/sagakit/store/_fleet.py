"""The workers sharing a saga log, as each one reports itself: what ``sagakit versions``
shows beside the instances, so an operator sees which versions a live worker still serves
before retiring the old code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

HEARTBEAT = 10.0
"""Seconds between a worker's reports of itself."""
LIVE_FOR = 3 * HEARTBEAT
"""A worker not heard of for this long is taken for gone (killed, or its host lost)."""


class WorkerInfo(NamedTuple):
    """One worker process: who it is, what it serves, when it started and was last heard of."""

    owner: str
    """Its lease owner name (``host:pid:tag``), as the instances it holds show it."""
    host: str
    pid: int
    sagas: tuple[str, ...]
    """The saga keys (``name@version``) it registered: all it ever claims."""
    queues: tuple[str, ...]
    started_at: float
    seen_at: float

    def live(self, now: float) -> bool:
        return now - self.seen_at < LIVE_FOR


FORGOTTEN_AFTER = 86_400.0
"""A report older than this is dropped: the worker is long gone, and never said so."""


def fleet_row(worker: WorkerInfo) -> tuple[object, ...]:
    """The ``sagakit_workers`` row of a report (its lists as JSON text)."""
    return (
        worker.owner,
        worker.host,
        worker.pid,
        json.dumps(list(worker.sagas)),
        json.dumps(list(worker.queues)),
        worker.started_at,
        worker.seen_at,
    )


def worker_of(row: Sequence[Any]) -> WorkerInfo:
    """A report from its ``sagakit_workers`` row."""
    owner, host, pid, sagas, queues, started_at, seen_at = row
    return WorkerInfo(
        owner, host, pid, tuple(json.loads(sagas)), tuple(json.loads(queues)), started_at, seen_at
    )
