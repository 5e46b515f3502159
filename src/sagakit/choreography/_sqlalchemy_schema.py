"""The outbox and inbox as SQLAlchemy Core tables, and every statement the adapter runs.

Why Core tables on a :data:`metadata` of their own: a service's Alembic migrations (or its
``metadata.create_all``) make them beside its models, and the same Python describes them on
every database, the few differences being types:

- keys (consumers, event ids, correlation ids) compare exactly: on MySQL and MariaDB they
  are ``utf8mb4_bin``, since the default collation there is case-insensitive and would take
  the event ``a1`` for a redelivery of ``A1``. (A ``_bin`` collation still ignores trailing
  spaces, as every PAD SPACE collation does.) They hold 255 characters; longer ones are
  refused before they reach SQL, where MySQL's ``INSERT IGNORE`` would cut them short;
- times are epoch seconds in ``DOUBLE``: MySQL's ``FLOAT`` is single precision, minutes off;
- an event is ``LONGTEXT`` on MySQL and MariaDB, whose ``TEXT`` stops at 64 KiB.

The indexes serve the chain-head query (:data:`~sagakit.choreography._outbox.HEADS_WHERE`)
on all three databases alike. MariaDB has no partial index, so instead of PostgreSQL's
``WHERE sent_at IS NULL`` the unsent rows are a prefix of the key: ``(sent_at, id)`` walks
them oldest first with no sort (and serves :meth:`prune` and the backlog's count), and
``(correlation_id, sent_at, id)`` answers the ``NOT EXISTS`` of an earlier unsent row of
the same chain with one seek. Sent rows kept until a prune sit in other key ranges, never
scanned by the relay.

Every function here takes a sync :class:`~sqlalchemy.engine.Connection`: the sync adapter
calls it in a thread, the async one through ``run_sync`` (SQLAlchemy's greenlet bridge), so
the SQL is written once for both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Insert,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

from sagakit.bus import Event
from sagakit.choreography._outbox import OutboxDeadLetter, Pending, unreadable
from sagakit.errors import InvalidArgumentError, MalformedEventError

KEY_LENGTH = 255
"""The longest consumer name, event id or correlation id the tables keep, in characters."""

ERROR_LENGTH = 4000
"""A broker's refusal is kept up to this many characters (MySQL's ``TEXT`` holds 16,383)."""


FAMILIES = ("postgresql", "mysql", "sqlite")
"""The databases the adapter speaks: MariaDB is of MySQL's family."""

_CHUNK = 500
"""Ids per ``IN (...)`` list, far below every database's limit on parameters."""


def _key() -> TypeEngine[str]:
    return String(KEY_LENGTH).with_variant(
        mysql.VARCHAR(KEY_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def _long_text() -> TypeEngine[str]:
    return Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


_INNODB: dict[str, Any] = {
    f"{name}_{option}": value
    for name in ("mysql", "mariadb")  # a mariadb:// engine reads only its own prefix
    for option, value in (("engine", "InnoDB"), ("charset", "utf8mb4"))
}
"""Row locks and transactions, and text of any language, on MySQL and MariaDB."""

metadata = MetaData()
"""The outbox's and the inbox's tables: give it to Alembic beside your models' metadata."""

outbox_table = Table(
    "sagakit_outbox",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),  # SQLite's rowid is an INTEGER key
        primary_key=True,
        autoincrement=True,
    ),
    Column("stream", String(KEY_LENGTH), nullable=False),
    Column("correlation_id", _key(), nullable=False),
    Column("event", _long_text(), nullable=False),
    Column("created_at", Double(), nullable=False),
    Column("sent_at", Double()),
    Column("refusals", Integer(), nullable=False, server_default=text("0")),
    Column("last_error", Text()),
    Column("retry_at", Double()),
    Column("dead_at", Double()),
    Index("sagakit_outbox_by_sent", "sent_at", "id"),
    Index("sagakit_outbox_chain_by_sent", "correlation_id", "sent_at", "id"),
    sqlite_autoincrement=True,  # ids are never reused, as in SqliteDatabase's file
    **_INNODB,
)
"""Events waiting to be published (and, until pruned, those that were)."""

inbox_table = Table(
    "sagakit_inbox",
    metadata,
    Column("consumer", _key(), primary_key=True),
    Column("event_id", _key(), primary_key=True),
    Column("processed_at", Double(), nullable=False),
    **_INNODB,
)
"""The events each consumer handled, by id: a redelivery finds its row and does nothing."""


def family(dialect_name: str) -> str | None:
    """The database family of a SQLAlchemy dialect's name, or None if the adapter lacks it."""
    name = "mysql" if dialect_name == "mariadb" else dialect_name
    return name if name in FAMILIES else None


def check_key(kind: str, value: str) -> str:
    """``value`` if the tables can keep it whole (MySQL's ``INSERT IGNORE`` would cut it)."""
    if len(value) > KEY_LENGTH:
        raise InvalidArgumentError(
            f"{kind} {value[:40]!r}... is {len(value)} characters long; the outbox and inbox "
            f"keep at most {KEY_LENGTH}"
        )
    return value


# -- a service's transaction ----------------------------------------------------------------


def _inbox_insert(kind: str) -> Insert:
    """An insert that does nothing, and counts no row, when the key is already there."""
    if kind == "postgresql":
        return postgres_insert(inbox_table).on_conflict_do_nothing()
    if kind == "sqlite":
        return sqlite_insert(inbox_table).on_conflict_do_nothing()
    return insert(inbox_table).prefix_with("IGNORE")  # keys are checked: it ignores only those


def record_delivery(connection: Connection, kind: str, consumer: str, event_id: str) -> bool:
    """Add the inbox row; False if ``consumer`` had handled ``event_id`` already."""
    row = {"consumer": consumer, "event_id": event_id, "processed_at": time.time()}
    inserting = _inbox_insert(kind).execution_options(preserve_rowcount=True)  # kept for DML only
    return connection.execute(inserting, row).rowcount == 1


def add_event(connection: Connection, stream: str, event: Event, channel: str | None) -> None:
    """Add the outbox row; with a ``channel`` (PostgreSQL), tell the listening relays at
    commit."""
    connection.execute(
        insert(outbox_table),
        {
            "stream": stream,
            "correlation_id": event.correlation_id,
            "event": event.to_json().decode(),
            "created_at": time.time(),
        },
    )
    if channel is not None:  # once a transaction: PostgreSQL merges repeats anyway
        connection.execute(select(func.pg_notify(channel, "")))


def channel(connection: Connection) -> str:
    """The PostgreSQL channel of the outbox this connection writes, named as
    :class:`~sagakit.choreography.postgres.PostgresDatabase` names it (for the schema the
    tables are in; a long name hashed to fit 63 bytes), so that either's relay hears the
    other's commits, and an operator's ``sagakit outbox resend`` wakes them all."""
    translated = connection.get_execution_options().get("schema_translate_map") or {}
    schema = translated.get(None) or connection.execute(select(func.current_schema())).scalar()
    name = f"sagakit_outbox_{schema}"
    if len(name.encode()) <= 63:
        return name
    return f"sagakit_outbox_{hashlib.sha256(str(schema).encode()).hexdigest()[:32]}"


def begin_immediate(connection: Connection) -> None:
    """SQLite: take the write lock at the start, as :class:`SqliteDatabase` does, so that a
    transaction that reads before it writes cannot fail when another connection wrote."""
    driver = connection.connection.driver_connection
    if not getattr(driver, "in_transaction", False):  # an engine of the BEGIN recipe began
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# -- a relay's claim ------------------------------------------------------------------------

Found = list[tuple[int, str, str, str, int]]
"""Outbox rows as read: id, stream, correlation id, event text, refusals."""


def by_key(statement: Any, kind: str) -> Any:
    """MySQL and MariaDB: make ``statement`` reach the outbox through its primary key only.

    InnoDB locks each row a locking statement reads, even one it then finds does not match
    (at ``READ COMMITTED`` it lets go right after), and on a small table the optimiser
    reads them all. Another claim's ``SKIP LOCKED`` would take a row that was only looked
    at for one held, and leave its saga for no reason; read by key, a statement locks the
    rows it names and no others.
    """
    if kind != "mysql":
        return statement
    hint = "FORCE INDEX (PRIMARY)"
    for dialect in ("mysql", "mariadb"):
        if isinstance(statement, Select):
            statement = statement.with_hint(outbox_table, hint, dialect)
        else:
            statement = statement.with_hint(hint, dialect_name=dialect)
    return statement


def _heads(limit: int, now: float, lock: bool) -> Any:
    """HEADS_WHERE in Core: the ids and chains of the oldest due heads; with ``lock``,
    locked, skipping those another claim holds."""
    o, p = outbox_table.alias("o"), outbox_table.alias("p")
    earlier = select(p.c.id).where(
        p.c.correlation_id == o.c.correlation_id, p.c.sent_at.is_(None), p.c.id < o.c.id
    )
    query = (
        select(o.c.id, o.c.correlation_id)
        .where(o.c.sent_at.is_(None), o.c.dead_at.is_(None))
        .where(or_(o.c.retry_at.is_(None), o.c.retry_at <= now), ~exists(earlier))
        .order_by(o.c.id)
        .limit(limit)
    )
    return query.with_for_update(skip_locked=True) if lock else query


def _lock(ids: Sequence[int], kind: str, heads: bool = False) -> Any:
    """Lock the rows ``ids`` that are still unsent (and, for ``heads``, not dead), skipping
    those another claim holds, by key."""
    t = outbox_table.c
    query = select(t.id, t.correlation_id).where(t.id.in_(ids), t.sent_at.is_(None))
    if heads:
        query = query.where(t.dead_at.is_(None))
    return by_key(query.order_by(t.id).with_for_update(skip_locked=True), kind)


def _locked_heads(connection: Connection, kind: str, limit: int) -> list[str]:
    """The chains of up to ``limit`` due heads this claim now holds.

    PostgreSQL locks as it finds them. MySQL and MariaDB find them without locking (the
    search reads every unsent row: see :func:`by_key`), then lock them by key; twice as
    many are looked for, so that heads another relay took are made up for by later ones.
    """
    now = time.time()
    if kind == "postgresql":
        return [row[1] for row in connection.execute(_heads(limit, now, True))]
    found = [row[0] for row in connection.execute(_heads(2 * limit, now, False))]
    if not found:
        return []
    return [row[1] for row in connection.execute(_lock(found, kind, heads=True).limit(limit))]


def claimable(connection: Connection, kind: str, limit: int) -> Found:
    """The unsent rows of up to ``limit`` claimable chains, in id order.

    Where rows can be locked (all but SQLite), every row returned is, and a chain is
    returned only if all its unsent rows are. Locking the heads alone is not enough: ids are
    given out as rows are written, not as they commit, so a row written before a claimed
    head may commit after the claim took it, and head the chain unlocked; another claim
    locking it would take the chain too (and publish its rows again). That claim finds the
    rest held, and leaves it.
    """
    if kind == "sqlite":
        heads = [row[1] for row in connection.execute(_heads(limit, time.time(), False))]
    else:
        heads = _locked_heads(connection, kind, limit)
    if not heads:
        return []
    t = outbox_table.c
    rows = _found(
        connection.execute(
            select(t.id, t.stream, t.correlation_id, t.event, t.refusals)
            .where(t.sent_at.is_(None), t.correlation_id.in_(heads))
            .order_by(t.id)
        )
    )
    if kind == "sqlite":
        return rows
    ids = [row[0] for row in rows]
    held = {row[0] for chunk in _chunks(ids) for row in connection.execute(_lock(chunk, kind))}
    partly_held = {row[2] for row in rows if row[0] not in held}
    return [row for row in rows if row[2] not in partly_held]


def _found(rows: Any) -> Found:
    return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def read(found: Found) -> tuple[list[Pending], list[tuple[int, str]]]:
    """The rows whose event parses, but none behind an unreadable row of its chain (they
    wait for it), and the (id, reason) of the unreadable ones, dead letters from now on."""
    rows: list[Pending] = []
    dead: list[tuple[int, str]] = []
    blocked: set[str] = set()
    for row_id, stream, correlation_id, data, refusals in found:
        if correlation_id in blocked:
            continue
        try:
            rows.append(Pending(row_id, stream, Event.parse(data), refusals))
        except MalformedEventError as error:
            dead.append((row_id, unreadable(row_id, error)))
            blocked.add(correlation_id)
    return rows, dead


Refusal = tuple[int, str, float | None, float | None]
"""A refused row: its id, the broker's reason, when to try again, when it died."""


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def settle(
    connection: Connection,
    kind: str,
    sent: Sequence[int],
    refusals: Sequence[Refusal],
    dead: Sequence[tuple[int, str]],
) -> None:
    """Write what became of a claim's rows: sent, refused (again later, or dead), unreadable."""
    t = outbox_table.c
    now = time.time()
    for ids in _chunks(sent):
        marking = update(outbox_table).where(t.id.in_(ids)).values(sent_at=now)
        connection.execute(by_key(marking, kind))
    by_id = by_key(update(outbox_table).where(t.id == bindparam("row_id")), kind)
    if refusals:
        connection.execute(
            by_id.values(
                refusals=t.refusals + 1,
                last_error=bindparam("reason"),
                retry_at=bindparam("retry"),
                dead_at=bindparam("died"),
            ),
            [
                {"row_id": row_id, "reason": reason[:ERROR_LENGTH], "retry": retry, "died": died}
                for row_id, reason, retry, died in refusals
            ],
        )
    if dead:
        connection.execute(
            by_id.values(dead_at=now, last_error=bindparam("reason")),
            [{"row_id": row_id, "reason": reason[:ERROR_LENGTH]} for row_id, reason in dead],
        )


# -- an operator's questions and actions ----------------------------------------------------


def backlog(connection: Connection) -> int:
    t = outbox_table.c
    count = connection.execute(
        select(func.count())
        .select_from(outbox_table)
        .where(t.sent_at.is_(None), t.dead_at.is_(None))
    ).scalar_one()
    return int(count)


def dead_letters(connection: Connection, limit: int) -> list[OutboxDeadLetter]:
    t = outbox_table.c
    found = connection.execute(
        select(
            t.id,
            t.stream,
            t.correlation_id,
            t.event,
            t.refusals,
            func.coalesce(t.last_error, ""),
            t.created_at,
            t.dead_at,
        )
        .where(t.sent_at.is_(None), t.dead_at.is_not(None))
        .order_by(t.id)
        .limit(limit)
    )
    return [OutboxDeadLetter(*row) for row in found]


def resend(connection: Connection, kind: str, ids: Sequence[int]) -> int:
    t = outbox_table.c
    made = 0
    for chunk in _chunks(ids):
        resending = (
            update(outbox_table)
            .where(t.id.in_(chunk), t.sent_at.is_(None), t.dead_at.is_not(None))
            .values(dead_at=None, retry_at=None, refusals=0)
        )
        made += connection.execute(by_key(resending, kind)).rowcount
    return made


def prune(connection: Connection, sent_before: float) -> int:
    """Delete sent rows. (MariaDB takes no index hint in a DELETE: on a small table this
    may read, so lock for an instant, unsent rows too, and a claim at that instant leave
    their saga to the next pass; an operator's prune is rare.)"""
    t = outbox_table.c
    return connection.execute(
        delete(outbox_table).where(t.sent_at.is_not(None), t.sent_at < sent_before)
    ).rowcount
