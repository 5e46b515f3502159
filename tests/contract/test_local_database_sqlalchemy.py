"""The local database contract through SQLAlchemy: sync and async, on PostgreSQL, MariaDB
and SQLite, plus what only this adapter promises (exact keys, redacted URLs, sessions bound
to the right engine, a cancelled handler's thread waited for).

Each test gets a database of its own (a schema, a MariaDB database, a file), dropped after
it; every factory call opens another engine on it, as another process of the service would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from sagakit.bus import Event
from sagakit.choreography import LocalDatabase, OutboxTransaction
from sagakit.choreography.sqlalchemy import AsyncSqlAlchemyDatabase, SqlAlchemyDatabase
from sagakit.errors import InvalidArgumentError, LocalDatabaseError
from sagakit.testing import LocalDatabaseContract, LocalDatabaseFactory
from sqlalchemy_databases import FreshDatabase, run_sql

AnyDatabase = SqlAlchemyDatabase | AsyncSqlAlchemyDatabase

INSERT_OWN = "INSERT INTO contract_own (value) VALUES (:value)"


def engine_of(db: LocalDatabase) -> Engine | AsyncEngine:
    assert isinstance(db, SqlAlchemyDatabase | AsyncSqlAlchemyDatabase)
    return db.engine


class SqlAlchemyContract(LocalDatabaseContract):
    """The contract on one kind of database, through one kind of engine."""

    kind: ClassVar[str]
    asynchronous: ClassVar[bool] = False

    @pytest.fixture
    async def fresh(self, tmp_path: Path) -> AsyncIterator[FreshDatabase]:
        fresh = FreshDatabase(self.kind, tmp_path)
        await fresh.create()
        yield fresh
        await fresh.drop()

    @pytest.fixture
    async def database_factory(self, fresh: FreshDatabase) -> AsyncIterator[LocalDatabaseFactory]:
        made: list[AnyDatabase] = []

        async def make() -> LocalDatabase:
            db = self.open(fresh)
            if not made:
                await db.create_tables()
                await run_sql(db.engine, self.own_table_sql)
            made.append(db)
            return db

        yield make
        for db in made:
            await db.close()

    def open(self, fresh: FreshDatabase) -> AnyDatabase:
        if self.asynchronous:
            return AsyncSqlAlchemyDatabase(fresh.async_engine())
        return SqlAlchemyDatabase(fresh.engine())

    async def insert_own_row(self, tx: OutboxTransaction, value: str) -> None:
        statement = sqlalchemy.text(INSERT_OWN)
        if self.asynchronous:  # an async handler's way
            session: AsyncSession = tx.connection
            await session.execute(statement, {"value": value})
        else:  # a plain handler's way: in the thread the database calls it in
            sync_session: Session = tx.connection
            await tx.call(sync_session.execute, statement, {"value": value})

    async def count_own_rows(self, db: LocalDatabase) -> int:
        [(count,)] = await run_sql(engine_of(db), "SELECT count(*) FROM contract_own")
        return int(count)

    async def overwrite_event(self, db: LocalDatabase, row_id: int, text: str) -> None:
        statement = "UPDATE sagakit_outbox SET event = :text WHERE id = :id"
        await run_sql(engine_of(db), statement, text=text, id=row_id)

    # -- what this adapter adds ---------------------------------------------------------------

    async def test_keys_compare_exactly(self, db: LocalDatabase) -> None:
        """MariaDB's default collation would take ``A1`` for ``a1`` and ``é`` for ``e``."""
        async with db.transaction() as tx:
            for event_id in ("ev-A1", "ev-a1", "ev-é", "ev-e"):
                assert await tx.first_delivery("payments", event_id)
            assert not await tx.first_delivery("payments", "ev-a1")
        for saga in ("Order-1", "order-1"):
            await self.enqueue(db, Event.new("Created", None, source="t", correlation_id=saga))
        async with db.claim(10) as claim:
            assert [row.correlation_id for row in claim.rows] == ["Order-1", "order-1"]

    async def test_a_key_too_long_to_keep_whole_is_refused(self, db: LocalDatabase) -> None:
        with pytest.raises(InvalidArgumentError, match="at most 255"):
            async with db.transaction() as tx:
                await tx.first_delivery("payments", "e" * 256)
        long_saga = Event.new("Created", None, source="t", correlation_id="o" * 256)
        with pytest.raises(InvalidArgumentError, match="at most 255"):
            await self.enqueue(db, long_saga)
        assert await db.backlog() == 0

    async def test_a_closed_database_says_so(self, db: LocalDatabase) -> None:
        await db.close()
        with pytest.raises(LocalDatabaseError, match="is closed"):
            await db.backlog()
        await db.close()  # twice is harmless


class TestSyncPostgres(SqlAlchemyContract):
    pytestmark = pytest.mark.postgres
    kind = "postgres"
    notifies = False  # psycopg's notices would need a thread of their own: the relay polls


class TestAsyncPostgres(SqlAlchemyContract):
    pytestmark = pytest.mark.postgres
    kind = "postgres"
    asynchronous = True  # asyncpg: LISTEN/NOTIFY


class TestSyncMariaDB(SqlAlchemyContract):
    pytestmark = pytest.mark.mariadb
    kind = "mariadb"
    notifies = False


class TestAsyncMariaDB(SqlAlchemyContract):
    pytestmark = pytest.mark.mariadb
    kind = "mariadb"
    asynchronous = True
    notifies = False


class TestSyncSqlite(SqlAlchemyContract):
    kind = "sqlite"
    concurrent_relays = False  # no row locks: one relay per file, as SqliteDatabase
    notifies = False


class TestAsyncSqlite(SqlAlchemyContract):
    kind = "sqlite"
    asynchronous = True
    concurrent_relays = False
    notifies = False


async def test_an_async_engine_runs_a_plain_handler_where_its_session_can_block(
    tmp_path: Path,
) -> None:
    """Inside ``run_sync``, the async session's ``sync_session`` does real I/O from plain
    code (through SQLAlchemy's greenlet bridge), in the transaction."""
    fresh = FreshDatabase("sqlite", tmp_path)
    db = AsyncSqlAlchemyDatabase(fresh.async_engine())
    await db.create_tables()
    await run_sql(db.engine, LocalDatabaseContract.own_table_sql)

    def handler(session: AsyncSession) -> int:
        session.sync_session.execute(sqlalchemy.text(INSERT_OWN), {"value": "from plain code"})
        return len(
            session.sync_session.execute(sqlalchemy.text("SELECT * FROM contract_own")).all()
        )

    async with db.transaction() as tx:
        assert await tx.call(handler, tx.connection) == 1
    assert await run_sql(db.engine, "SELECT value FROM contract_own") == [("from plain code",)]
    await db.close()
    await fresh.drop()


# -- errors never show a password ---------------------------------------------------------------

UNREACHABLE = [
    ("postgresql+psycopg://app:pa55word@127.0.0.1:1/app", False),
    ("postgresql+asyncpg://app:pa55word@127.0.0.1:1/app", True),
    ("mariadb+pymysql://app:pa55word@127.0.0.1:1/app", False),
    ("mariadb+aiomysql://app:pa55word@127.0.0.1:1/app", True),
]
"""Nothing listens on port 1: every driver fails to connect, with the URL in our error."""


@pytest.mark.parametrize(("url", "asynchronous"), UNREACHABLE)
async def test_a_database_that_cannot_be_reached_is_named_without_its_password(
    url: str, asynchronous: bool
) -> None:
    db: AnyDatabase
    if asynchronous:
        db = AsyncSqlAlchemyDatabase(create_async_engine(url))
    else:
        db = SqlAlchemyDatabase(sqlalchemy.create_engine(url))
    with pytest.raises(LocalDatabaseError) as caught:
        async with db.transaction() as tx:
            await tx.first_delivery("payments", "e-1")
    message = str(caught.value)
    assert "pa55word" not in message and "app:***@127.0.0.1:1" in message
    assert isinstance(caught.value.__cause__, sqlalchemy.exc.SQLAlchemyError | OSError)
    await db.close()
    if isinstance(db, AsyncSqlAlchemyDatabase):
        await db.engine.dispose()
    else:
        db.engine.dispose()


@pytest.mark.mariadb
async def test_a_refused_login_is_named_without_its_password(tmp_path: Path) -> None:
    """MariaDB's root has no password here: one given is refused, and not repeated."""
    url = FreshDatabase("mariadb", tmp_path).url().set(password="pa55word", database=None)
    db = SqlAlchemyDatabase(sqlalchemy.create_engine(url))
    with pytest.raises(LocalDatabaseError, match=r"root:\*\*\*@127\.0\.0\.1") as caught:
        await db.backlog()
    assert "pa55word" not in str(caught.value) and "Access denied" in str(caught.value)
    await db.close()
    db.engine.dispose()


# -- engines and sessions ------------------------------------------------------------------------


def test_each_class_takes_its_own_kind_of_engine(tmp_path: Path) -> None:
    sync_engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(InvalidArgumentError, match="AsyncSqlAlchemyDatabase"):
        SqlAlchemyDatabase(async_engine)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs SqlAlchemyDatabase"):
        AsyncSqlAlchemyDatabase(sync_engine)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        SqlAlchemyDatabase(sync_engine, concurrency=0)
    sync_engine.dispose()


def test_sessions_bound_to_another_engine_are_refused(tmp_path: Path) -> None:
    """Two engines are two connections: the handler's rows and the outbox's would commit
    apart, which is what the adapter exists to prevent."""
    ours = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    other = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(InvalidArgumentError, match="another engine"):
        SqlAlchemyDatabase(ours, sessions=sessionmaker(other))
    SqlAlchemyDatabase(ours, sessions=sessionmaker(ours, expire_on_commit=False))
    ours.dispose()
    other.dispose()


async def test_a_cancelled_handler_s_thread_is_waited_for_and_its_work_rolled_back(
    tmp_path: Path,
) -> None:
    """A thread cannot be stopped: the transaction ends only once the handler returned, so
    the session is never rolled back under the handler's feet, and nothing commits."""
    fresh = FreshDatabase("sqlite", tmp_path)
    db = SqlAlchemyDatabase(fresh.engine())
    await db.create_tables()
    await run_sql(db.engine, LocalDatabaseContract.own_table_sql)
    started, release = threading.Event(), threading.Event()

    def handler(session: Session) -> None:
        session.execute(sqlalchemy.text(INSERT_OWN), {"value": "half done"})
        started.set()
        assert release.wait(30.0)

    async def handle() -> None:
        async with db.transaction() as tx:
            assert await tx.first_delivery("payments", "e-1")
            await tx.call(handler, tx.connection)

    task = asyncio.ensure_future(handle())
    assert await asyncio.to_thread(started.wait, 30.0)
    task.cancel()
    await asyncio.sleep(0)  # let the cancellation reach the transaction
    assert not task.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await run_sql(db.engine, "SELECT count(*) FROM contract_own") == [(0,)]
    async with db.transaction() as tx:
        assert await tx.first_delivery("payments", "e-1")  # the inbox row went too
    await db.close()
    await fresh.drop()
