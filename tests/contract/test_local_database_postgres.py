"""The local database contract on PostgreSQL, plus what only a server-backed outbox must do.

Runs against the machine's real server (``SAGAKIT_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``); every test gets a schema of its own, dropped
afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sagakit.bus import Event
from sagakit.choreography import LocalDatabase, OutboxTransaction
from sagakit.choreography.postgres import PostgresDatabase
from sagakit.errors import LocalDatabaseError
from sagakit.testing import LocalDatabaseContract, LocalDatabaseFactory
from servers import POSTGRES, drop_schema

pytestmark = pytest.mark.postgres

WAIT = 15.0


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema name; the schema (if anything made it) is dropped afterwards."""
    name = f"sagakit_outbox_test_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_schema(name)


@pytest.fixture
def url(schema: str) -> str:
    return f"{POSTGRES}?schema={schema}&pool=4"


class TestPostgresDatabase(LocalDatabaseContract):
    @pytest.fixture
    async def database_factory(self, url: str) -> AsyncIterator[LocalDatabaseFactory]:
        made: list[PostgresDatabase] = []

        async def make() -> LocalDatabase:
            made.append(await PostgresDatabase.open(url, tables=self.own_table_sql))
            return made[-1]

        yield make
        for db in made:
            await db.close()

    async def insert_own_row(self, tx: OutboxTransaction, value: str) -> None:
        await tx.connection.execute("INSERT INTO contract_own (value) VALUES ($1)", value)

    async def count_own_rows(self, db: LocalDatabase) -> int:
        async with db.transaction() as tx:
            return int(await tx.connection.fetchval("SELECT count(*) FROM contract_own"))

    async def overwrite_event(self, db: LocalDatabase, row_id: int, text: str) -> None:
        async with db.transaction() as tx:
            sql = "UPDATE sagakit_outbox SET event = $1 WHERE id = $2"
            await tx.connection.execute(sql, text, row_id)


def event(saga: str) -> Event:
    return Event.new("Created", {"saga": saga}, source="test", correlation_id=saga)


async def test_openers_of_a_new_schema_side_by_side_create_it_once(url: str) -> None:
    opened = await asyncio.gather(*(PostgresDatabase.open(url) for _ in range(4)))
    try:
        async with opened[0].transaction() as tx:
            await tx.enqueue("s", event("o-1"))
        assert [await db.backlog() for db in opened] == [1, 1, 1, 1]
    finally:
        await asyncio.gather(*(db.close() for db in opened))


async def test_transactions_of_one_database_run_side_by_side(url: str) -> None:
    """One pool connection each: two transactions are open at once, neither waiting for
    the other to commit (which SQLite's one connection could not do)."""
    db = await PostgresDatabase.open(url)
    both_open = asyncio.Event()
    opened = 0

    async def handle(n: int) -> None:
        nonlocal opened
        async with db.transaction() as tx:
            await tx.enqueue("s", event(f"o-{n}"))
            opened += 1
            if opened == 2:
                both_open.set()
            async with asyncio.timeout(WAIT):
                await both_open.wait()

    try:
        await asyncio.gather(handle(1), handle(2))
        assert await db.backlog() == 2
    finally:
        await db.close()


async def test_the_listener_listens_again_after_its_connection_is_lost(
    url: str, schema: str
) -> None:
    relay_side, service_side = await PostgresDatabase.open(url), await PostgresDatabase.open(url)
    admin = await asyncpg.connect(POSTGRES)
    wakes = 0
    changed = asyncio.Event()

    def wake() -> None:
        nonlocal wakes
        wakes += 1
        changed.set()

    async def woken_at_least(count: int) -> None:
        async with asyncio.timeout(WAIT):
            while wakes < count:
                changed.clear()
                await changed.wait()

    try:
        async with relay_side.changes(wake):
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'sagakit' AND query LIKE $1",
                f'LISTEN "sagakit_outbox_{schema}"%',
            )
            assert killed == 1
            await woken_at_least(2)  # once when lost, once when listening again
            async with service_side.transaction() as tx:
                await tx.enqueue("s", event("o-1"))
            await woken_at_least(3)
    finally:
        await admin.close()
        await relay_side.close()
        await service_side.close()


async def test_a_server_that_is_down_is_an_error_without_the_password() -> None:
    with pytest.raises(LocalDatabaseError, match=r"127\.0\.0\.1:1") as caught:
        await PostgresDatabase.open("postgresql://sagakit:s3cret-pw@127.0.0.1:1/test")
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_bad_urls_and_bad_tables_are_errors(url: str) -> None:
    with pytest.raises(LocalDatabaseError, match="schema name"):
        await PostgresDatabase.open(f"{POSTGRES}?schema=bad-name;drop")
    with pytest.raises(LocalDatabaseError, match="pool size"):
        await PostgresDatabase.open(f"{POSTGRES}?pool=0")
    with pytest.raises(LocalDatabaseError, match="not a PostgreSQL URL"):
        await PostgresDatabase.open("mysql://127.0.0.1/test")
    with pytest.raises(LocalDatabaseError, match="syntax error"):
        await PostgresDatabase.open(url, tables="CREATE TABLE broken (")


async def test_a_handler_s_own_database_error_is_its_own(url: str) -> None:
    """What a handler's own statement raises reaches the service as the driver raised it,
    and the transaction rolls back with the inbox and outbox rows."""
    db = await PostgresDatabase.open(url)

    async def handle() -> None:
        async with db.transaction() as tx:
            await tx.enqueue("s", event("o-1"))
            await tx.connection.execute("INSERT INTO no_such_table VALUES (1)")

    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await handle()
        assert await db.backlog() == 0
    finally:
        await db.close()
