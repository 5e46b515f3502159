"""The transactional outbox and the inbox, kept in a choreographed service's own database.

Why both: a service that commits its change and *then* publishes an event loses the event
if it crashes in between, and one that publishes first announces a change that may never
commit. So the event is written to the ``sagakit_outbox`` table in the same local
transaction as the change, and a :class:`~sagakit.choreography.Relay` publishes it afterwards,
as often as it takes. That makes publishing at-least-once, and brokers redeliver too; so
each consumer records the ids of the events it handled in ``sagakit_inbox``, again in the
same transaction as its work, and a redelivered event is acknowledged with no second effect.

Tables (SQLite; a PostgreSQL :class:`LocalDatabase` would keep the same two)::

    sagakit_outbox(id autoincrement, stream, correlation_id, event json, created_at,
                   sent_at NULL)
    sagakit_inbox(consumer, event_id, processed_at, PRIMARY KEY (consumer, event_id))

:class:`SqliteDatabase` runs every transaction on one connection, one at a time (an
:class:`asyncio.Lock`), on the event loop's thread: as in the SQLite saga log, a thread
hop costs more than the fsync it would hide. A transaction that awaits keeps SQLite's write
lock meanwhile, so handlers should await nothing slow inside one.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sagakit.bus import Event
from sagakit.bus._broker import check_name
from sagakit.errors import LocalDatabaseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS sagakit_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS sagakit_outbox_unsent ON sagakit_outbox (id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS sagakit_inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at REAL NOT NULL,
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """An outbox row not yet confirmed by the broker, as the relay reads it."""

    id: int
    stream: str
    event: Event

    @property
    def correlation_id(self) -> str:
        return self.event.correlation_id


class OutboxTransaction(Protocol):
    """One open local transaction: the service's own work, its inbox and its outbox."""

    @property
    def connection(self) -> Any:
        """The driver's connection, for the service's own tables (``sqlite3.Connection``)."""
        ...

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        """Record that ``consumer`` handled ``event_id``; False if it already had."""
        ...

    async def enqueue(self, stream: str, event: Event) -> None:
        """Add ``event`` to the outbox, to be published to ``stream`` once this commits."""
        ...


class LocalDatabase(Protocol):
    """A service's own database, with the outbox and inbox tables beside its own."""

    def transaction(self) -> AbstractAsyncContextManager[OutboxTransaction]:
        """Commit on success, roll back on any error; transactions run one at a time."""
        ...

    async def unsent(self, limit: int) -> list[Pending]:
        """The oldest ``limit`` events not yet marked sent, oldest first."""
        ...

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """The broker confirmed these outbox rows: never publish them again."""
        ...

    async def backlog(self) -> int:
        """How many events wait in the outbox (for logs and tests)."""
        ...

    async def close(self) -> None:
        """Close the connection; the database is unusable afterwards."""
        ...


class SqliteTransaction:
    """:class:`OutboxTransaction` on a SQLite connection that is inside ``BEGIN IMMEDIATE``."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._connection = connection
        self._path = path

    @property
    def connection(self) -> sqlite3.Connection:
        return self._connection

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        with _translated(self._path):
            cursor = self._connection.execute(
                "INSERT OR IGNORE INTO sagakit_inbox (consumer, event_id, processed_at) "
                "VALUES (?, ?, ?)",
                (consumer, event_id, time.time()),
            )
        return cursor.rowcount == 1

    async def enqueue(self, stream: str, event: Event) -> None:
        check_name("stream", stream)
        data = event.to_json().decode()
        with _translated(self._path):
            self._connection.execute(
                "INSERT INTO sagakit_outbox (stream, correlation_id, event, created_at) "
                "VALUES (?, ?, ?, ?)",
                (stream, event.correlation_id, data, time.time()),
            )


class SqliteDatabase:
    """A service's SQLite file (WAL, ``synchronous=FULL``) holding its outbox and inbox.

    ``schema`` is the service's own tables, created beside them. Other processes may use the
    same file (an order intake writing orders, say): SQLite's write lock serialises them,
    and the relay finds their outbox rows at its next poll.
    """

    def __init__(self, path: str | os.PathLike[str], schema: str = "") -> None:
        self.path = os.fspath(path)
        self._lock = asyncio.Lock()
        try:
            self._connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise LocalDatabaseError(f"cannot open {self.path!r}: {error}") from error
        with _translated(self.path):
            if self.path != ":memory:":
                self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.executescript(SCHEMA + schema)

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection itself, for reads outside a transaction (tests, reports)."""
        return self._connection

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqliteTransaction]:
        async with self._lock:
            with _translated(self.path):
                self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTransaction(self._connection, self.path)
            except BaseException:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise
            with _translated(self.path):
                self._connection.execute("COMMIT")

    def transaction(self) -> AbstractAsyncContextManager[SqliteTransaction]:
        return self._transaction()

    async def unsent(self, limit: int) -> list[Pending]:
        async with self._lock, _translated(self.path):
            rows = self._connection.execute(
                "SELECT id, stream, event FROM sagakit_outbox WHERE sent_at IS NULL "
                "ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [Pending(row[0], row[1], Event.parse(row[2])) for row in rows]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        now = time.time()
        async with self.transaction() as tx:
            tx.connection.executemany(
                "UPDATE sagakit_outbox SET sent_at = ? WHERE id = ?", [(now, i) for i in ids]
            )

    async def backlog(self) -> int:
        async with self._lock, _translated(self.path):
            row = self._connection.execute(
                "SELECT count(*) FROM sagakit_outbox WHERE sent_at IS NULL"
            ).fetchone()
        return int(row[0])

    async def prune(self, sent_before: float) -> int:
        """Delete outbox rows sent before ``sent_before`` (epoch seconds); how many went.

        Sent rows are kept until then as a record of what was published; an operator (or a
        periodic job) prunes them.
        """
        async with self.transaction() as tx:
            cursor = tx.connection.execute(
                "DELETE FROM sagakit_outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                (sent_before,),
            )
        return int(cursor.rowcount)

    async def close(self) -> None:
        async with self._lock:
            self._connection.close()


class _translated:
    """Turn the driver's errors into :class:`LocalDatabaseError` naming the file."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if isinstance(error, sqlite3.Error):
            raise LocalDatabaseError(f"service database {self._path!r}: {error}") from error

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        self.__exit__(kind, error, tb)
