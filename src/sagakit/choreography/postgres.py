"""A choreographed service's outbox and inbox in its own PostgreSQL database, for many replicas.

::

    db = await PostgresDatabase.open("postgresql://app@db/shop?schema=payments", tables=TABLES)
    payments = Service("payments", db, broker, stream="orders")

    @payments.on("OrderCreated")
    async def charge(event: Event, tx: Transaction) -> None:
        await tx.db.execute("INSERT INTO payments (order_id) VALUES ($1)", event.data["order"])
        tx.emit("PaymentCompleted", {"order": event.data["order"]})

The URL is read as the PostgreSQL saga log reads its own: ``?schema=`` (default ``public``;
created if missing, with the two tables and ``tables``, the service's own, in it), ``?pool=``
(connections, default 10) and ``?timeout=`` (seconds a statement may take, default 10; 0 for
no limit). Errors are :class:`~sagakit.errors.LocalDatabaseError` naming the URL without
its password.

Every transaction has a pool connection of its own, so a service's handlers commit side by
side. ``tx.db`` is that ``asyncpg`` connection, inside the transaction; connections go back
to the pool without a reset, so a handler changes settings with ``SET LOCAL`` only. A
plain (``def``) handler runs on the event loop: asyncpg's calls are coroutines it could not
make anyway, so it is one that only decides and emits; one that waits on I/O is ``async``.

Several replicas may relay one database. A claim is an open transaction that locks its
chains' rows (``FOR UPDATE SKIP LOCKED``): another replica's claim skips those chains, and
what the relay marks commits when the claim ends (see :data:`_CLAIM` for why every row of a
chain, not just its head). Each transaction that writes the outbox
sends one ``NOTIFY`` on a channel named for the schema, delivered at its commit, which
wakes every replica's relay (:meth:`PostgresDatabase.changes`).

Events are stored as ``text``, not ``jsonb``: the relay publishes the very bytes that were
written (``jsonb`` would reorder keys and drop duplicates, and refuse a row that is not
JSON, which a dead letter must be able to show), and nothing queries inside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

try:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy
except ImportError as error:  # a clear hint rather than the bare module name
    raise ImportError(
        "sagakit.choreography.postgres needs asyncpg: pip install 'sagakit[postgres]'"
    ) from error

from sagakit._retry import RECONNECT
from sagakit.bus import Event
from sagakit.bus._broker import check_name
from sagakit.choreography._logging import logger
from sagakit.choreography._outbox import HEADS_WHERE, OutboxDeadLetter, Pending, unreadable
from sagakit.errors import InvalidStoreURLError, LocalDatabaseError, MalformedEventError
from sagakit.store._postgres_url import DRIVER_ERRORS
from sagakit.store._postgres_url import Settings as LogSettings

__all__ = ["PostgresDatabase"]

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
"""A connection of the pool (what ``tx.db`` is) or of its own (the listener's)."""


TABLES = """
CREATE TABLE IF NOT EXISTS sagakit_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream text NOT NULL,
    correlation_id text NOT NULL,
    event text NOT NULL,
    created_at double precision NOT NULL,
    sent_at double precision,
    refusals integer NOT NULL DEFAULT 0,
    last_error text,
    retry_at double precision,
    dead_at double precision
);
CREATE INDEX IF NOT EXISTS sagakit_outbox_chains
    ON sagakit_outbox (correlation_id, id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS sagakit_outbox_waiting ON sagakit_outbox (id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS sagakit_inbox (
    consumer text NOT NULL,
    event_id text NOT NULL,
    processed_at double precision NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
"""
"""``sagakit_outbox_chains`` finds a chain's rows and whether a row heads its chain;
``sagakit_outbox_waiting`` walks the unsent rows in id order without the sent ones, which
stay until pruned."""

_MIGRATION_LOCK = 0x5A6A0B01
"""First key of the advisory lock that serialises openers creating one schema's tables
(the second is the schema's hash): ``CREATE TABLE IF NOT EXISTS`` is not safe side by side."""

_OWN_RELATIONS = (
    "sagakit_outbox",
    "sagakit_outbox_chains",
    "sagakit_outbox_waiting",
    "sagakit_inbox",
)
_MISSING = "SELECT " + " OR ".join(f"to_regclass('{name}') IS NULL" for name in _OWN_RELATIONS)
"""Whether any of the tables and indexes above is missing from the schema."""

_FIRST_DELIVERY = """INSERT INTO sagakit_inbox (consumer, event_id, processed_at)
VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"""
_ENQUEUE = """INSERT INTO sagakit_outbox (stream, correlation_id, event, created_at)
VALUES ($1, $2, $3, $4)"""
_ENQUEUE_NOTIFYING = f"""
WITH added AS ({_ENQUEUE} RETURNING id)
SELECT pg_notify($5, '') FROM added"""
"""A transaction's first outbox row, with the one notice its commit will deliver."""

_CLAIM = f"""
WITH heads AS MATERIALIZED (
    SELECT o.correlation_id FROM sagakit_outbox o WHERE {HEADS_WHERE.format(now="$1")}
    ORDER BY o.id LIMIT $2
    FOR UPDATE OF o SKIP LOCKED
), taken AS MATERIALIZED (
    SELECT id, stream, correlation_id, event, refusals, dead_at FROM sagakit_outbox
    WHERE sent_at IS NULL AND correlation_id = ANY(ARRAY(SELECT correlation_id FROM heads))
    FOR UPDATE SKIP LOCKED
)
SELECT t.id, t.stream, t.correlation_id, t.event, t.refusals, t.dead_at IS NOT NULL
FROM taken t
WHERE NOT EXISTS (
    SELECT 1 FROM sagakit_outbox r
    WHERE r.correlation_id = t.correlation_id AND r.sent_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM taken k WHERE k.id = r.id)
)
ORDER BY t.id"""
"""In one round trip: lock up to ``$2`` chains' heads that no other claim holds, then every
unsent row of those chains, and return the chains of which every row was locked.

Locking the head alone is not enough. Ids are given out as rows are written, not as they
commit, so a row written before a chain's head can commit after a claim took that head:
it becomes the chain's head, unlocked, and a second claim would take the chain too (and
publish its rows again). Holding every row, the first claim keeps the whole chain; the
second finds some of it held and leaves it. ``ARRAY(...)`` takes every head before any
row is read, so each row returned belongs to a chain whose head this claim holds."""

_SENT = "UPDATE sagakit_outbox SET sent_at = $1 WHERE id = ANY($2::bigint[])"
_REFUSED = """UPDATE sagakit_outbox SET refusals = refusals + 1, last_error = $2,
    retry_at = $3, dead_at = $4 WHERE id = $1"""
_UNREADABLE = "UPDATE sagakit_outbox SET dead_at = $2, last_error = $3 WHERE id = $1"
_BACKLOG = "SELECT count(*) FROM sagakit_outbox WHERE sent_at IS NULL AND dead_at IS NULL"
_DEAD_LETTERS = """SELECT id, stream, correlation_id, event, refusals, coalesce(last_error, ''),
    created_at, dead_at FROM sagakit_outbox
WHERE sent_at IS NULL AND dead_at IS NOT NULL ORDER BY id LIMIT $1"""
_RESEND = """
WITH resent AS (
    UPDATE sagakit_outbox SET dead_at = NULL, retry_at = NULL, refusals = 0
    WHERE id = ANY($1::bigint[]) AND sent_at IS NULL AND dead_at IS NOT NULL
    RETURNING id
)
SELECT count(pg_notify($2, '')) FROM resent"""
"""Re-sent rows wake the relays like new ones (one notice, however many rows)."""
_PRUNE = "DELETE FROM sagakit_outbox WHERE sent_at IS NOT NULL AND sent_at < $1"


@dataclass(frozen=True, slots=True)
class Settings:
    """What a service database's ``postgresql://`` URL says: the driver's part and ours."""

    dsn: str
    schema: str
    pool: int
    timeout: float | None
    display: str
    """The URL with its password replaced, safe to print."""
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Settings:
        """The URL read by the saga log's rules (one set of them for every PostgreSQL URL
        sagakit takes), its mistakes told as this database's."""
        try:
            log = LogSettings.parse(url)
        except InvalidStoreURLError as error:
            raise LocalDatabaseError(str(error)) from None
        return cls(log.dsn, log.schema, log.pool, log.timeout, log.display, log.password)

    @property
    def server_settings(self) -> dict[str, str]:
        """Unqualified names (ours and the service's own tables) resolve in the schema."""
        return {"search_path": f'"{self.schema}"'}

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this schema's outbox: channels are database-wide, and
        their names at most 63 bytes, so a long schema name is hashed."""
        name = f"sagakit_outbox_{self.schema}"
        if len(name) <= 63:
            return name
        return f"sagakit_outbox_{hashlib.sha256(self.schema.encode()).hexdigest()[:32]}"

    def error(self, error: BaseException) -> LocalDatabaseError:
        """A driver error as a :class:`LocalDatabaseError` naming the database, not its
        password."""
        text = str(error) or type(error).__name__
        if isinstance(error, TimeoutError) and self.timeout:
            text = f"no answer within {self.timeout:g} s (?timeout=)"
        if self.password:
            text = text.replace(self.password, "***")
        return LocalDatabaseError(f"service database {self.display}: {text}")

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Translate driver errors at the boundary, keeping the original as the cause."""
        try:
            yield
        except DRIVER_ERRORS as error:
            raise self.error(error) from error


def _count(status: str) -> int:
    """The row count of a command status (``UPDATE 3``, ``INSERT 0 1``)."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresTransaction:
    """An open transaction on one pool connection: the service's work, inbox and outbox."""

    def __init__(self, connection: Connection, settings: Settings, notify: bool = True) -> None:
        self._connection = connection
        self._settings = settings
        self._notified = not notify
        """True once this transaction's notice is sent (or when none is to be)."""

    @property
    def connection(self) -> Connection:
        return self._connection

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        """A second delivery running at the same moment waits here for the first's commit,
        then finds its row: exactly one of them handles the event."""
        with self._settings.translated():
            status = await self._connection.execute(
                _FIRST_DELIVERY, consumer, event_id, time.time()
            )
        return _count(status) == 1

    async def enqueue(self, stream: str, event: Event) -> None:
        check_name("stream", stream)
        row = (stream, event.correlation_id, event.to_json().decode(), time.time())
        with self._settings.translated():
            if self._notified:
                await self._connection.execute(_ENQUEUE, *row)
            else:
                await self._connection.execute(_ENQUEUE_NOTIFYING, *row, self._settings.channel)
        self._notified = True

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """On the event loop: a plain handler cannot use asyncpg, so it only computes."""
        return function(*args)


class PostgresClaim:
    """Chains whose rows one open transaction holds; marks run in it and commit at its end."""

    def __init__(self, connection: Connection, rows: list[Pending], settings: Settings) -> None:
        self.rows = rows
        self.wrote = False
        """Something was marked: the claim commits (else it rolls back, sparing a WAL flush)."""
        self._connection = connection
        self._settings = settings

    async def sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._settings.translated():
            await self._connection.execute(_SENT, time.time(), list(ids))
        self.wrote = True

    async def refused(self, row_id: int, error: str, retry_at: float | None) -> None:
        dead_at = time.time() if retry_at is None else None
        with self._settings.translated():
            await self._connection.execute(_REFUSED, row_id, error, retry_at, dead_at)
        self.wrote = True


class PostgresDatabase:
    """A :class:`~sagakit.choreography.LocalDatabase` in one schema of a PostgreSQL database.

    Open it with :meth:`open`; ``url`` is the URL with its password replaced, safe to print.
    """

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool[asyncpg.Record], *, notify: bool = True
    ) -> None:
        self.url = settings.display
        self.notify = notify
        self._settings = settings
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, tables: str = "", notify: bool = True) -> PostgresDatabase:
        """Connect, and create the schema, the outbox and inbox tables and ``tables`` (the
        service's own, as SQL statements run in the schema) where they are missing.

        ``notify=False`` sends no ``NOTIFY`` at commit. PostgreSQL commits notifying
        transactions one at a time (a database-wide lock held through the commit's WAL
        flush), which caps a database's handler transactions a second once the clients are
        fast enough to reach it (``python -m benchmarks.local_database`` measures both). A
        :class:`~sagakit.choreography.Service` wakes its own relay after each commit anyway,
        so the notice only hastens rows written by a process without a relay of its own,
        which without it wait for a relay's poll.
        """
        settings = Settings.parse(url)
        with settings.translated():
            pool = await asyncpg.create_pool(
                settings.dsn,
                min_size=0,  # a floor to keep would log a traceback a second during an outage
                max_size=settings.pool,
                server_settings=settings.server_settings,
                reset=_keep_session,
                command_timeout=settings.timeout,
                timeout=settings.timeout or 60.0,
            )
        db = cls(settings, pool, notify=notify)
        try:
            await db._create_tables(tables)
        except BaseException:
            with contextlib.suppress(LocalDatabaseError):  # the first failure is the news
                await db.close()
            raise
        return db

    async def _create_tables(self, tables: str) -> None:
        """Ours only where missing: ``CREATE INDEX IF NOT EXISTS`` locks the table before it
        looks, so a replica starting would wait for every open handler transaction, and
        every new one wait behind it."""
        schema = self._settings.schema
        async with self._connection() as conn:
            with self._settings.translated():
                missing = bool(await conn.fetchval(_MISSING))
                if missing:
                    with contextlib.suppress(asyncpg.UniqueViolationError):  # made meanwhile
                        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                if not missing and not tables:
                    return
                async with conn.transaction():
                    lock = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
                    await conn.execute(lock, _MIGRATION_LOCK, schema)
                    await conn.execute((TABLES if missing else "") + tables)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        """A pool connection, translated errors only on taking and giving it back: what the
        caller's block raises passes as it is."""
        with self._settings.translated():
            conn = await self._pool.acquire()
        try:
            yield conn
        finally:
            with contextlib.suppress(*DRIVER_ERRORS):  # a broken one is closed by the pool
                await self._pool.release(conn)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self._connection() as conn:
            transaction = conn.transaction()
            with self._settings.translated():
                await transaction.start()
            try:
                yield PostgresTransaction(conn, self._settings, self.notify)
            except BaseException:
                await _roll_back(transaction)
                raise
            with self._settings.translated():
                await transaction.commit()

    def transaction(self) -> AbstractAsyncContextManager[PostgresTransaction]:
        return self._transaction()

    @asynccontextmanager
    async def _claim(self, limit: int) -> AsyncIterator[PostgresClaim]:
        async with self._connection() as conn:
            transaction = conn.transaction()
            try:
                with self._settings.translated():
                    await transaction.start()
                    found = await conn.fetch(_CLAIM, time.time(), limit)
                    rows, dead = _read(found)
                    await conn.executemany(_UNREADABLE, dead)
                claim = PostgresClaim(conn, rows, self._settings)
                claim.wrote = bool(dead)
                yield claim
            except BaseException:
                await _roll_back(transaction)
                raise
            with self._settings.translated():
                await (transaction.commit() if claim.wrote else transaction.rollback())

    def claim(self, limit: int) -> AbstractAsyncContextManager[PostgresClaim]:
        return self._claim(limit)

    @asynccontextmanager
    async def _changes(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        listener = _Listener(self._settings, wake)
        await listener.start()
        try:
            yield
        finally:
            await listener.stop()

    def changes(self, wake: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """Listen (on a connection of its own) for any connection's commits to the outbox;
        returns once the server listens, so what commits after is heard. A listener that is
        lost wakes the relay (a notice may have gone unheard) and listens again."""
        return self._changes(wake)

    async def backlog(self) -> int:
        with self._settings.translated():
            count = await self._pool.fetchval(_BACKLOG)
        return int(count)

    async def dead_letters(self, limit: int = 100) -> list[OutboxDeadLetter]:
        with self._settings.translated():
            rows = await self._pool.fetch(_DEAD_LETTERS, limit)
        return [OutboxDeadLetter(*row) for row in rows]

    async def resend(self, ids: Sequence[int]) -> int:
        with self._settings.translated():
            count = await self._pool.fetchval(_RESEND, list(ids), self._settings.channel)
        return int(count)

    async def prune(self, sent_before: float) -> int:
        with self._settings.translated():
            return _count(await self._pool.execute(_PRUNE, sent_before))

    async def close(self) -> None:
        with self._settings.translated():
            await self._pool.close()


Found = Sequence[asyncpg.Record]
"""Outbox rows as claimed: id, stream, correlation id, event text, refusals, dead."""


def _read(found: Found) -> tuple[list[Pending], list[tuple[int, float, str]]]:
    """The rows whose event parses, but none behind an unreadable or dead row of its chain
    (they wait for it), and ``(id, dead_at, reason)`` of the unreadable rows found."""
    rows: list[Pending] = []
    dead: list[tuple[int, float, str]] = []
    blocked: set[str] = set()
    for row_id, stream, correlation_id, data, refusals, is_dead in found:
        if correlation_id in blocked:
            continue
        if is_dead:
            blocked.add(correlation_id)
            continue
        try:
            rows.append(Pending(row_id, stream, Event.parse(data), refusals))
        except MalformedEventError as error:
            dead.append((row_id, time.time(), unreadable(row_id, error)))
            blocked.add(correlation_id)
    return rows, dead


async def _roll_back(transaction: Any) -> None:
    """Roll back on the way out of an error: the caller's error is the news, and a dead
    connection's transaction has ended anyway."""
    with contextlib.suppress(*DRIVER_ERRORS):
        await transaction.rollback()


async def _keep_session(conn: Connection) -> None:
    """Pool reset that sends nothing: asyncpg still rolls back an unfinished transaction,
    and sagakit leaves no session state behind. Saves a round trip per transaction."""


class _Listener:
    """One connection outside the pool, listening on the schema's channel, calling ``wake``
    on every notice; when it is lost it wakes once and listens again, with back-off."""

    def __init__(self, settings: Settings, wake: Callable[[], None]) -> None:
        self._settings = settings
        self._wake = wake
        self._connection: asyncpg.Connection[asyncpg.Record] | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Listen now if the server answers; otherwise keep trying in the background (the
        relay's poll finds the outbox meanwhile, and says the database is gone)."""
        try:
            await self._listen()
        except DRIVER_ERRORS as error:
            logger.debug("outbox listener of %s: %s", self._settings.display, error)
            self._start_relistening()

    async def _listen(self) -> None:
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            self._settings.dsn,
            server_settings={**self._settings.server_settings, "application_name": "sagakit"},
            timeout=self._settings.timeout or 60.0,
        )
        try:
            await conn.add_listener(self._settings.channel, self._heard)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._lost)
        self._connection = conn

    def _heard(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake()

    def _lost(self, conn: object) -> None:
        if self._stopping:
            return
        self._connection = None
        self._wake()  # a notice may have been lost with the connection: look now
        self._start_relistening()

    def _start_relistening(self) -> None:
        if self._relisten is None or self._relisten.done():
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        tries = 0
        while not self._stopping:
            tries += 1
            await asyncio.sleep(RECONNECT.delay(tries))  # a back-off, not a wait for an event
            try:
                await self._listen()
            except DRIVER_ERRORS as error:
                logger.debug("outbox listener of %s: %s", self._settings.display, error)
                continue
            self._wake()  # whatever committed while nobody listened
            return

    async def stop(self) -> None:
        self._stopping = True
        if self._relisten is not None:
            self._relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relisten
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await conn.close(timeout=5.0)
