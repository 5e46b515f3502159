"""A choreographed service's outbox and inbox in its own SQLite file.

:class:`SqliteDatabase` runs every transaction on one connection, one at a time (an
:class:`asyncio.Lock`), on the event loop's thread: as in the SQLite saga log, a thread
hop costs more than the fsync it would hide. A transaction that awaits keeps SQLite's write
lock meanwhile, so handlers should await nothing slow inside one.

One relay per file: a claim reads its chains without holding SQLite's write lock while the
broker is called (that would stop every handler for the whole publish), and writes what
became of them in one transaction at its end. Other processes may write to the same file
(an order intake, say); the relay finds their rows at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sagakit.bus import Event
from sagakit.bus._broker import check_name
from sagakit.choreography._outbox import HEADS_WHERE, OutboxDeadLetter, Pending, unreadable
from sagakit.errors import LocalDatabaseError, MalformedEventError

__all__ = ["SqliteDatabase"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sagakit_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,
    refusals INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    retry_at REAL,
    dead_at REAL
);
CREATE TABLE IF NOT EXISTS sagakit_inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at REAL NOT NULL,
    PRIMARY KEY (consumer, event_id)
) WITHOUT ROWID;
"""

ADDED_COLUMNS = {
    "refusals": "INTEGER NOT NULL DEFAULT 0",
    "last_error": "TEXT",
    "retry_at": "REAL",
    "dead_at": "REAL",
}
"""Columns an outbox made by an earlier sagakit lacks, added when the file is opened."""

INDEXES = """
DROP INDEX IF EXISTS sagakit_outbox_unsent;
CREATE INDEX IF NOT EXISTS sagakit_outbox_chains
    ON sagakit_outbox (correlation_id, id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS sagakit_outbox_waiting ON sagakit_outbox (id) WHERE sent_at IS NULL;
"""

_HEADS = f"""
SELECT o.correlation_id FROM sagakit_outbox o WHERE {HEADS_WHERE.format(now="?")}
ORDER BY o.id LIMIT ?"""

_ROWS = """
SELECT id, stream, correlation_id, event, refusals, dead_at FROM sagakit_outbox
WHERE sent_at IS NULL AND correlation_id IN (SELECT value FROM json_each(?))
ORDER BY id"""


class SqliteTransaction:
    """An open transaction on a SQLite connection that is inside ``BEGIN IMMEDIATE``."""

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

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return function(*args)


class SqliteClaim:
    """Chains read at once; what became of them is written when the claim ends."""

    def __init__(self, rows: list[Pending]) -> None:
        self.rows = rows
        self.sent_ids: list[int] = []
        self.refusals: list[tuple[str, float | None, float | None, int]] = []

    async def sent(self, ids: Sequence[int]) -> None:
        self.sent_ids.extend(ids)

    async def refused(self, row_id: int, error: str, retry_at: float | None) -> None:
        dead_at = time.time() if retry_at is None else None
        self.refusals.append((error, retry_at, dead_at, row_id))


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
            self._add_missing_columns()
            self._connection.executescript(INDEXES)

    def _add_missing_columns(self) -> None:
        have = {row[1] for row in self._connection.execute("PRAGMA table_info(sagakit_outbox)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:
                self._connection.execute(f"ALTER TABLE sagakit_outbox ADD COLUMN {name} {kind}")

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

    @asynccontextmanager
    async def _claim(self, limit: int) -> AsyncIterator[SqliteClaim]:
        claim = SqliteClaim(await self._chains(limit))
        yield claim
        if claim.sent_ids or claim.refusals:
            await self._settle(claim)

    def claim(self, limit: int) -> AbstractAsyncContextManager[SqliteClaim]:
        return self._claim(limit)

    async def _chains(self, limit: int) -> list[Pending]:
        """The rows of up to ``limit`` claimable chains; unreadable rows become dead letters."""
        async with self._lock, _translated(self.path):
            heads = [row[0] for row in self._connection.execute(_HEADS, (time.time(), limit))]
            if not heads:
                return []
            found = self._connection.execute(_ROWS, (json.dumps(heads),)).fetchall()
        rows, dead = _read(found)
        if dead:
            async with self.transaction() as tx:
                tx.connection.executemany(
                    "UPDATE sagakit_outbox SET dead_at = ?, last_error = ? WHERE id = ?",
                    [(time.time(), reason, row_id) for row_id, _, reason in dead],
                )
        return rows

    async def _settle(self, claim: SqliteClaim) -> None:
        now = time.time()
        async with self.transaction() as tx:
            tx.connection.executemany(
                "UPDATE sagakit_outbox SET sent_at = ? WHERE id = ?",
                [(now, row_id) for row_id in claim.sent_ids],
            )
            tx.connection.executemany(
                "UPDATE sagakit_outbox SET refusals = refusals + 1, last_error = ?,"
                " retry_at = ?, dead_at = ? WHERE id = ?",
                claim.refusals,
            )

    @contextlib.asynccontextmanager
    async def _no_changes(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        yield

    def changes(self, wake: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """SQLite cannot tell one process of another's commit: the relay polls."""
        return self._no_changes(wake)

    async def backlog(self) -> int:
        async with self._lock, _translated(self.path):
            row = self._connection.execute(
                "SELECT count(*) FROM sagakit_outbox WHERE sent_at IS NULL AND dead_at IS NULL"
            ).fetchone()
        return int(row[0])

    async def dead_letters(self, limit: int = 100) -> list[OutboxDeadLetter]:
        async with self._lock, _translated(self.path):
            found = self._connection.execute(
                "SELECT id, stream, correlation_id, event, refusals, coalesce(last_error, ''),"
                " created_at, dead_at FROM sagakit_outbox"
                " WHERE sent_at IS NULL AND dead_at IS NOT NULL ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxDeadLetter(*row) for row in found]

    async def resend(self, ids: Sequence[int]) -> int:
        async with self.transaction() as tx:
            cursor = tx.connection.executemany(
                "UPDATE sagakit_outbox SET dead_at = NULL, retry_at = NULL, refusals = 0"
                " WHERE id = ? AND sent_at IS NULL AND dead_at IS NOT NULL",
                [(row_id,) for row_id in ids],
            )
        return int(cursor.rowcount)

    async def prune(self, sent_before: float) -> int:
        async with self.transaction() as tx:
            cursor = tx.connection.execute(
                "DELETE FROM sagakit_outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                (sent_before,),
            )
        return int(cursor.rowcount)

    async def close(self) -> None:
        async with self._lock:
            self._connection.close()


Found = list[tuple[int, str, str, str, int, float | None]]
"""Outbox rows as read: id, stream, correlation id, event text, refusals, dead at."""


def _read(found: Found) -> tuple[list[Pending], list[tuple[int, str, str]]]:
    """The rows whose event parses, but none behind a dead or unreadable row of its chain
    (they wait for it), and the (id, correlation id, reason) of the newly unreadable ones."""
    rows: list[Pending] = []
    dead: list[tuple[int, str, str]] = []
    blocked: set[str] = set()
    for row_id, stream, correlation_id, data, refusals, dead_at in found:
        if correlation_id in blocked:
            continue
        if dead_at is not None:
            blocked.add(correlation_id)
            continue
        try:
            rows.append(Pending(row_id, stream, Event.parse(data), refusals))
        except MalformedEventError as error:
            dead.append((row_id, correlation_id, unreadable(row_id, error)))
            blocked.add(correlation_id)
    return rows, dead


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
