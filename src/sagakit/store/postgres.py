"""The shared saga log: one PostgreSQL database, many workers on many machines.

Writes are group-committed. ``create`` and ``append`` queue their write, and a few flusher
tasks each take everything queued and commit it as **one** SQL statement (data-modifying
CTEs over ``unnest`` arrays): one round trip and one WAL flush for every saga that was ready
at the same moment, with ``synchronous_commit`` left on, so a caller still returns only once
its own records are durable. While one batch is in flight the next one gathers, so the batch
grows with the load and a lone saga waits for nobody. A batch in which a write conflicts
(two engines driving one instance) is redone in one transaction with each write under its
own savepoint, so only the conflicting write fails.

Leases and due times are compared with the *database's* clock, so workers on machines whose
clocks drift apart still agree on when a lease has lapsed.

``watch`` listens on one dedicated connection, opened at the first watch, on the channels
someone watches: ``sagakit_changes`` for one instance (a status change, by a trigger on
``sagas``, a message and a release notify in the same transaction; plain ``running``
appends, the hot path, do not, and wake only this store's own watches) and ``sagakit_work``
for new due work (what idle workers wait for). Entering a watch returns once the server
listens on its channel, so whatever commits after that is heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import suppress
from typing import Any, NamedTuple, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from sagakit.errors import ConcurrentUpdateError, StoreError, UnknownSagaError
from sagakit.log import Instance, Message, Record, SagaStatus
from sagakit.log._records import TERMINAL
from sagakit.store import _sql
from sagakit.store._base import ANY_INSTANCE, StoredSaga, Watch
from sagakit.store._filter import ALL, Count, FieldEquals, InstanceFilter, Position, field_values
from sagakit.store._postgres_url import DRIVER_ERRORS, Settings
from sagakit.store._watchers import Watchers

__all__ = ["MAX_BATCH", "SCHEMA_VERSION", "PostgresStore", "migrate"]

CHANNEL = "sagakit_changes"
"""The NOTIFY channel of instance changes; the payload is the id of the instance."""
WORK_CHANNEL = "sagakit_work"
"""The NOTIFY channel of new due work (payload ``ANY_INSTANCE``). Idle workers listen on this
one alone: on the shared channel every worker process was woken by every status change of
every saga, thousands a second, only to find nobody waiting for it."""


MAX_BATCH = 250
"""Writes committed together at most. One statement runs on one server core, so past a
few hundred writes it is faster to let another flusher commit the rest side by side."""

_UNFINISHED = "('pending', 'running', 'compensating')"
_NOW = "extract(epoch FROM now())::float8"


class _Postgres:
    """PostgreSQL's spelling of a filter: ``$n`` placeholders, ``jsonb`` paths."""

    def mark(self, n: int) -> str:
        return f"${n}"

    def field_text(self, data: str, path: str) -> str:
        value = f"({data}::jsonb #> {path}::text[])"
        return (
            f"CASE jsonb_typeof({value}) WHEN 'string' THEN {value} #>> '{{}}'"
            f" WHEN 'number' THEN {value}::text WHEN 'boolean' THEN {value}::text END"
        )

    def path(self, keys: tuple[str, ...]) -> object:
        return list(keys)

    def field_condition(self, field: FieldEquals, bind: Callable[[object], str]) -> str:
        """An input field is first looked up in the ``saga_log_input`` index (containment
        of each JSON value its text may stand for), then checked exactly."""
        exact = _sql.has_field(field, bind, self)
        if field.step is not None:
            return exact
        contains = " OR ".join(
            f"(data::jsonb -> 'input') @> {bind(json.dumps(nested))}::jsonb"
            for nested in _nested(field.path, field_values(field.text))
        )
        # ARRAY(...) runs the index lookup once, then fetches the few rows by key: the
        # planner cannot estimate containment and otherwise hash-joins the whole table.
        candidates = f"ARRAY(SELECT saga_id FROM saga_log WHERE seq = 0 AND ({contains}))"
        return f"sagas.id = ANY({candidates}) AND {exact}"


def _nested(path: tuple[str, ...], values: list[object]) -> Iterator[object]:
    """``{"a": {"b": value}}`` for path ``a.b``, for each value."""
    for value in values:
        for key in reversed(path):
            value = {key: value}
        yield value


_DIALECT = _Postgres()

MIGRATIONS: _sql.Migrations = (
    (
        """CREATE TABLE sagas (
            id text PRIMARY KEY,
            name text NOT NULL,
            version integer NOT NULL,
            status text NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            due_at double precision,
            lease_owner text,
            lease_expires double precision
        ) WITH (fillfactor = 80)""",
        "CREATE INDEX sagas_by_created ON sagas (created_at, id)",
        "CREATE INDEX sagas_by_status ON sagas (status, created_at, id)",
        f"CREATE INDEX sagas_due ON sagas (due_at) WHERE due_at IS NOT NULL"
        f" AND status IN {_UNFINISHED}",
        "CREATE INDEX sagas_leased ON sagas (lease_expires) WHERE lease_expires IS NOT NULL",
        """CREATE TABLE saga_log (
            saga_id text NOT NULL,
            seq integer NOT NULL,
            type text NOT NULL,
            at double precision NOT NULL,
            step text,
            attempt integer NOT NULL,
            data text,
            PRIMARY KEY (saga_id, seq)
        )""",
        """CREATE FUNCTION sagakit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'saga_log is append-only' USING ERRCODE = 'restrict_violation';
        END $$""",
        """CREATE TRIGGER saga_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
           ON saga_log FOR EACH STATEMENT EXECUTE FUNCTION sagakit_append_only()""",
        """CREATE TABLE saga_inbox (
            id bigserial PRIMARY KEY,
            saga_id text NOT NULL,
            name text NOT NULL,
            payload text NOT NULL,
            at double precision NOT NULL
        )""",
        "CREATE INDEX saga_inbox_by_saga ON saga_inbox (saga_id, id)",
        f"""CREATE FUNCTION sagakit_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', NEW.id);
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER sagas_status_changed AFTER UPDATE OF status ON sagas FOR EACH ROW
           WHEN (OLD.status IS DISTINCT FROM NEW.status)
           EXECUTE FUNCTION sagakit_status_changed()""",
    ),
    (  # new due work wakes idle workers (they watch ANY_INSTANCE) instead of their poll
        f"""CREATE FUNCTION sagakit_work_created() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM created WHERE due_at IS NOT NULL) THEN
                PERFORM pg_notify('{CHANNEL}', '{ANY_INSTANCE}');
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER sagas_work_created AFTER INSERT ON sagas
           REFERENCING NEW TABLE AS created FOR EACH STATEMENT
           EXECUTE FUNCTION sagakit_work_created()""",
    ),
    (  # news of due work on a channel of its own (WORK_CHANNEL)
        f"""CREATE OR REPLACE FUNCTION sagakit_work_created() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM created WHERE due_at IS NOT NULL) THEN
                PERFORM pg_notify('{WORK_CHANNEL}', '{ANY_INSTANCE}');
            END IF;
            RETURN NULL;
        END $$""",
    ),
    (  # `list --input order_id=42` through an index instead of every saga_started record
        "CREATE INDEX saga_log_input ON saga_log"
        " USING gin ((data::jsonb -> 'input') jsonb_path_ops) WHERE seq = 0",
    ),
)
"""Forward-only schema migrations; the schema version is how many have been applied."""

SCHEMA_VERSION = len(MIGRATIONS)

_ROW = "id, name, version, status, created_at, updated_at, due_at, lease_owner, lease_expires"

_WRITE = f"""
WITH created AS (
    INSERT INTO sagas ({_ROW})
    SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[], $5::float8[],
                         $6::float8[], $7::float8[], $8::text[], $9::float8[])
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), updated AS (
    UPDATE sagas AS s SET status = u.status, updated_at = u.at,
        due_at = CASE WHEN u.terminal THEN NULL ELSE s.due_at END,
        lease_owner = CASE WHEN u.terminal THEN NULL ELSE s.lease_owner END,
        lease_expires = CASE WHEN u.terminal THEN NULL ELSE s.lease_expires END
    FROM unnest($10::text[], $11::text[], $12::float8[], $13::boolean[])
        AS u (id, status, at, terminal)
    WHERE s.id = u.id
    RETURNING s.id
), logged AS (
    INSERT INTO saga_log (saga_id, seq, type, at, step, attempt, data)
    SELECT * FROM unnest($14::text[], $15::integer[], $16::text[], $17::float8[],
                         $18::text[], $19::integer[], $20::text[])
        AS l (saga_id, seq, type, at, step, attempt, data)
    WHERE l.saga_id IN (SELECT id FROM created UNION ALL SELECT id FROM updated)
)
SELECT array(SELECT id FROM created), array(SELECT id FROM updated)
"""
"""Every create and append of a batch in one statement: one round trip, one commit.

A create whose id exists inserts nothing (``ON CONFLICT DO NOTHING``) and an append to an
unknown id updates nothing; their log rows are filtered out, and the two id arrays tell
which writes took effect. A taken ``(saga_id, seq)`` fails the whole statement.
"""

_LOCK_IN_ORDER = "SELECT 1 FROM sagas WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"

_TAKEN_ROW = ", ".join(f"s.{column}" for column in _ROW.split(", "))
_WITH_LOGS = f"""
SELECT {_TAKEN_ROW},
    (SELECT coalesce(max(m.id), 0) FROM saga_inbox AS m WHERE m.saga_id = s.id),
    l.seq, l.type, l.at, l.step, l.attempt, l.data
FROM {{row}} AS s LEFT JOIN saga_log AS l ON l.saga_id = s.id"""
"""Instances with their logs, a row per record (instance columns repeated), and the id of
each one's newest message: what :class:`StoredSaga` holds, in one query."""
_FREE = f"(lease_owner IS NULL OR lease_owner = $1 OR lease_expires <= {_NOW})"
_CLAIM_ALL = f"""
WITH picked AS (
    SELECT id, coalesce(due_at, lease_expires, created_at) AS rank FROM sagas
    WHERE status IN {_UNFINISHED} AND {_FREE}
    ORDER BY rank, id LIMIT $2
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE sagas AS s SET lease_owner = $1, lease_expires = {_NOW} + $3, due_at = NULL
    FROM picked WHERE s.id = picked.id
    RETURNING {_TAKEN_ROW}, picked.rank
)
{_WITH_LOGS.format(row="taken")} ORDER BY s.rank, s.id, l.seq
"""
"""Everything unfinished nobody holds (``resume``): rare, so a scan is fine."""


def _claim_by(column: str) -> str:
    """Claim the rows whose ``column`` time has come, walking that column's partial index
    in order (a plain ``ORDER BY coalesce(...)`` sorted the whole backlog at every claim:
    9.6 ms with 5,000 sagas waiting)."""
    return f"""
WITH picked AS (
    SELECT id, {column} AS rank FROM sagas
    WHERE {column} IS NOT NULL AND {column} <= {_NOW}
      AND status IN {_UNFINISHED} AND {_FREE}
    ORDER BY {column} LIMIT $2
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE sagas AS s SET lease_owner = $1, lease_expires = {_NOW} + $3, due_at = NULL
    FROM picked WHERE s.id = picked.id
    RETURNING {_TAKEN_ROW}, picked.rank
)
{_WITH_LOGS.format(row="taken")} ORDER BY s.rank, s.id, l.seq
"""


_CLAIM_DUE = _claim_by("due_at")
_CLAIM_LAPSED = _claim_by("lease_expires")
"""Instances whose driver stopped renewing (it died): due for others."""
_ACQUIRE = f"""UPDATE sagas SET lease_owner = $1, lease_expires = {_NOW} + $3, due_at = NULL
    WHERE id = $2 AND {_FREE} RETURNING id"""
_RENEW = f"""
WITH mine AS (
    SELECT id FROM sagas WHERE id = ANY($2::text[]) AND lease_owner = $1 ORDER BY id FOR UPDATE
)
UPDATE sagas AS s SET lease_expires = {_NOW} + $3 FROM mine WHERE s.id = mine.id RETURNING s.id
"""
_RELEASE = f"""
WITH freed AS (
    UPDATE sagas SET lease_owner = NULL, lease_expires = NULL,
        due_at = CASE WHEN status IN {_UNFINISHED} THEN least($3::float8, due_at) END
    WHERE id = $1 AND lease_owner = $2 RETURNING id
)
SELECT count(pg_notify('{CHANNEL}', id)) FROM freed
"""
"""``least`` skips NULLs: a message sent while the lease was held (it set ``due_at``) keeps
the instance due, even when the holder says it waits for nothing."""
_SEND = f"""
WITH target AS (
    UPDATE sagas SET due_at = CASE WHEN status IN {_UNFINISHED}
        THEN least(coalesce(due_at, {_NOW}), {_NOW}) END
    WHERE id = $1 RETURNING id
), message AS (
    INSERT INTO saga_inbox (saga_id, name, payload, at)
    SELECT id, $2, $3, {_NOW} FROM target RETURNING id, at
)
SELECT id, at, count(pg_notify('{CHANNEL}', $1))
    + count(pg_notify('{WORK_CHANNEL}', '{ANY_INSTANCE}'))
FROM message GROUP BY id, at
"""
"""Locks the instance's row before the message takes its id, so one instance's messages
commit in id order and a reader that resumes ``after`` the last id it saw misses none."""

_LOAD = f"{_WITH_LOGS.format(row='sagas')} WHERE s.id = $1 ORDER BY l.seq"
_Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class _Create(NamedTuple):
    instance: Instance
    records: Sequence[Record]

    @property
    def saga_id(self) -> str:
        return self.instance.id


class _Append(NamedTuple):
    saga_id: str
    records: Sequence[Record]
    status: SagaStatus


_Write = _Create | _Append


class PostgresStore:
    """A :class:`~sagakit.store.Store` in PostgreSQL, shared by many workers.

    Open it with :meth:`open` (or :func:`sagakit.store.open_store`); ``url`` is the URL
    with its password replaced, so printing it is safe.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self.url = settings.display
        self._settings = settings
        self._pool = pool
        self._queue: list[tuple[_Write, asyncio.Future[Any]]] = []
        self._starting = False
        self._flushers: set[asyncio.Task[None]] = set()
        self._flushing = 0
        self._max_flushers = flushers(settings.pool)
        self._writers: list[asyncpg.Connection[asyncpg.Record]] = []
        """Idle connections of the flushers' own, outside the pool: taking one from the pool
        cost ~0.3 ms of CPU here, more than the rest of a commit's client side."""
        self._max_batch = MAX_BATCH
        self._watchers = Watchers()
        self._listener: asyncpg.Connection[asyncpg.Record] | None = None
        self._channels: set[str] = set()
        """The channels ``_listener`` listens on."""
        self._listener_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, create: bool = True) -> PostgresStore:
        """Connect and migrate the schema if it is new or older.

        A schema newer than this code is refused with :class:`SchemaVersionError` before
        anything is written; with ``create=False`` a schema without a saga log is a
        :class:`StoreError` and nothing is created.
        """
        settings = Settings.parse(url)
        with settings.translated():
            pool = await asyncpg.create_pool(
                settings.dsn,
                min_size=1,
                max_size=max(1, settings.pool - flushers(settings.pool)),
                server_settings=settings.server_settings,
                reset=_keep_session,
            )
        store = cls(settings, pool)
        try:
            with settings.translated():
                async with pool.acquire() as conn:
                    await _migrate(conn, settings, create=create)
        except BaseException:
            with suppress(StoreError):  # the reason it failed is what the caller needs
                await store.close()
            raise
        return store

    # -- the Store protocol ------------------------------------------------------------------

    async def create(self, instance: Instance, records: Sequence[Record]) -> bool:
        created: bool = await self._write(_Create(instance, records))
        return created

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        await self._write(_Append(saga_id, records, status))
        if self._watchers:
            self._watchers.wake(saga_id)

    async def load(self, saga_id: str) -> StoredSaga | None:
        with self._settings.translated():
            rows = await self._pool.fetch(_LOAD, saga_id)
        found = _stored_sagas(rows)
        return found[0] if found else None

    async def instances(
        self, rows: InstanceFilter = ALL, *, after: Position | None = None, limit: int | None = None
    ) -> list[Instance]:
        where, params = _sql.where(rows, after, _DIALECT)
        cap = "" if limit is None else f"LIMIT {limit:d}"
        sql = f"SELECT {_ROW} FROM sagas {where} {_sql.NEWEST_FIRST} {cap}"
        with self._settings.translated():
            found = await self._pool.fetch(sql, *params)
        return [_sql.instance_of(tuple(row)) for row in found]

    async def counts(self, rows: InstanceFilter = ALL) -> list[Count]:
        where, params = _sql.where(rows, None, _DIALECT)
        sql = f"SELECT name, status, count(*) FROM sagas {where} GROUP BY name, status"
        with self._settings.translated():
            found = await self._pool.fetch(sql, *params)
        return sorted(Count(row[0], SagaStatus(row[1]), row[2]) for row in found)

    async def unfinished(self) -> list[Instance]:
        sql = f"SELECT {_ROW} FROM sagas WHERE status IN {_UNFINISHED} ORDER BY created_at, id"
        with self._settings.translated():
            rows = await self._pool.fetch(sql)
        return [_sql.instance_of(tuple(row)) for row in rows]

    async def claim(
        self, owner: str, limit: int, lease: float, *, due_only: bool = True
    ) -> list[StoredSaga]:
        """One statement locks the rows it picks with ``FOR UPDATE SKIP LOCKED``, leases
        them and reads their logs, so concurrent claimers skip each other's picks instead of
        waiting, and a worker needs no further round trip to start driving."""
        if not due_only:
            return await self._claim(_CLAIM_ALL, owner, limit, lease)
        taken = await self._claim(_CLAIM_DUE, owner, limit, lease)
        if len(taken) < limit:
            taken += await self._claim(_CLAIM_LAPSED, owner, limit - len(taken), lease)
        return taken

    async def _claim(self, sql: str, owner: str, limit: int, lease: float) -> list[StoredSaga]:
        with self._settings.translated():
            rows = await self._pool.fetch(sql, owner, limit, lease)
        return _stored_sagas(rows)

    async def acquire(self, owner: str, saga_id: str, lease: float) -> bool:
        with self._settings.translated():
            taken = await self._pool.fetchval(_ACQUIRE, owner, saga_id, lease)
        return taken is not None

    async def renew(self, owner: str, saga_ids: Sequence[str], lease: float) -> list[str]:
        """Rows are locked in id order, as the conflict path does, so the two never deadlock."""
        with self._settings.translated():
            rows = await self._pool.fetch(_RENEW, owner, list(saga_ids), lease)
        held = {row[0] for row in rows}
        return [saga_id for saga_id in saga_ids if saga_id in held]

    async def release(self, owner: str, saga_id: str, due_at: float | None) -> None:
        with self._settings.translated():
            await self._pool.fetchval(_RELEASE, saga_id, owner, due_at)
        self._watchers.wake(saga_id)

    async def send(self, saga_id: str, name: str, payload: str) -> Message:
        with self._settings.translated():
            row = await self._pool.fetchrow(_SEND, saga_id, name, payload)
        if row is None:
            raise UnknownSagaError(saga_id)
        self._watchers.wake(saga_id)
        return Message(row[0], saga_id, name, payload, row[1])

    async def messages(self, saga_id: str, after: int = 0) -> list[Message]:
        sql = (
            "SELECT id, saga_id, name, payload, at FROM saga_inbox"
            " WHERE saga_id = $1 AND id > $2 ORDER BY id"
        )
        with self._settings.translated():
            rows = await self._pool.fetch(sql, saga_id, after)
        return [Message(*row) for row in rows]

    @contextlib.asynccontextmanager
    async def watch(self, saga_id: str) -> AsyncIterator[Watch]:
        """Woken by a NOTIFY from any process, or at once by this store's own writes; the
        server listens on the watch's channel before the block is entered."""
        channel = _channel(saga_id)
        async with self._watchers.watch(saga_id) as watched:
            await self._listening(channel)
            yield _Heard(watched, channel, self._listening)

    async def close(self) -> None:
        """Commit what is queued, then close the listener and the pool."""
        self._closed = True
        while self._queue or self._flushers:
            if self._queue and not self._flushing:
                self._start_flusher()
            await asyncio.gather(*self._flushers, return_exceptions=True)
        listener, self._listener = self._listener, None
        writers, self._writers = self._writers, []
        with self._settings.translated():
            for conn in [*writers, *([listener] if listener is not None else [])]:
                await conn.close()
            await self._pool.close()

    # -- group commit -------------------------------------------------------------------------

    async def _write(self, write: _Write) -> Any:
        """Queue a write for the next batch and wait until it is durable."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((write, done))
        if not self._starting and self._flushing < self._max_flushers:
            self._start_flusher()
        return await done

    def _start_flusher(self) -> None:
        """A new flusher first runs on the loop's next turn, so every write queued in this
        turn joins its batch; until then no other flusher is started."""
        self._starting = True
        self._flushing += 1
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush(self) -> None:
        """Commit batches until the queue is empty; what queues meanwhile is the next batch.

        The count drops in the same step that finds the queue empty, so a write queued
        after it always sees room to start a flusher (a done-callback would come too late).
        """
        self._starting = False
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                if self._queue and not self._starting and self._flushing < self._max_flushers:
                    self._start_flusher()  # more than a batch is waiting: commit side by side
                outcomes = await self._commit([write for write, _ in batch])
                _sql.settle(batch, outcomes)
        finally:
            self._flushing -= 1

    async def _commit(self, writes: list[_Write]) -> list[_sql.Settled]:
        """Commit on an idle writer connection (a new one if none is idle); a connection
        that failed or was interrupted mid-statement is closed, not reused."""
        conn = None
        try:
            conn = self._writers.pop() if self._writers else await self._connect()
            outcomes = await commit_batch(conn, writes)
        except BaseException as error:
            if conn is not None:
                conn.terminate()
            if not isinstance(error, Exception):
                raise
            if isinstance(error, DRIVER_ERRORS):
                failure = self._settings.error(error)
                failure.__cause__ = error
                return [(False, failure)] * len(writes)
            return [(False, error)] * len(writes)
        self._writers.append(conn)
        return outcomes

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        return await asyncpg.connect(
            self._settings.dsn, server_settings=self._settings.server_settings
        )

    # -- change notifications -----------------------------------------------------------------

    async def _listening(self, channel: str) -> bool:
        """True if this store listened on ``channel`` already; else start to, and say so
        with False (what happened before is unknown to the caller)."""
        listener = self._listener
        if listener is not None and not listener.is_closed() and channel in self._channels:
            return True
        if self._closed:
            raise StoreError(f"PostgreSQL saga log {self.url} is closed")
        async with self._listener_lock:
            with self._settings.translated():
                if self._listener is None or self._listener.is_closed():
                    conn = await self._connect()
                    conn.add_termination_listener(self._on_lost)
                    self._listener, self._channels = conn, set()
                if channel not in self._channels:
                    await self._listener.add_listener(channel, self._on_notify)
                    self._channels.add(channel)
        return False

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._watchers.wake(str(payload))

    def _on_lost(self, conn: object) -> None:
        """Notifications may have been missed: every waiter looks again."""
        if conn is self._listener:
            self._listener = None
        self._watchers.wake_all()


class _Heard:
    """A watch heard through LISTEN. If the listening connection was lost, ``wait`` listens
    anew and returns at once: a change made while nobody listened cannot be ruled out."""

    __slots__ = ("_channel", "_listening", "_watched")

    def __init__(
        self, watched: Watch, channel: str, listening: Callable[[str], Awaitable[bool]]
    ) -> None:
        self._watched = watched
        self._channel = channel
        self._listening = listening

    async def wait(self, timeout: float) -> None:
        if await self._listening(self._channel):
            await self._watched.wait(timeout)


def _channel(saga_id: str) -> str:
    return WORK_CHANNEL if saga_id == ANY_INSTANCE else CHANNEL


def flushers(pool: int) -> int:
    """How many of a store's ``pool`` connections commit batches side by side."""
    return max(1, min(4, pool // 2))


async def migrate(url: str) -> int:
    """Bring the saga log at ``url`` to this code's schema; returns the schema version.

    For ``sagakit migrate --db URL``: safe to run while workers run and from many
    machines at once (an advisory lock makes concurrent migrators take turns).
    """
    settings = Settings.parse(url)
    with settings.translated():
        conn = await asyncpg.connect(settings.dsn, server_settings=settings.server_settings)
        try:
            return await _migrate(conn, settings, create=True)
        finally:
            await conn.close()


async def commit_batch(conn: _Conn, writes: list[_Write]) -> list[_sql.Settled]:
    """Commit ``writes`` in one statement, or one by one if the batch has a conflict.

    Outcomes line up with ``writes``: ``(True, result)`` or ``(False, error)``.
    """
    if len({write.saga_id for write in writes}) == len(writes):
        try:
            row = await conn.fetchrow(_WRITE, *_arrays(writes))
        except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
            pass  # some write conflicts (or locks crossed): find out which, one by one
        else:
            assert row is not None
            return _outcomes(writes, set(row[0]), set(row[1]))
    return await _one_by_one(conn, writes)


async def _one_by_one(conn: _Conn, writes: list[_Write]) -> list[_sql.Settled]:
    """One transaction, each write under a savepoint; rows locked in id order first."""
    async with conn.transaction():
        await conn.execute(_LOCK_IN_ORDER, sorted({write.saga_id for write in writes}))
        return [await _savepointed(conn, write) for write in writes]


async def _savepointed(conn: _Conn, write: _Write) -> _sql.Settled:
    try:
        async with conn.transaction():
            row = await conn.fetchrow(_WRITE, *_arrays([write]))
    except asyncpg.UniqueViolationError as error:
        conflict = ConcurrentUpdateError(write.saga_id, write.records[0].seq)
        conflict.__cause__ = error
        return (False, conflict)
    assert row is not None
    return _outcomes([write], set(row[0]), set(row[1]))[0]


def _outcomes(writes: list[_Write], created: set[str], updated: set[str]) -> list[_sql.Settled]:
    outcomes: list[_sql.Settled] = []
    for write in writes:
        if isinstance(write, _Create):
            outcomes.append((True, write.saga_id in created))
        elif write.saga_id in updated:
            outcomes.append((True, None))
        else:
            outcomes.append((False, UnknownSagaError(write.saga_id)))
    return outcomes


def _arrays(writes: list[_Write]) -> list[Sequence[Any]]:
    """The 20 column arrays of :data:`_WRITE`: instances, status updates, log rows."""
    instances: list[Instance] = []
    updates: list[tuple[str, str, float, bool]] = []
    log: list[tuple[Any, ...]] = []
    for write in writes:
        saga_id = write.saga_id
        if isinstance(write, _Create):
            instances.append(write.instance)
        else:
            status = write.status
            updates.append((saga_id, status.value, write.records[-1].at, status in TERMINAL))
        log += _sql.log_rows(saga_id, write.records)
    return [*_columns(instances, 9), *_columns(updates, 4), *_columns(log, 7)]


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[Sequence[Any]]:
    return list(zip(*rows, strict=True)) if rows else [()] * width


async def _migrate(conn: _Conn, settings: Settings, *, create: bool) -> int:
    """Apply the missing migrations in one transaction, under an advisory lock so that
    concurrent openers take turns (the later ones find the work done)."""
    found = await _schema_version(conn, settings)
    if found == SCHEMA_VERSION:
        return found  # the common case costs no lock and no transaction
    _sql.refuse_newer(MIGRATIONS, found, settings.display)
    if found == 0 and not create:
        raise StoreError(f"no sagakit saga log in schema {settings.schema!r} of {settings.display}")
    key = f"sagakit.migrate.{settings.schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
    try:
        # Locked first and then a new transaction: its start drops catalog caches that
        # still say "no such schema", so it sees what an opener before us committed.
        async with conn.transaction():
            found = await _schema_version(conn, settings)
            _sql.refuse_newer(MIGRATIONS, found, settings.display)
            await _apply(conn, settings, found)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
    return SCHEMA_VERSION


async def _apply(conn: _Conn, settings: Settings, found: int) -> None:
    schema = settings.quoted_schema
    # Not CREATE SCHEMA IF NOT EXISTS: that needs CREATE on the database even when the
    # schema is there, and a DBA may have made it for a role that lacks that right.
    if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", settings.schema):
        await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {schema}.sagakit_schema (version integer PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(f"SET LOCAL search_path TO {schema}")
    record = f"INSERT INTO {schema}.sagakit_schema (version) VALUES ($1)"
    for statement, args in _sql.upgrade(MIGRATIONS, found, record):
        await conn.execute(statement, *args)


async def _schema_version(conn: _Conn, settings: Settings) -> int:
    table = f"{settings.quoted_schema}.sagakit_schema"
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return 0
    version = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}")
    return int(version)


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool reset that sends nothing: sagakit leaves no session state behind, and asyncpg
    still rolls back an unfinished transaction. Saves a round trip on every release."""


def _stored_sagas(rows: Sequence[asyncpg.Record]) -> list[StoredSaga]:
    """Rows of :data:`_WITH_LOGS`, grouped by instance (each instance's rows are adjacent)."""
    found: list[StoredSaga] = []
    for row in rows:
        values = tuple(row)
        if not found or found[-1].instance.id != values[0]:
            found.append(StoredSaga(_sql.instance_of(values[:9]), [], values[9]))
        if values[10] is not None:  # an instance without records joins one row of NULLs
            found[-1].records.append(_sql.record_of(values[10:]))
    return found
