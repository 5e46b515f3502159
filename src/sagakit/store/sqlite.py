"""The embedded saga log: one SQLite file in WAL mode, every commit fsynced.

Writes are group-committed: a write queues up and the next turn of the event loop commits
every queued write in one transaction, so the sagas that were ready together share one
fsync. A caller's ``create``/``append`` returns only after its own records are durable, so
the engine's write-ahead rule holds. Each write runs under its own savepoint, so one saga's
conflict never fails another's.

The commit runs on the event loop's thread. Handing it to a worker thread would let the loop
run during the fsync, but on the 2-core machines we measure on a thread round trip cost
about 400 us, more than the fsync itself (about 350 us), so it halved throughput; blocking
the loop for one fsync, shared by every ready saga, is the better trade for an embedded log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sagakit.errors import (
    ConcurrentUpdateError,
    InvalidStoreURLError,
    SagakitError,
    StoreError,
    UnknownSagaError,
)
from sagakit.log import Instance, Message, Record, SagaStatus
from sagakit.log._records import TERMINAL, UNFINISHED
from sagakit.store import _sql
from sagakit.store._base import ANY_INSTANCE, ANY_MESSAGE, FirstCall, StoredSaga, Watch
from sagakit.store._filter import ALL, Count, FieldEquals, InstanceFilter, Position
from sagakit.store._fleet import FORGOTTEN_AFTER, WorkerInfo, fleet_row, worker_of
from sagakit.store._watchers import Watchers

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

T = TypeVar("T")

POLL_INTERVAL = 0.2
"""How often a watch on a :class:`SqliteStore` looks for changes made by other processes:
its ``wait`` returns after this long at the most."""

MIGRATIONS: _sql.Migrations = (
    (
        """CREATE TABLE sagas (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX sagas_by_status ON sagas (status, created_at)",
        """CREATE TABLE saga_log (
            saga_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            at REAL NOT NULL,
            step TEXT,
            attempt INTEGER NOT NULL,
            data TEXT,
            PRIMARY KEY (saga_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER saga_log_no_update BEFORE UPDATE ON saga_log
           BEGIN SELECT RAISE(ABORT, 'saga_log is append-only'); END""",
        """CREATE TRIGGER saga_log_no_delete BEFORE DELETE ON saga_log
           BEGIN SELECT RAISE(ABORT, 'saga_log is append-only'); END""",
    ),
    (
        "ALTER TABLE sagas ADD COLUMN due_at REAL",
        "ALTER TABLE sagas ADD COLUMN lease_owner TEXT",
        "ALTER TABLE sagas ADD COLUMN lease_expires REAL",
        "CREATE INDEX sagas_by_due ON sagas (due_at) WHERE due_at IS NOT NULL",
        """CREATE TABLE saga_inbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            saga_id TEXT NOT NULL,
            name TEXT NOT NULL,
            payload TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX saga_inbox_by_saga ON saga_inbox (saga_id, id)",
    ),
    (  # workers report themselves, for `sagakit versions`
        """CREATE TABLE sagakit_workers (
            owner TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            sagas TEXT NOT NULL,
            queues TEXT NOT NULL,
            started_at REAL NOT NULL,
            seen_at REAL NOT NULL
        )""",
    ),
)
"""Forward-only schema migrations; the schema version is how many have been applied."""

SCHEMA_VERSION = len(MIGRATIONS)

_INSERT_SAGA = "INSERT OR IGNORE INTO sagas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_LOG = "INSERT INTO saga_log VALUES (?, ?, ?, ?, ?, ?, ?)"
_UPDATE_SAGA = """UPDATE sagas SET status = ?1, updated_at = ?2,
    due_at = CASE WHEN ?3 THEN NULL ELSE due_at END,
    lease_owner = CASE WHEN ?3 THEN NULL ELSE lease_owner END,
    lease_expires = CASE WHEN ?3 THEN NULL ELSE lease_expires END
    WHERE id = ?4"""
_UNFINISHED = tuple(s.value for s in UNFINISHED)


class _Sqlite:
    """SQLite's spelling of a filter: numbered ``?n`` placeholders, JSON1 paths."""

    updated = "updated_at"

    def mark(self, n: int) -> str:
        return f"?{n}"

    def field_text(self, data: str, path: str) -> str:
        return (
            f"CASE json_type({data}, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
            f" WHEN 'text' THEN json_extract({data}, {path})"
            f" WHEN 'integer' THEN {data} -> {path} WHEN 'real' THEN {data} -> {path}"
            " END"
        )

    def path(self, keys: tuple[str, ...]) -> object:
        return "$" + "".join(f'."{key}"' for key in keys)

    def field_condition(self, field: FieldEquals, bind: Callable[[object], str]) -> str:
        return _sql.has_field(field, bind, self)


_DIALECT = _Sqlite()
_FREE = "(lease_owner IS NULL OR lease_owner = :owner OR lease_expires <= :now)"
_DUE = "((due_at IS NOT NULL AND due_at <= :now) OR lease_expires <= :now)"
_CLAIMABLE = f"status IN {_UNFINISHED!r} AND {_FREE}"
_KEY = "(name || '@' || version)"
"""An instance's saga key, ``name@version``, as :attr:`Saga.key` spells it."""


class _Create(NamedTuple):
    instance: Instance
    rows: list[tuple[Any, ...]]

    def apply(self, conn: sqlite3.Connection) -> bool:
        if not conn.execute(_INSERT_SAGA, self.instance).rowcount:
            return False
        conn.executemany(_INSERT_LOG, self.rows)
        return True


class _Append(NamedTuple):
    saga_id: str
    seq: int
    update: tuple[str, float, bool, str]
    rows: list[tuple[Any, ...]]

    def apply(self, conn: sqlite3.Connection) -> None:
        if not conn.execute(_UPDATE_SAGA, self.update).rowcount:
            raise UnknownSagaError(self.saga_id)
        try:
            conn.executemany(_INSERT_LOG, self.rows)
        except sqlite3.IntegrityError as error:
            raise ConcurrentUpdateError(self.saga_id, self.seq) from error


class _Do(NamedTuple):
    """Any other write (claims, releases, messages): rare, so simply applied in the batch."""

    fn: Callable[[sqlite3.Connection], Any]

    def apply(self, conn: sqlite3.Connection) -> Any:
        return self.fn(conn)


_Write = _Create | _Append | _Do


class _Conflict(Exception):
    """Some write of a batch failed; redo them one by one to find out which."""


def path_of(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise InvalidStoreURLError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db"
        )
    return url[len(prefix) :]


class SqliteStore:
    """A :class:`~sagakit.store.Store` in one SQLite file, for one machine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_of(url)
        self._conn: sqlite3.Connection | None = None
        self._queue: list[tuple[_Write, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._watchers = Watchers(poll=POLL_INTERVAL)

    @classmethod
    async def open(cls, url: str, *, create: bool = True) -> SqliteStore:
        """Open the file (creating it if missing) and migrate it to the current schema.

        A file whose schema is newer than this code is refused with
        :class:`SchemaVersionError` before anything is written to it. With ``create=False``
        (commands that only read) a missing file, or one without sagakit's tables (an
        application's own database, an empty file), is a :class:`StoreError` and is left
        exactly as it was.
        """
        store = cls(url)
        if not create and (store.path == ":memory:" or not Path(store.path).exists()):
            raise StoreError(f"no SQLite saga log at {store.path!r} (nothing was created)")
        try:
            store._conn = store._connect(create)
        except sqlite3.Error as error:
            raise StoreError(f"SQLite saga log {store.path!r}: {error}") from error
        return store

    # -- the Store protocol ------------------------------------------------------------------

    async def create(self, instance: Instance, records: Sequence[Record]) -> bool:
        created: bool = await self._write(_Create(instance, _sql.log_rows(instance.id, records)))
        if created and instance.due_at is not None:
            self._watchers.wake(ANY_INSTANCE)
        return created

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        update = (status.value, records[-1].at, status in TERMINAL, saga_id)
        await self._write(_Append(saga_id, records[0].seq, update, _sql.log_rows(saga_id, records)))
        if self._watchers:
            self._watchers.wake(saga_id)

    async def append_migrated(
        self, saga_id: str, records: Sequence[Record], status: SagaStatus, version: int
    ) -> None:
        update = (status.value, records[-1].at, status in TERMINAL, saga_id)
        append = _Append(saga_id, records[0].seq, update, _sql.log_rows(saga_id, records))

        def migrate(conn: sqlite3.Connection) -> None:
            append.apply(conn)
            conn.execute("UPDATE sagas SET version = ? WHERE id = ?", (version, saga_id))

        await self._write(_Do(migrate))
        self._watchers.wake(saga_id)

    async def load(self, saga_id: str) -> StoredSaga | None:
        return self._guarded(lambda conn: _load(conn, saga_id))

    async def load_many(self, saga_ids: Sequence[str]) -> list[StoredSaga]:
        def load_all(conn: sqlite3.Connection) -> list[StoredSaga]:
            return [stored for saga_id in saga_ids if (stored := _load(conn, saga_id))]

        return self._guarded(load_all)

    async def instances(
        self, rows: InstanceFilter = ALL, *, after: Position | None = None, limit: int | None = None
    ) -> list[Instance]:
        where, params = _sql.where(rows, after, _DIALECT)
        cap = -1 if limit is None else limit
        sql = f"SELECT * FROM sagas {where} {_sql.NEWEST_FIRST} LIMIT {cap:d}"
        return self._guarded(lambda conn: [_sql.instance_of(r) for r in conn.execute(sql, params)])

    async def counts(self, rows: InstanceFilter = ALL) -> list[Count]:
        where, params = _sql.where(rows, None, _DIALECT)
        sql = f"SELECT name, version, status, count(*) FROM sagas {where} GROUP BY 1, 2, 3"
        found = self._guarded(lambda conn: conn.execute(sql, params).fetchall())
        return sorted(Count(name, v, SagaStatus(status), n) for name, v, status, n in found)

    async def unfinished(self) -> list[Instance]:
        marks = ", ".join("?" for _ in UNFINISHED)
        sql = f"SELECT * FROM sagas WHERE status IN ({marks}) ORDER BY created_at, rowid"
        params = [s.value for s in UNFINISHED]
        return self._guarded(lambda conn: [_sql.instance_of(r) for r in conn.execute(sql, params)])

    async def claim(
        self,
        owner: str,
        limit: int,
        lease: float,
        *,
        due_only: bool = True,
        known: Collection[str] | None = None,
        first_calls: Mapping[str, FirstCall] | None = None,
    ) -> list[StoredSaga]:
        due = f"AND {_DUE}" if due_only else ""
        keys = sorted(known) if known is not None else []
        ours = "" if known is None else f"AND {_KEY} IN (SELECT value FROM json_each(:known))"
        select = (
            f"SELECT id FROM sagas WHERE {_CLAIMABLE} {due} {ours}"
            " ORDER BY coalesce(due_at, lease_expires, created_at) LIMIT :limit"
        )

        def claim(conn: sqlite3.Connection) -> list[StoredSaga]:
            now = time.time()
            params = {"owner": owner, "now": now, "limit": limit, "known": json.dumps(keys)}
            ids = [saga_id for (saga_id,) in conn.execute(select, params)]
            conn.executemany(
                "UPDATE sagas SET lease_owner = ?, lease_expires = ?, due_at = NULL,"
                " status = CASE status WHEN 'pending' THEN 'running' ELSE status END WHERE id = ?",
                [(owner, now + lease, saga_id) for saga_id in ids],
            )
            taken = [stored for saga_id in ids if (stored := _load(conn, saga_id)) is not None]
            if not first_calls:
                return taken
            return [_first_call(conn, stored, first_calls, now) for stored in taken]

        taken: list[StoredSaga] = await self._write(_Do(claim))
        return taken

    async def acquire(self, owner: str, saga_id: str, lease: float) -> bool:
        def acquire(conn: sqlite3.Connection) -> bool:
            now = time.time()
            return bool(
                conn.execute(
                    "UPDATE sagas SET lease_owner = :owner, lease_expires = :until, due_at = NULL"
                    f" WHERE id = :id AND {_FREE}",
                    {"owner": owner, "now": now, "until": now + lease, "id": saga_id},
                ).rowcount
            )

        taken: bool = await self._write(_Do(acquire))
        return taken

    async def renew(self, owner: str, saga_ids: Sequence[str], lease: float) -> list[str]:
        def renew(conn: sqlite3.Connection) -> list[str]:
            held = []
            until = time.time() + lease
            for saga_id in saga_ids:
                if conn.execute(
                    "UPDATE sagas SET lease_expires = ? WHERE id = ? AND lease_owner = ?",
                    (until, saga_id, owner),
                ).rowcount:
                    held.append(saga_id)
            return held

        kept: list[str] = await self._write(_Do(renew))
        return kept

    async def release(self, owner: str, saga_id: str, due_at: float | None) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE sagas SET lease_owner = NULL, lease_expires = NULL,"
                f" due_at = CASE WHEN status IN {_UNFINISHED!r} THEN min(coalesce(?1, due_at),"
                " coalesce(due_at, ?1)) END"
                " WHERE id = ?2 AND lease_owner = ?3",
                (due_at, saga_id, owner),
            )

        await self._write(_Do(release))
        self._watchers.wake(saga_id)

    async def send(self, saga_id: str, name: str, payload: str) -> Message:
        def send(conn: sqlite3.Connection) -> Message:
            now = time.time()
            if not conn.execute(
                f"UPDATE sagas SET due_at = CASE WHEN status IN {_UNFINISHED!r}"
                " THEN min(coalesce(due_at, ?1), ?1) END WHERE id = ?2",
                (now, saga_id),
            ).rowcount:
                raise UnknownSagaError(saga_id)
            cursor = conn.execute(
                "INSERT INTO saga_inbox (saga_id, name, payload, at) VALUES (?, ?, ?, ?)",
                (saga_id, name, payload, now),
            )
            return Message(cursor.lastrowid or 0, saga_id, name, payload, now)

        message: Message = await self._write(_Do(send))
        self._watchers.wake(saga_id)
        self._watchers.wake(ANY_INSTANCE)
        self._watchers.wake(ANY_MESSAGE)
        return message

    async def messages(self, saga_id: str, after: int = 0) -> list[Message]:
        sql = "SELECT * FROM saga_inbox WHERE saga_id = ? AND id > ? ORDER BY id"
        return self._guarded(
            lambda conn: [Message(*row) for row in conn.execute(sql, (saga_id, after))]
        )

    async def beat(self, worker: WorkerInfo) -> None:
        def beat(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO sagakit_workers VALUES (?, ?, ?, ?, ?, ?, ?)",
                fleet_row(worker),
            )
            conn.execute(
                "DELETE FROM sagakit_workers WHERE seen_at < ?", (worker.seen_at - FORGOTTEN_AFTER,)
            )

        await self._write(_Do(beat))

    async def retire(self, owner: str) -> None:
        def retire(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sagakit_workers WHERE owner = ?", (owner,))

        await self._write(_Do(retire))

    async def workers(self) -> list[WorkerInfo]:
        sql = "SELECT * FROM sagakit_workers WHERE seen_at > ? ORDER BY owner"
        recent = (time.time() - FORGOTTEN_AFTER,)
        return self._guarded(lambda conn: [worker_of(row) for row in conn.execute(sql, recent)])

    def watch(self, saga_id: str) -> AbstractAsyncContextManager[Watch]:
        """Woken at once by changes made through this store; polls for other processes'
        (each ``wait`` returns after :data:`POLL_INTERVAL` at the most). A watch of
        ``ANY_MESSAGE`` looks at the inbox when it polls, and returns only for a new message
        (or its timeout), since its watcher acts on every return."""
        if saga_id == ANY_MESSAGE:
            return self._inbox_watch()
        return self._watchers.watch(saga_id)

    @contextlib.asynccontextmanager
    async def _inbox_watch(self) -> AsyncIterator[Watch]:
        async with self._watchers.watch(ANY_MESSAGE) as watched:
            yield _InboxWatch(watched, self._newest_message)

    def _newest_message(self) -> int:
        sql = "SELECT coalesce(max(id), 0) FROM saga_inbox"
        newest: int = self._guarded(lambda conn: conn.execute(sql).fetchone()[0])
        return newest

    async def close(self) -> None:
        if self._queue:
            self._flush()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- group commit -------------------------------------------------------------------------

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection, translating driver errors at the boundary."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"SQLite saga log {self.path!r} is closed")
        try:
            return fn(conn)
        except sqlite3.Error as error:
            raise StoreError(f"SQLite saga log {self.path!r}: {error}") from error

    async def _write(self, write: _Write) -> Any:
        """Queue a write for the next group commit and wait until it is durable."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._queue.append((write, done))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await done

    def _flush(self) -> None:
        """Commit every queued write in one transaction and settle their futures."""
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            outcomes = self._guarded(lambda conn: _commit(conn, [w for w, _ in batch]))
        except Exception as error:
            outcomes = [(False, error)] * len(batch)
        _sql.settle(batch, outcomes)

    def _connect(self, create: bool) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            found = _schema_version(conn)
            _sql.refuse_newer(MIGRATIONS, found, self.url)
            if found == 0 and not create:  # before WAL mode, which would change the file
                raise StoreError(
                    f"{self.path!r} is not a sagakit saga log (it has no sagakit tables);"
                    " nothing was changed"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sagakit_schema'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT max(version) FROM sagakit_schema").fetchone()
    return int(row[0] or 0)


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the missing migrations in one transaction (a concurrent opener waits)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sagakit_schema (version INTEGER NOT NULL, applied_at "
            "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        record = "INSERT INTO sagakit_schema (version) VALUES (?)"
        for statement, args in _sql.upgrade(MIGRATIONS, _schema_version(conn), record):
            conn.execute(statement, args)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _commit(conn: sqlite3.Connection, writes: list[_Write]) -> list[_sql.Settled]:
    """One transaction, and one fsync, for many writes.

    All the log rows of the batch go in with one ``executemany``; if anything in the batch
    conflicts (rare: two engines on one instance), the batch is redone with each write under
    its own savepoint, so only the conflicting write fails.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes = _together(conn, writes)
        except (_Conflict, sqlite3.IntegrityError):
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = _one_by_one(conn, writes)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _together(conn: sqlite3.Connection, writes: list[_Write]) -> list[_sql.Settled]:
    outcomes: list[_sql.Settled] = []
    log: list[tuple[Any, ...]] = []
    updates: list[tuple[str, float, bool, str]] = []
    for write in writes:
        if isinstance(write, _Append):
            updates.append(write.update)
            log.extend(write.rows)
            outcomes.append((True, None))
        elif isinstance(write, _Do):
            try:
                outcomes.append((True, write.apply(conn)))
            except SagakitError as error:
                raise _Conflict from error
        elif conn.execute(_INSERT_SAGA, write.instance).rowcount:
            log.extend(write.rows)
            outcomes.append((True, True))
        else:
            outcomes.append((True, False))
    if updates and conn.executemany(_UPDATE_SAGA, updates).rowcount != len(updates):
        raise _Conflict
    conn.executemany(_INSERT_LOG, log)
    return outcomes


def _one_by_one(conn: sqlite3.Connection, writes: list[_Write]) -> list[_sql.Settled]:
    outcomes: list[_sql.Settled] = []
    for write in writes:
        conn.execute("SAVEPOINT w")
        try:
            outcomes.append((True, write.apply(conn)))
        except (sqlite3.IntegrityError, SagakitError) as error:
            conn.execute("ROLLBACK TO w")
            outcomes.append((False, error))
        conn.execute("RELEASE w")
    return outcomes


def _first_call(
    conn: sqlite3.Connection, stored: StoredSaga, first_calls: Mapping[str, FirstCall], at: float
) -> StoredSaga:
    """``stored`` with its first call recorded, where :class:`FirstCall` says so."""
    instance = stored.instance
    call = first_calls.get(f"{instance.name}@{instance.version}")
    record = None if call is None else call.record(stored, at)
    if record is None:
        return stored
    conn.executemany(_INSERT_LOG, _sql.log_rows(instance.id, [record]))
    conn.execute("UPDATE sagas SET updated_at = ? WHERE id = ?", (at, instance.id))
    instance = instance._replace(updated_at=at)
    return StoredSaga(instance, [*stored.records, record], stored.last_message)


def _load(conn: sqlite3.Connection, saga_id: str) -> StoredSaga | None:
    row = conn.execute("SELECT * FROM sagas WHERE id = ?", (saga_id,)).fetchone()
    if row is None:
        return None
    log = conn.execute(
        "SELECT seq, type, at, step, attempt, data FROM saga_log WHERE saga_id = ? ORDER BY seq",
        (saga_id,),
    ).fetchall()
    (last_message,) = conn.execute(
        "SELECT coalesce(max(id), 0) FROM saga_inbox WHERE saga_id = ?", (saga_id,)
    ).fetchone()
    return StoredSaga(_sql.instance_of(row), [_sql.record_of(r) for r in log], last_message)


class _InboxWatch:
    """Polls the inbox's newest id: a wait returns once it grew, or at its timeout."""

    __slots__ = ("_newest", "_seen", "_watched")

    def __init__(self, watched: Watch, newest: Callable[[], int]) -> None:
        self._watched = watched
        self._newest = newest
        self._seen = newest()

    async def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            await self._watched.wait(left)
            newest = self._newest()
            if newest > self._seen:
                self._seen = newest
                return
