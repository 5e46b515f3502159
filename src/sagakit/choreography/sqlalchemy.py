"""A choreographed service's outbox and inbox through SQLAlchemy, in its models' transaction.

A service that keeps its data with SQLAlchemy's ORM wants a handler's ORM changes, the
inbox row of the event it handles and the events it emits to commit as one. So the handler's
``tx.db`` is a SQLAlchemy session, and the inbox and outbox rows are written through that
same session, on its connection, in its transaction::

    engine = create_engine("postgresql+psycopg://app@db/orders")
    orders = Service("orders", SqlAlchemyDatabase(engine), broker)

    @orders.on("PaymentCompleted")
    def ship(event: Event, tx: Transaction) -> None:
        tx.db.add(Shipment(order_id=event.data["order_id"]))
        tx.emit("OrderShipped", {"order_id": event.data["order_id"]})

Two classes, named after SQLAlchemy's own pair (``Session`` and ``AsyncSession``,
``create_engine`` and ``create_async_engine``), because which one a service uses follows
from the engine it already has, and the handler's ``tx.db`` is that engine's kind of session:

- :class:`SqlAlchemyDatabase` over an :class:`~sqlalchemy.engine.Engine`: ``tx.db`` is a
  :class:`~sqlalchemy.orm.Session`. A sync driver's calls block on the server, so plain
  handlers run in a thread, and so does the adapter's own SQL: the event loop never waits
  on the network.
- :class:`AsyncSqlAlchemyDatabase` over an :class:`~sqlalchemy.ext.asyncio.AsyncEngine`:
  ``tx.db`` is an :class:`~sqlalchemy.ext.asyncio.AsyncSession`, for ``async def``
  handlers. A plain handler runs inside ``AsyncSession.run_sync``, so lazy loads and
  ``tx.db.sync_session`` work in it without blocking the loop.

Each transaction takes a connection of its own from the engine's pool, so a service's
deliveries are handled side by side where the database allows (PostgreSQL, MariaDB).
SQLite writes one transaction at a time: they queue on an :class:`asyncio.Lock` rather than
in SQLite's busy wait, and each begins ``IMMEDIATE``, as :class:`SqliteDatabase` does.

The tables are SQLAlchemy Core tables on their own :data:`metadata`: list it beside your
models' in Alembic (``target_metadata = [Base.metadata, metadata]``), or call
:meth:`SqlAlchemyDatabase.create_tables`. Put them in another schema with the engine's
``schema_translate_map`` or ``search_path``, like your own tables.

Relays. On PostgreSQL and MariaDB (10.6 or later; MySQL 8) a claim locks its chains' heads,
then every unsent row of those chains, with ``FOR UPDATE SKIP LOCKED`` in a
``READ COMMITTED`` transaction of its own, so replicas of a service relay one database
together, each skipping the chains another holds. InnoDB locks whatever a locking
statement reads, so there the heads are found without locking and then locked by primary
key (:func:`~sagakit.choreography._sqlalchemy_schema.by_key`); and under MariaDB's default
``REPEATABLE READ`` a claim that read to the end of the outbox would hold a gap lock there,
making every handler's outbox insert wait for the broker. SQLite has no row locks: as with
:class:`SqliteDatabase`, one relay per file; its claim holds nothing while the broker is
called and writes what became of the rows when it ends.

:meth:`changes`: on PostgreSQL through asyncpg a relay ``LISTEN``\\s, and every transaction
that writes outbox rows notifies at commit, so another process's events leave at once.
Elsewhere it does nothing and the relay polls (``Relay(poll=...)``; a service wakes its own
relay after each commit anyway).

Errors of SQLAlchemy and the driver become :class:`~sagakit.errors.LocalDatabaseError`
naming the engine's URL without its password; a handler's own errors pass unchanged.
"""

from __future__ import annotations

try:
    import sqlalchemy
except ImportError as error:  # pragma: no cover - the extra is installed in development
    raise ImportError(
        "sagakit.choreography.sqlalchemy needs SQLAlchemy: pip install 'sagakit[sqlalchemy]'"
    ) from error

import asyncio
import contextlib
import contextvars
import functools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from sagakit.bus import Event
from sagakit.bus._broker import check_name
from sagakit.choreography import _sqlalchemy_schema as sql
from sagakit.choreography._logging import logger
from sagakit.choreography._outbox import OutboxDeadLetter, Pending
from sagakit.choreography._sqlalchemy_schema import inbox_table, metadata, outbox_table
from sagakit.errors import InvalidArgumentError, LocalDatabaseError

__all__ = [
    "AsyncSqlAlchemyDatabase",
    "SqlAlchemyDatabase",
    "inbox_table",
    "metadata",
    "outbox_table",
]

T = TypeVar("T")

CLAIM_ISOLATION = "READ COMMITTED"
"""A claim's isolation on PostgreSQL and MariaDB: row locks only (no gap locks), and a
locked row re-read as committed, whatever the engine's own default."""


class _Errors:
    """Turns SQLAlchemy's and the driver's errors into :class:`LocalDatabaseError`.

    The message is the driver's own (not SQLAlchemy's, which repeats the statement and its
    parameters: events), with the URL shown without its password, and the password taken
    out of the text should a driver ever echo it.
    """

    def __init__(self, url: sqlalchemy.URL) -> None:
        self.url = url.render_as_string(hide_password=True)
        self._password = url.password

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if isinstance(error, SQLAlchemyError | OSError):
            cause = getattr(error, "orig", None) or error
            text = f"{type(cause).__name__}: {cause}".strip()
            if self._password:
                text = text.replace(self._password, "***")
            raise LocalDatabaseError(f"service database {self.url}: {text}") from error

    def closed(self) -> LocalDatabaseError:
        return LocalDatabaseError(f"service database {self.url} is closed")


def _quietly(close: Callable[[], None]) -> None:
    """Close, rolling back what did not commit; a failure here must not hide why we got here
    (a connection that died is discarded by the pool either way)."""
    with contextlib.suppress(SQLAlchemyError, OSError):
        close()


class _Work(Protocol):
    """One open transaction, as the shared code drives it: ``run(f, ...)`` calls
    ``f(connection, ...)`` on the transaction's sync :class:`~sqlalchemy.engine.Connection`
    the engine's way (in a thread, or through the async engine's greenlet bridge)."""

    async def run(self, function: Callable[..., T], *args: Any) -> T: ...


class _SessionWork(_Work, Protocol):
    """A service's transaction: also its session, and a way to call a plain handler."""

    @property
    def handle(self) -> Any: ...

    async def call(self, function: Callable[..., Any], *args: Any) -> Any: ...


class _Claim:
    """Chains read at the claim's start; what became of them is written when it ends."""

    def __init__(self, rows: list[Pending], dead: list[tuple[int, str]]) -> None:
        self.rows = rows
        self.dead = dead
        self.sent_ids: list[int] = []
        self.refusals: list[sql.Refusal] = []

    async def sent(self, ids: Sequence[int]) -> None:
        self.sent_ids.extend(ids)

    async def refused(self, row_id: int, error: str, retry_at: float | None) -> None:
        dead_at = time.time() if retry_at is None else None
        self.refusals.append((row_id, error, retry_at, dead_at))

    @property
    def changed(self) -> bool:
        return bool(self.sent_ids or self.refusals or self.dead)


class _Transaction:
    """A service's transaction: its session, and the inbox and outbox written through it."""

    def __init__(self, work: _SessionWork, kind: str, errors: _Errors, channel: str | None) -> None:
        self._work = work
        self._kind = kind
        self._errors = errors
        self._channel = channel

    @property
    def connection(self) -> Any:
        """The session (``Session`` or ``AsyncSession``) the handler's ORM work goes through."""
        return self._work.handle

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        sql.check_key("consumer", consumer)
        sql.check_key("event id", event_id)
        with self._errors:
            return await self._work.run(sql.record_delivery, self._kind, consumer, event_id)

    async def enqueue(self, stream: str, event: Event) -> None:
        check_name("stream", stream)
        sql.check_key("correlation id", event.correlation_id)
        with self._errors:
            await self._work.run(sql.add_event, stream, event, self._channel)
        self._channel = None  # one notice a transaction

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await self._work.call(function, *args)


class _SqlAlchemyBase:
    """What both adapters share: the protocol over :mod:`._sqlalchemy_schema`'s SQL.

    A subclass opens transactions its engine's way (:meth:`_session_scope`,
    :meth:`_core_scope`) and may listen for commits (:meth:`_listen`).
    """

    def __init__(self, url: sqlalchemy.URL, dialect: str, concurrency: int, notify: bool) -> None:
        kind = sql.family(dialect)
        if kind is None:
            raise InvalidArgumentError(
                f"a service database on {dialect!r} is not supported: use PostgreSQL, "
                "MariaDB, MySQL or SQLite"
            )
        if concurrency < 1:
            raise InvalidArgumentError("concurrency must be at least 1")
        self._kind = kind
        self._errors = _Errors(url)
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._serial = asyncio.Lock()
        self._closed = False
        self._notify = notify and kind == "postgresql"
        self._channel: str | None = None
        """PostgreSQL's channel for this outbox, asked of the server once."""

    # -- what a subclass provides -------------------------------------------------------------

    def _session_scope(self) -> AbstractAsyncContextManager[_SessionWork]:
        raise NotImplementedError

    def _core_scope(self, isolation: str | None) -> AbstractAsyncContextManager[_Work]:
        raise NotImplementedError

    @asynccontextmanager
    async def _listen(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        yield

    async def _shut(self) -> None:
        return None

    # -- the LocalDatabase protocol -----------------------------------------------------------

    @asynccontextmanager
    async def _slot(self, writes: bool = False) -> AsyncIterator[None]:
        """Room for one more open transaction; SQLite's writes also wait for each other."""
        if self._closed:
            raise self._errors.closed()
        serial = self._serial if writes and self._kind == "sqlite" else contextlib.nullcontext()
        async with serial, self._slots:
            if self._closed:
                raise self._errors.closed()
            yield

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Transaction]:
        async with self._slot(writes=True), self._session_scope() as work:
            with self._errors:
                if self._kind == "sqlite":
                    await work.run(sql.begin_immediate)
                if self._notify and self._channel is None:
                    self._channel = await work.run(sql.channel)
            yield _Transaction(work, self._kind, self._errors, self._channel)

    def transaction(self) -> AbstractAsyncContextManager[_Transaction]:
        """A transaction in a new session; commit on success, roll back on any error."""
        return self._transaction()

    def claim(self, limit: int) -> AbstractAsyncContextManager[_Claim]:
        if self._kind == "sqlite":
            return self._unlocked_claim(limit)
        return self._locked_claim(limit)

    @asynccontextmanager
    async def _locked_claim(self, limit: int) -> AsyncIterator[_Claim]:
        """Chains locked with ``FOR UPDATE SKIP LOCKED`` until the claim's transaction ends."""
        async with self._slot(), self._core_scope(CLAIM_ISOLATION) as work:
            with self._errors:
                found = await work.run(sql.claimable, self._kind, limit)
            claim = _Claim(*sql.read(found))
            yield claim
            if claim.changed:
                with self._errors:
                    await work.run(
                        sql.settle, self._kind, claim.sent_ids, claim.refusals, claim.dead
                    )

    @asynccontextmanager
    async def _unlocked_claim(self, limit: int) -> AsyncIterator[_Claim]:
        """SQLite: read with no lock held while the broker is called; one relay per file."""
        found = await self._read(sql.claimable, self._kind, limit)
        claim = _Claim(*sql.read(found))
        yield claim
        if claim.changed:
            await self._write(sql.settle, self._kind, claim.sent_ids, claim.refusals, claim.dead)

    def changes(self, wake: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """Call ``wake`` after other connections' outbox commits where the database can tell
        (PostgreSQL through asyncpg); elsewhere nothing: the relay polls."""
        return self._listen(wake)

    async def backlog(self) -> int:
        return await self._read(sql.backlog)

    async def dead_letters(self, limit: int = 100) -> list[OutboxDeadLetter]:
        return await self._read(sql.dead_letters, limit)

    async def resend(self, ids: Sequence[int]) -> int:
        return await self._write(sql.resend, self._kind, list(ids)) if ids else 0

    async def prune(self, sent_before: float) -> int:
        return await self._write(sql.prune, sent_before)

    async def create_tables(self) -> None:
        """Create the outbox and inbox tables and their indexes where they do not exist (a
        service with migrations makes them there instead, from :data:`metadata`)."""
        await self._write(metadata.create_all)

    async def close(self) -> None:
        """Wait for the open transactions to end, then refuse new ones. The engine is the
        caller's: dispose of it yourself when nothing else uses it."""
        if self._closed:
            return
        self._closed = True
        for _ in range(self._concurrency):
            await self._slots.acquire()
        await self._shut()

    # -- short transactions of the adapter's own ----------------------------------------------

    async def _read(self, function: Callable[..., T], *args: Any) -> T:
        async with self._slot(), self._core_scope(None) as work:
            with self._errors:
                return await work.run(function, *args)

    async def _write(self, function: Callable[..., T], *args: Any) -> T:
        async with self._slot(writes=True), self._core_scope(None) as work:
            with self._errors:
                if self._kind == "sqlite":
                    await work.run(sql.begin_immediate)
                return await work.run(function, *args)


# -- over a sync Engine -------------------------------------------------------------------------


class _Threads:
    """The sync adapter's threads: as many as it lets transactions be open at once, so a
    transaction holding a lock always has a thread to finish in (the default executor is
    shared, and as small as 6 threads on two cores)."""

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="sagakit-sqlalchemy")

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a thread. Cancelled, it waits for the thread to return
        first (a thread cannot be stopped), so that no one touches the session while the
        thread still does."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, function, *args)
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait({future})
            raise

    def shut(self) -> None:
        self._executor.shutdown(wait=True)


class _ThreadedSession:
    """A sync session's transaction, driven from threads."""

    def __init__(self, session: Session, engine: Engine, threads: _Threads) -> None:
        self._session = session
        self._engine = engine
        self._threads = threads

    @property
    def handle(self) -> Session:
        return self._session

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await self._threads.run(self._on_connection, function, args)

    def _on_connection(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        return function(self._session.connection(bind_arguments={"bind": self._engine}), *args)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await self._threads.run(function, *args)


class _ThreadedConnection:
    """A sync Core connection's transaction (the adapter's own), driven from threads."""

    def __init__(self, connection: Connection, threads: _Threads) -> None:
        self._connection = connection
        self._threads = threads

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await self._threads.run(function, self._connection, *args)


class SqlAlchemyDatabase(_SqlAlchemyBase):
    """A service's outbox and inbox in the database of a sync SQLAlchemy ``engine``.

    Handlers get a :class:`~sqlalchemy.orm.Session` from ``sessions`` (your own
    ``sessionmaker``, bound to ``engine``, to keep its options; a plain one by default). Up
    to ``concurrency`` transactions are open at once, each with a connection of the
    engine's pool and a thread of the adapter's own: keep it within the pool's size plus
    its overflow (5 + 10 by default). ``notify``: see :class:`AsyncSqlAlchemyDatabase`.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        sessions: sessionmaker[Session] | None = None,
        concurrency: int = 10,
        notify: bool = True,
    ) -> None:
        if isinstance(engine, AsyncEngine):
            raise InvalidArgumentError("an AsyncEngine needs AsyncSqlAlchemyDatabase")
        _check_bound(sessions, engine)
        super().__init__(engine.url, engine.dialect.name, concurrency, notify)
        self.engine = engine
        self._sessions = sessions or sessionmaker(engine)
        self._threads = _Threads(concurrency)

    @asynccontextmanager
    async def _session_scope(self) -> AsyncIterator[_SessionWork]:
        session = self._sessions()
        try:
            yield _ThreadedSession(session, self.engine, self._threads)
            with self._errors:
                await self._threads.run(session.commit)
        finally:
            await self._threads.run(_quietly, session.close)

    @asynccontextmanager
    async def _core_scope(self, isolation: str | None) -> AsyncIterator[_Work]:
        with self._errors:
            connection = await self._threads.run(self._begin, isolation)
        try:
            yield _ThreadedConnection(connection, self._threads)
            with self._errors:
                await self._threads.run(connection.commit)
        finally:
            await self._threads.run(_quietly, connection.close)

    def _begin(self, isolation: str | None) -> Connection:
        connection = self.engine.connect()
        try:
            if isolation is not None:
                connection.execution_options(isolation_level=isolation)
            connection.begin()
        except BaseException:
            _quietly(connection.close)
            raise
        return connection

    async def _shut(self) -> None:
        await asyncio.to_thread(self._threads.shut)


# -- over an AsyncEngine ------------------------------------------------------------------------


def _on_connection(session: Session, bind: Engine, function: Callable[..., T], /, *args: Any) -> T:
    return function(session.connection(bind_arguments={"bind": bind}), *args)


def _without_session(session: Session, function: Callable[..., T], /, *args: Any) -> T:
    return function(*args)


class _BridgedSession:
    """An async session's transaction; the shared SQL runs through ``run_sync``."""

    def __init__(self, session: AsyncSession, engine: AsyncEngine) -> None:
        self._session = session
        self._bind = engine.sync_engine

    @property
    def handle(self) -> AsyncSession:
        return self._session

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await self._session.run_sync(_on_connection, self._bind, function, *args)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await self._session.run_sync(_without_session, function, *args)


class _BridgedConnection:
    """An async Core connection's transaction (the adapter's own)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await self._connection.run_sync(function, *args)


class AsyncSqlAlchemyDatabase(_SqlAlchemyBase):
    """A service's outbox and inbox in the database of an async SQLAlchemy ``engine``.

    Handlers get an :class:`~sqlalchemy.ext.asyncio.AsyncSession` from ``sessions`` (your
    own ``async_sessionmaker``, bound to ``engine``; a plain one by default). Up to
    ``concurrency`` transactions are open at once, each with a connection of the engine's
    pool: keep it within the pool's size plus its overflow (5 + 10 by default).

    ``notify`` (PostgreSQL): a transaction that writes the outbox sends one ``NOTIFY``,
    which wakes the relays listening at once, in other processes too. PostgreSQL commits
    notifying transactions one at a time, so a service whose own relay is the only one
    (it wakes it itself after each commit) may turn it off for throughput.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        concurrency: int = 10,
        notify: bool = True,
    ) -> None:
        if not isinstance(engine, AsyncEngine):
            raise InvalidArgumentError("a sync Engine needs SqlAlchemyDatabase")
        _check_bound(sessions, engine)
        super().__init__(engine.url, engine.dialect.name, concurrency, notify)
        self.engine = engine
        self._sessions = sessions or async_sessionmaker(engine)

    @asynccontextmanager
    async def _session_scope(self) -> AsyncIterator[_SessionWork]:
        session = self._sessions()
        try:
            yield _BridgedSession(session, self.engine)
            with self._errors:
                await session.commit()
        finally:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await session.close()

    @asynccontextmanager
    async def _core_scope(self, isolation: str | None) -> AsyncIterator[_Work]:
        with self._errors:
            connection = await self._begin(isolation)
        try:
            yield _BridgedConnection(connection)
            with self._errors:
                await connection.commit()
        finally:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await connection.close()

    async def _begin(self, isolation: str | None) -> AsyncConnection:
        connection = await self.engine.connect()
        try:
            if isolation is not None:
                await connection.execution_options(isolation_level=isolation)
            await connection.begin()
        except BaseException:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await connection.close()
            raise
        return connection

    @asynccontextmanager
    async def _listen(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        """PostgreSQL through asyncpg: ``LISTEN`` on a connection held meanwhile. Should it
        fail (the server is down as the relay starts), the relay polls instead."""
        if self._kind != "postgresql" or self.engine.dialect.driver != "asyncpg":
            yield
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                await self._listening(stack, lambda *_: wake())
            except Exception as error:  # only promptness depends on it
                logger.warning(
                    "service database %s: cannot listen for outbox commits (%s); the relay "
                    "polls instead",
                    *(self._errors.url, error),
                )
            yield

    async def _listening(self, stack: contextlib.AsyncExitStack, heard: Any) -> None:
        connection = await stack.enter_async_context(self.engine.connect())
        channel = await connection.run_sync(sql.channel)
        await connection.rollback()  # asyncpg listens outside a transaction
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.add_listener(channel, heard)
        stack.push_async_callback(_unlisten, driver, channel, heard)


async def _unlisten(driver: Any, channel: str, heard: Any) -> None:
    """Stop listening before the connection goes back to the pool (it may be dead)."""
    with contextlib.suppress(Exception):
        await driver.remove_listener(channel, heard)


def _check_bound(sessions: Any, engine: Engine | AsyncEngine) -> None:
    """A session factory bound to another engine would write the handler's changes and the
    outbox in two transactions: refused."""
    bind = None if sessions is None else sessions.kw.get("bind")
    if bind is not None and bind is not engine:
        raise InvalidArgumentError(
            "sessions is bound to another engine than the database's: a handler's changes "
            "and its outbox rows would not commit together"
        )
