"""What the two SQL saga logs share, so that SQLite and PostgreSQL differ only in their SQL.

Both keep the same tables: a row per instance and an append-only log keyed by ``(saga_id,
seq)``. How a record or an instance becomes a row and back, how a forward-only schema
history is checked and applied, and how a group commit hands each caller its own outcome
do not depend on the database, so they live here once; the statements, the connections and
the commit itself stay in each dialect's module (``sqlite.py``, ``postgres.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

from sagakit.errors import SchemaVersionError
from sagakit.log import Instance, Record, RecordType, SagaStatus

Migrations: TypeAlias = tuple[tuple[str, ...], ...]
"""A dialect's schema history: migration ``n`` (from 1) is the statements at ``n - 1``, and the
schema version of a log is how many it has had. Forward-only and frozen: an applied migration
is never edited; a change to the schema is a new one at the end."""

Settled: TypeAlias = tuple[bool, Any]
"""A write's outcome in a group commit: ``(True, result)`` or ``(False, error)``."""

Queued: TypeAlias = tuple[object, "asyncio.Future[Any]"]
"""A write waiting for the next group commit, and the future its caller awaits."""


def log_rows(saga_id: str, records: Sequence[Record]) -> list[tuple[Any, ...]]:
    """The ``saga_log`` rows of ``records``: ``(saga_id, seq, type, at, step, attempt, data)``."""
    return [(saga_id, r.seq, r.type.value, r.at, r.step, r.attempt, r.data) for r in records]


def record_of(row: Sequence[Any]) -> Record:
    """A record from its log columns ``seq, type, at, step, attempt, data``."""
    return Record(row[0], RecordType(row[1]), row[2], row[3], row[4], row[5])


def instance_of(row: Sequence[Any]) -> Instance:
    """An instance from the nine columns of its ``sagas`` row, in table order."""
    return Instance(row[0], row[1], row[2], SagaStatus(row[3]), *row[4:])


def refuse_newer(migrations: Migrations, found: int, url: str) -> None:
    """Refuse a log made by a newer sagakit; called before anything is written to it."""
    if found > len(migrations):
        raise SchemaVersionError(url, found, len(migrations))


def upgrade(
    migrations: Migrations, found: int, record: str
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The statements that bring a log at schema version ``found`` to the newest, in order,
    each with its arguments: every missing migration's statements, then ``record`` (the
    dialect's insert into ``sagakit_schema``, one placeholder) of its version number.
    The caller runs them all in one transaction, so a log is never half migrated."""
    for version in range(found + 1, len(migrations) + 1):
        for statement in migrations[version - 1]:
            yield statement, ()
        yield record, (version,)


def settle(batch: Sequence[Queued], outcomes: Sequence[Settled]) -> None:
    """Hand each caller of a committed batch its outcome, in order."""
    for (_, done), (ok, value) in zip(batch, outcomes, strict=True):
        if done.done():  # the caller was cancelled; its write landed anyway
            continue
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)
