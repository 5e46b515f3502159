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
someone watches: ``sagakit_changes`` for one instance (a status change of an instance
that some store watches, announced by the writing statement; a message and a release
notify in the same transaction; plain ``running`` appends, the hot path, do not, and wake
only this store's own watches) and ``sagakit_work`` for new due work (what idle workers
wait for). Entering a watch returns once the server listens on its channel and the
instance is registered as watched, so whatever commits after that is heard.

A restart of the server leaves the store's connections dead. A call that finds its
connection so is made once more on a new one where that cannot apply twice
(:mod:`~sagakit.store._postgres_pool`); a batch of writes too, where a write that finds its
place already taken is checked against the log: the lost attempt may have committed it.
What still fails is a :class:`~sagakit.errors.StoreUnavailableError` when waiting may mend
it, for callers to wait out (:mod:`~sagakit.store._postgres_errors` decides); every
statement has a client-side time limit (``?timeout=``), so a frozen server fails calls too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import suppress
from typing import Any, NamedTuple, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from sagakit.errors import ConcurrentUpdateError, StoreError, UnknownSagaError
from sagakit.log import Instance, Message, Record, SagaStatus
from sagakit.log._records import TERMINAL
from sagakit.store import _sql
from sagakit.store._base import ANY_INSTANCE, ANY_MESSAGE, FirstCall, StoredSaga, Watch
from sagakit.store._filter import ALL, Count, FieldEquals, InstanceFilter, Position, field_values
from sagakit.store._fleet import FORGOTTEN_AFTER, WorkerInfo, fleet_row, worker_of
from sagakit.store._postgres_pool import RetryingPool, stale
from sagakit.store._postgres_schema import (
    CHANNEL,
    SCHEMA_VERSION,
    WORK_CHANNEL,
    migrate,
    migrate_on,
)
from sagakit.store._postgres_url import DRIVER_ERRORS, Settings
from sagakit.store._postgres_watched import WatchedSagas
from sagakit.store._watchers import Watchers

__all__ = ["MAX_BATCH", "SCHEMA_VERSION", "PostgresStore", "migrate"]


INBOX_CHANNEL = "sagakit_inbox"
"""The NOTIFY channel of messages sent (payload: the instance's id), for workers to tell
the sagas they drive to read their inboxes (a watch of ``ANY_MESSAGE``)."""

MAX_BATCH = 250
"""Writes committed together at most. One statement runs on one server core, so past a
few hundred writes it is faster to let another flusher commit the rest side by side."""

_WRITER_PLANNING = {"plan_cache_mode": "force_custom_plan", "enable_seqscan": "off"}
"""For the writers' and the listener's connections: a batch finds its rows by primary key,
whatever the table's statistics say. On a table never analysed (autovacuum off, or not yet
run) or one that grew since, the planner took a batch of 80 appends for a large share of
a 10,000-row table and scanned it whole, twice (8.7 against 3.6 ms a batch); and a generic
plan made while the table was small kept doing so as it grew (0.3 to 0.8 ms a saga), so
each batch is planned anew, for a few microseconds a saga."""

_UNFINISHED = "('pending', 'running', 'compensating')"
_TERMINAL = f"({', '.join(sorted(repr(status.value) for status in TERMINAL))})"
_NOW = "extract(epoch FROM now())::float8"


_ROW = "id, name, version, status, created_at, updated_at, due_at, lease_owner, lease_expires"
_UPDATED = (
    "greatest(sagas.updated_at, (SELECT l.at FROM saga_log AS l"
    " WHERE l.saga_id = sagas.id ORDER BY l.seq DESC LIMIT 1))"
)
"""When an instance last changed: its newest record's time (the row's ``updated_at`` moves
only with the status); one step down the log's primary key."""
_LISTED_ROW = _ROW.replace("updated_at", f"{_UPDATED} AS updated_at")


class _Postgres:
    """PostgreSQL's spelling of a filter: ``$n`` placeholders, ``jsonb`` paths."""

    updated = _UPDATED

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


_WRITE = f"""
WITH created AS (
    INSERT INTO sagas ({_ROW})
    SELECT * FROM unnest($1::sagas[])
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), known AS (
    SELECT a.id, a.status, a.updated_at AS at, a.status IN {_TERMINAL} AS terminal,
        s.status <> a.status AS changed
    FROM unnest($2::sagas[]) AS a JOIN sagas AS s ON s.id = a.id
), updated AS (
    UPDATE sagas AS s SET status = u.status, updated_at = u.at,
        due_at = CASE WHEN u.terminal THEN NULL ELSE s.due_at END,
        lease_owner = CASE WHEN u.terminal THEN NULL ELSE s.lease_owner END,
        lease_expires = CASE WHEN u.terminal THEN NULL ELSE s.lease_expires END
    FROM known AS u
    WHERE u.changed AND s.id = u.id AND s.status <> u.status
    RETURNING s.id
), logged AS (
    INSERT INTO saga_log (saga_id, seq, type, at, step, attempt, data)
    SELECT * FROM unnest($3::saga_log[]) AS l
    WHERE l.saga_id IN (SELECT id FROM created UNION ALL SELECT id FROM known)
)
SELECT array(SELECT id FROM created), array(SELECT id FROM known),
    sagakit_notify_watched(array(SELECT id FROM updated))
"""
"""Every create and append of a batch in one statement: one round trip, one commit.

Most appends only add log rows: the instance row changes when the status does (and then
``updated_at`` with it), so a step's records in a ``running`` saga rewrite no row and no
index entry. Its ``updated_at`` is read from the log instead (:data:`_UPDATED`). Status
changes are announced for the watched instances only, by ``sagakit_notify_watched``
(:data:`~sagakit.store._postgres_schema.CHANNEL` says why).

A create whose id exists inserts nothing (``ON CONFLICT DO NOTHING``) and an append to an
unknown id finds no row; their log rows are filtered out, and the two id arrays tell
which writes took effect. A taken ``(saga_id, seq)`` fails the whole statement. An
append's row is looked up once (``known``), which says whether its status changes; only
those rows are looked up again, to be updated.
"""

_LOCK_IN_ORDER = "SELECT 1 FROM sagas WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"


def _row_of(table: str) -> str:
    """The columns of :data:`_ROW`, each qualified by ``table``."""
    return ", ".join(f"{table}.{column}" for column in _ROW.split(", "))


_TAKEN_ROW = _row_of("s")
_WITH_LOGS = f"""
SELECT {_TAKEN_ROW},
    (SELECT coalesce(max(m.id), 0) FROM saga_inbox AS m WHERE m.saga_id = s.id),
    l.seq, l.type, l.at, l.step, l.attempt, l.data
FROM {{row}} AS s LEFT JOIN saga_log AS l ON l.saga_id = s.id"""
"""Instances with their logs, a row per record (instance columns repeated), and the id of
each one's newest message: what :class:`StoredSaga` holds, in one query."""
_STARTED = "CASE WHEN s.status = 'pending' THEN 'running' ELSE s.status END"
"""A claimed pending instance is running: its driver's first write would say so, and the
claim rewrites the row anyway, so that write then changes no row."""
_FREE = f"(lease_owner IS NULL OR lease_owner = $1 OR lease_expires <= {_NOW})"
_KNOWN = "($4::text[] IS NULL OR (name || '@' || version) = ANY ($4::text[]))"
"""Only the saga keys (``name@version``) a claimer can drive, if it names them: a filter on
the walk of the due index, which costs a row only where other applications' sagas are due."""


def _claiming(picks: str) -> str:
    """A claim of the rows ``picks`` (the statement's first queries, locking the rows they
    pick, the last named ``picked``) select by ``id`` and ``rank``, earliest first:
    leased, with their logs (in :data:`_WITH_LOGS`'s columns, then the rank), and with a
    fresh one's first call recorded where the arrays ``$5``-``$8`` (a
    :class:`~sagakit.store.FirstCall` each, by saga key) say so, at ``$9``.

    The recorded call is not in the statement's own view of ``saga_log``: each row says
    whether it was recorded, and the caller adds it. A position taken meanwhile (by the
    lapsed holder of a lease, writing late) fails the statement, and the claim is made
    again without recording calls (:meth:`PostgresStore.claim`): a plain insert costs the
    server about half what ``ON CONFLICT DO NOTHING`` does, for a race this rare."""
    return f"""
WITH {picks}
), taken AS (
    UPDATE sagas AS s SET lease_owner = $1, lease_expires = {_NOW} + $3, due_at = NULL,
        status = {_STARTED}
    FROM picked WHERE s.id = picked.id
    RETURNING {_TAKEN_ROW}, picked.rank,
        (SELECT coalesce(max(m.id), 0) FROM saga_inbox AS m WHERE m.saga_id = s.id)
            AS last_message,
        (SELECT max(l.seq) FROM saga_log AS l WHERE l.saga_id = s.id) AS newest
), logged AS (
    SELECT t.*, l.seq, l.type, l.at, l.step, l.attempt, l.data
    FROM taken AS t LEFT JOIN saga_log AS l ON l.saga_id = t.id
), called AS (
    INSERT INTO saga_log (saga_id, seq, type, at, step, attempt, data)
    SELECT g.id, 1, 'step_started', $9, c.step, 1, c.data
    FROM logged AS g JOIN unnest($5::text[], $6::text[], $7::text[], $8::text[])
        AS c (key, started, step, data) ON c.key = g.name || '@' || g.version
    WHERE g.newest = 0 AND g.last_message = 0 AND starts_with(g.data, c.started)
    RETURNING saga_id
)
SELECT {_row_of("g")}, g.last_message, g.seq, g.type, g.at, g.step, g.attempt, g.data,
    g.id IN (SELECT saga_id FROM called)
FROM logged AS g ORDER BY g.rank, g.id, g.seq
"""


_CLAIM_ALL = _claiming(f"""picked AS (
    SELECT id, coalesce(due_at, lease_expires, created_at) AS rank FROM sagas
    WHERE status IN {_UNFINISHED} AND {_FREE} AND {_KNOWN}
    ORDER BY rank, id LIMIT $2
    FOR UPDATE SKIP LOCKED""")
"""Everything unfinished nobody holds (``resume``): rare, so a scan is fine."""


def _come(column: str, limit: str, besides: str = "") -> str:
    """Rows whose ``column`` time has come, locked, up to ``limit``: a walk of that
    column's partial index in order (a plain ``ORDER BY coalesce(...)`` sorted the whole
    backlog at every claim: 9.6 ms with 5,000 sagas waiting), with bitmap scans off: on a
    table not yet analysed the planner read all 10,000 due entries and sorted them instead
    (7.6 ms against 2.9 ms for 50 rows)."""
    return f"""
    SELECT id, {column} AS rank FROM sagas
    WHERE {column} IS NOT NULL AND {column} <= {_NOW}
      AND status IN {_UNFINISHED} AND {_FREE} AND {_KNOWN}{besides}
    ORDER BY {column} LIMIT {limit}
    FOR UPDATE SKIP LOCKED"""


_CLAIM_DUE = _claiming(f"""lapsed AS ({_come("lease_expires", "$2")}
), due AS ({
    _come(
        "due_at",
        "$2 - (SELECT count(*) FROM lapsed)",
        " AND id NOT IN (SELECT id FROM lapsed)",
    )
}
), picked AS (
    SELECT * FROM lapsed UNION ALL SELECT * FROM due""")
"""What has come due, in one statement (one round trip, one commit): the instances whose
driver stopped renewing (it died) first, as they have waited a lease already, and behind a
backlog of due work they would wait until it is gone (14 sagas waited 17 s behind 524
starts); then the due ones, up to the limit. The lapsed are this transaction's own locks,
which ``SKIP LOCKED`` would not skip, so the second walk leaves them out by name."""

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
    + count(pg_notify('{INBOX_CHANNEL}', $1))
FROM message GROUP BY id, at
"""
"""Locks the instance's row before the message takes its id, so one instance's messages
commit in id order and a reader that resumes ``after`` the last id it saw misses none."""

_LOAD = f"{_WITH_LOGS.format(row='sagas')} WHERE s.id = $1 ORDER BY l.seq"
_LOAD_MANY = f"{_WITH_LOGS.format(row='sagas')} WHERE s.id = ANY($1::text[]) ORDER BY s.id, l.seq"
_SET_VERSION = "UPDATE sagas SET version = $2 WHERE id = $1"
_READ_BACK = """SELECT seq, type, at, step, attempt, data FROM saga_log
    WHERE saga_id = $1 AND seq = ANY($2::integer[]) ORDER BY seq"""
_BEAT = """
WITH gone AS (DELETE FROM sagakit_workers WHERE seen_at < $7::float8 - $8::float8)
INSERT INTO sagakit_workers VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (owner) DO UPDATE SET host = $2, pid = $3, sagas = $4, queues = $5, seen_at = $7"""
"""A worker's report, replacing its last; reports older than a day are dropped."""
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
        self._pool = RetryingPool(pool)
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
        self._watched = WatchedSagas(self._pool, settings)
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
                min_size=0,  # a floor to keep would log a traceback a second during an outage
                max_size=max(1, settings.pool - flushers(settings.pool)),
                server_settings=settings.server_settings,
                reset=_keep_session,
                command_timeout=settings.timeout,
                timeout=settings.connect_timeout,
            )
        store = cls(settings, pool)
        try:
            with settings.translated():
                async with pool.acquire() as conn:
                    await migrate_on(conn, settings, create=create)
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

    async def append_migrated(
        self, saga_id: str, records: Sequence[Record], status: SagaStatus, version: int
    ) -> None:
        """In a transaction of its own, not group-committed: an operator's rare action."""
        with self._settings.translated():
            async with self._pool.acquire() as conn, conn.transaction():
                ok, outcome = await _savepointed(conn, _Append(saga_id, records, status))
                if not ok:
                    raise outcome
                await conn.execute(_SET_VERSION, saga_id, version)
        self._watchers.wake(saga_id)

    async def load(self, saga_id: str) -> StoredSaga | None:
        with self._settings.translated():
            rows = await self._pool.fetch(_LOAD, saga_id)
        found = _stored_sagas(rows)
        return found[0] if found else None

    async def load_many(self, saga_ids: Sequence[str]) -> list[StoredSaga]:
        with self._settings.translated():
            rows = await self._pool.fetch(_LOAD_MANY, list(saga_ids))
        by_id = {stored.instance.id: stored for stored in _stored_sagas(rows)}
        return [by_id[saga_id] for saga_id in saga_ids if saga_id in by_id]

    async def instances(
        self, rows: InstanceFilter = ALL, *, after: Position | None = None, limit: int | None = None
    ) -> list[Instance]:
        where, params = _sql.where(rows, after, _DIALECT)
        cap = "" if limit is None else f"LIMIT {limit:d}"
        sql = f"SELECT {_LISTED_ROW} FROM sagas {where} {_sql.NEWEST_FIRST} {cap}"
        with self._settings.translated():
            found = await self._pool.fetch(sql, *params)
        return [_sql.instance_of(tuple(row)) for row in found]

    async def counts(self, rows: InstanceFilter = ALL) -> list[Count]:
        where, params = _sql.where(rows, None, _DIALECT)
        sql = f"SELECT name, version, status, count(*) FROM sagas {where} GROUP BY 1, 2, 3"
        with self._settings.translated():
            found = await self._pool.fetch(sql, *params)
        return sorted(Count(row[0], row[1], SagaStatus(row[2]), row[3]) for row in found)

    async def unfinished(self) -> list[Instance]:
        sql = (
            f"SELECT {_LISTED_ROW} FROM sagas WHERE status IN {_UNFINISHED} ORDER BY created_at, id"
        )
        with self._settings.translated():
            rows = await self._pool.fetch(sql)
        return [_sql.instance_of(tuple(row)) for row in rows]

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
        """One statement locks the rows it picks with ``FOR UPDATE SKIP LOCKED``, leases
        them and reads their logs, so concurrent claimers skip each other's picks instead of
        waiting, and a worker needs no further round trip to start driving."""
        keys = None if known is None else sorted(known)
        sql = _CLAIM_DUE if due_only else _CLAIM_ALL
        at = time.time()
        args = (owner, limit, lease, keys, *_first_call_columns(first_calls), at)
        with self._settings.translated():
            try:
                rows = await self._pool.once.fetch_walking_indexes(sql, *args)
            except asyncpg.UniqueViolationError:  # a first call raced a late write: none
                first_calls = None
                args = (*args[:4], *_first_call_columns(None), at)
                rows = await self._pool.once.fetch_walking_indexes(sql, *args)
        claimed = _grouped(rows)
        if first_calls:
            called = {row[0] for row in rows if row[16]}
            for stored in claimed:
                if stored.instance.id in called:
                    _add_first_call(stored, first_calls, at)
        return [_updated_by_log(stored) for stored in claimed]

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
            row = await self._pool.once.fetchrow(_SEND, saga_id, name, payload)  # not twice
        if row is None:
            raise UnknownSagaError(saga_id)
        self._watchers.wake(saga_id)
        self._watchers.wake(ANY_MESSAGE)
        return Message(row[0], saga_id, name, payload, row[1])

    async def messages(self, saga_id: str, after: int = 0) -> list[Message]:
        sql = (
            "SELECT id, saga_id, name, payload, at FROM saga_inbox"
            " WHERE saga_id = $1 AND id > $2 ORDER BY id"
        )
        with self._settings.translated():
            rows = await self._pool.fetch(sql, saga_id, after)
        return [Message(*row) for row in rows]

    async def beat(self, worker: WorkerInfo) -> None:
        with self._settings.translated():
            await self._pool.execute(_BEAT, *fleet_row(worker), FORGOTTEN_AFTER)

    async def retire(self, owner: str) -> None:
        with self._settings.translated():
            await self._pool.execute("DELETE FROM sagakit_workers WHERE owner = $1", owner)

    async def workers(self) -> list[WorkerInfo]:
        sql = "SELECT * FROM sagakit_workers WHERE seen_at > $1 ORDER BY owner"
        with self._settings.translated():
            rows = await self._pool.fetch(sql, time.time() - FORGOTTEN_AFTER)
        return [worker_of(tuple(row)) for row in rows]

    @contextlib.asynccontextmanager
    async def watch(self, saga_id: str) -> AsyncIterator[Watch]:
        """Woken by a NOTIFY from any process, or at once by this store's own writes; the
        server listens on the watch's channel before the block is entered."""
        channel = _channel(saga_id)
        async with self._watchers.watch(saga_id) as watched:
            await self._listening(channel)
            if channel != CHANNEL:
                yield _Heard(watched, channel, self._listening)
                return
            async with self._watched.registered(saga_id):  # see _postgres_watched
                yield _Heard(watched, channel, self._listening)

    async def close(self) -> None:
        """Commit what is queued, then close the listener and the pool."""
        self._closed = True
        while self._queue or self._flushers:
            if self._queue and not self._flushing:
                self._start_flusher()
            await asyncio.gather(*self._flushers, return_exceptions=True)
        await self._watched.forget_all()
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
        """Commit ``writes``; if the connection died under them (a restart closed it while
        it was idle), once more on a new one, where a write found already done is checked
        against the log (:meth:`_settle_again`)."""
        try:
            return await self._commit_on_writer(writes)
        except Exception as error:
            if not stale(error):
                return self._failed(writes, error)
        try:
            outcomes = await self._commit_on_writer(writes)
        except Exception as error:
            return self._failed(writes, error)
        return [await self._settle_again(w, o) for w, o in zip(writes, outcomes, strict=True)]

    async def _commit_on_writer(self, writes: list[_Write]) -> list[_sql.Settled]:
        """Commit on an idle writer connection (a new one if none is idle); a connection
        that failed or was interrupted mid-statement is closed, not reused."""
        conn = None
        try:
            while self._writers and conn is None:
                conn = self._writers.pop()
                if conn.is_closed():  # the server went away since: one a restart left dead
                    conn = None
            conn = conn or await self._connect()
            outcomes = await commit_batch(conn, writes)
        except BaseException:
            if conn is not None:
                conn.terminate()
            raise
        self._writers.append(conn)
        return outcomes

    def _failed(self, writes: list[_Write], error: Exception) -> list[_sql.Settled]:
        if isinstance(error, DRIVER_ERRORS):
            failure = self._settings.error(error)
            failure.__cause__ = error
            return [(False, failure)] * len(writes)
        return [(False, error)] * len(writes)

    async def _settle_again(self, write: _Write, outcome: _sql.Settled) -> _sql.Settled:
        """The outcome of a write made a second time, after the first attempt's connection
        died: that attempt may have committed before it did. A second create then finds
        the id taken, a second append its positions; if the log holds exactly this write's
        records there, the first attempt landed and the write succeeded. (Another writer
        with the very same records, times to the microsecond included, would have left the
        log as this write would: the same outcome.) Anything else is a real conflict."""
        ok, value = outcome
        redone = (isinstance(write, _Create) and ok and value is False) or (
            not ok and isinstance(value, ConcurrentUpdateError)
        )
        if not redone:
            return outcome
        try:
            with self._settings.translated():
                rows = await self._pool.fetch(_READ_BACK, write.saga_id, _seqs(write))
        except StoreError as error:
            return (False, error)
        wanted = [row[1:] for row in _sql.log_rows(write.saga_id, write.records)]
        if [tuple(row) for row in rows] != wanted:
            return outcome
        return (True, True if isinstance(write, _Create) else None)

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        settings = self._settings
        return await asyncpg.connect(
            settings.dsn,
            server_settings={**settings.server_settings, **_WRITER_PLANNING},
            command_timeout=settings.timeout,
            timeout=settings.connect_timeout,
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
        self._watchers.wake(ANY_MESSAGE if channel == INBOX_CHANNEL else str(payload))

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
    if saga_id == ANY_MESSAGE:
        return INBOX_CHANNEL
    return WORK_CHANNEL if saga_id == ANY_INSTANCE else CHANNEL


def flushers(pool: int) -> int:
    """How many of a store's ``pool`` connections commit batches side by side."""
    return max(1, min(4, pool // 2))


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
    """The arguments of :data:`_WRITE`: the new instances, and each append's id, status and
    time, as ``sagas`` rows (the latter with the other fields empty); the log rows as
    ``saga_log`` rows.

    Whole rows (PostgreSQL's row types of the two tables) rather than a column array
    each: asyncpg asks of every element of an array whether it is itself an array (an
    ``isinstance`` against an abstract base class), once per row instead of once per
    column; that check was 6 % of a worker's time. A column added to either table is
    a field added here."""
    instances: list[Instance] = []
    appends: list[tuple[Any, ...]] = []
    log: list[tuple[Any, ...]] = []
    for write in writes:
        saga_id = write.saga_id
        if isinstance(write, _Create):
            instances.append(write.instance)
        else:
            at = write.records[-1].at
            appends.append((saga_id, None, None, write.status, None, at, None, None, None))
        log += _sql.log_rows(saga_id, write.records)
    return [instances, appends, log]


def _seqs(write: _Write) -> list[int]:
    return [record.seq for record in write.records]


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Pool reset that sends nothing: sagakit leaves no session state behind, and asyncpg
    still rolls back an unfinished transaction. Saves a round trip on every release."""


def _first_call_columns(first_calls: Mapping[str, FirstCall] | None) -> list[list[str]]:
    """The arrays ``$5``-``$8`` of a claim: each first call's saga key and fields."""
    if not first_calls:
        return [[], [], [], []]
    keys = sorted(first_calls)
    calls = [first_calls[key] for key in keys]
    return [keys, *(list(column) for column in zip(*calls, strict=True))]


def _stored_sagas(rows: Sequence[asyncpg.Record]) -> list[StoredSaga]:
    """Rows of :data:`_WITH_LOGS`, grouped by instance (each instance's rows are adjacent)."""
    return [_updated_by_log(stored) for stored in _grouped(rows)]


def _grouped(rows: Sequence[asyncpg.Record]) -> list[StoredSaga]:
    """What :func:`_stored_sagas` returns, but for each row's ``updated_at`` (a claim's
    rows have one more column, and its caller adds the calls it recorded first)."""
    found: list[StoredSaga] = []
    for row in rows:
        values = tuple(row)
        if not found or found[-1].instance.id != values[0]:
            found.append(StoredSaga(_sql.instance_of(values[:9]), [], values[9]))
        if values[10] is not None:  # an instance without records joins one row of NULLs
            found[-1].records.append(_sql.record_of(values[10:16]))
    return found


def _add_first_call(stored: StoredSaga, first_calls: Mapping[str, FirstCall], at: float) -> None:
    """Add to ``stored`` the first call its claim recorded (see :func:`_claiming`)."""
    instance = stored.instance
    stored.records.append(first_calls[f"{instance.name}@{instance.version}"].made_at(at))


def _updated_by_log(stored: StoredSaga) -> StoredSaga:
    """The row's ``updated_at`` moves with the status only (see :data:`_WRITE`)."""
    records, instance = stored.records, stored.instance
    if not records or records[-1].at <= instance.updated_at:
        return stored
    instance = instance._replace(updated_at=records[-1].at)
    return StoredSaga(instance, records, stored.last_message)
