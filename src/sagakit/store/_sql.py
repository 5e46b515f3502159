"""What the two SQL saga logs share, so that SQLite and PostgreSQL differ only in their SQL.

Both keep the same tables: a row per instance and an append-only log keyed by ``(saga_id,
seq)``. How a record or an instance becomes a row and back, how a forward-only schema
history is checked and applied, and how a group commit hands each caller its own outcome
do not depend on the database, so they live here once; the statements, the connections and
the commit itself stay in each dialect's module (``sqlite.py``, ``postgres.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeAlias

from sagakit.errors import SchemaVersionError
from sagakit.log import Instance, Record, RecordType, SagaStatus
from sagakit.store._filter import FieldEquals, InstanceFilter, Position

Migrations: TypeAlias = tuple[tuple[str, ...], ...]
"""A dialect's schema history: migration ``n`` (from 1) is the statements at ``n - 1``, and the
schema version of a log is how many it has had. Forward-only and frozen: an applied migration
is never edited; a change to the schema is a new one at the end."""

Settled: TypeAlias = tuple[bool, Any]
"""A write's outcome in a group commit: ``(True, result)`` or ``(False, error)``."""

Queued: TypeAlias = tuple[object, "asyncio.Future[Any]"]
"""A write waiting for the next group commit, and the future its caller awaits."""


def log_rows(saga_id: str, records: Sequence[Record]) -> list[tuple[Any, ...]]:
    """The ``saga_log`` rows of ``records``: ``(saga_id, seq, type, at, step, attempt, data)``.

    The type is the member itself, a ``str`` to every driver: ``.value`` is a Python-level
    property in CPython 3.11, read for every record a store writes."""
    return [(saga_id, r.seq, r.type, r.at, r.step, r.attempt, r.data) for r in records]


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


class Dialect(Protocol):
    """How a database spells what :func:`where` builds: placeholders and JSON fields."""

    @property
    def updated(self) -> str:
        """SQL for when an instance last changed (its ``updated_at`` column, or an
        expression where the row is not rewritten at every append)."""
        ...

    def mark(self, n: int) -> str:
        """The ``n``-th parameter's placeholder (from 1)."""
        ...

    def field_text(self, data: str, path: str) -> str:
        """SQL for the text of the field at ``path`` (a placeholder) of the JSON column
        ``data``, as :func:`sagakit.store._filter.field_text` renders it."""
        ...

    def path(self, keys: tuple[str, ...]) -> object:
        """The parameter value of a field path."""
        ...

    def field_condition(self, field: FieldEquals, bind: Callable[[object], str]) -> str:
        """The condition that the instance has ``field`` (most dialects: :func:`has_field`)."""
        ...


def has_field(field: FieldEquals, bind: Callable[[object], str], dialect: Dialect) -> str:
    """The condition that the record holding ``field`` has it, looked up by the instance's
    log key: one row read per candidate instance, however many instances there are."""
    text = dialect.field_text("l.data", bind(dialect.path(field.log_path)))
    if field.step is None:
        record = "l.seq = 0"
    else:
        record = f"l.type = 'step_succeeded' AND l.step = {bind(field.step)}"
    return (
        "EXISTS (SELECT 1 FROM saga_log AS l WHERE l.saga_id = sagas.id"
        f" AND {record} AND {text} = {bind(field.text)})"
    )


def where(
    rows: InstanceFilter, after: Position | None, dialect: Dialect
) -> tuple[str, list[object]]:
    """The ``WHERE`` clause (empty when nothing is asked) over ``sagas`` and its parameters."""
    params: list[object] = []

    def bind(value: object) -> str:
        params.append(value)
        return dialect.mark(len(params))

    def among(column: str, values: Iterable[object]) -> str:
        return f"{column} IN ({', '.join(bind(v) for v in values)})"

    conditions = []
    if rows.statuses:
        conditions.append(among("status", sorted(s.value for s in rows.statuses)))
    if rows.names:
        conditions.append(among("name", sorted(rows.names)))
    if rows.versions:
        conditions.append(among("version", sorted(rows.versions)))
    for column, operator, bound in (
        ("created_at", ">", rows.created_after),
        ("created_at", "<", rows.created_before),
        (dialect.updated, ">", rows.updated_after),
        (dialect.updated, "<", rows.updated_before),
        ("due_at", "<=", rows.due_before),
    ):
        if bound is not None:
            conditions.append(f"{column} {operator} {bind(bound)}")
    if rows.lease_owner is not None:
        conditions.append(f"lease_owner = {bind(rows.lease_owner)}")
    for field in rows.fields:
        conditions.append(dialect.field_condition(field, bind))
    if after is not None:
        conditions.append(f"(created_at, id) < ({bind(after[0])}, {bind(after[1])})")
    return ("WHERE " + " AND ".join(conditions) if conditions else ""), params


NEWEST_FIRST = "ORDER BY created_at DESC, id DESC"
