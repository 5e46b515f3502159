"""Telling an outage of the database from a failure for good, and riding out the former.

No server here: driver errors are made by hand, the pool is a fake, and the relay's database
(a SQLite file) and the worker's store (in memory) are told to fail. The real restarts are in
tests/integration/test_database_restart.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import asyncpg
import asyncpg.exceptions as pg
import pytest
from choreography_fakes import eventually, running

from sagakit import (
    Client,
    CompensationContext,
    MemoryStore,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    Worker,
)
from sagakit._retry import Outage
from sagakit.bus import Event, MemoryBroker
from sagakit.choreography import Pending, Relay, SqliteDatabase
from sagakit.errors import (
    InvalidStoreURLError,
    LocalDatabaseError,
    StoreError,
    StoreUnavailableError,
)
from sagakit.log import Record
from sagakit.store import StoreWrapper
from sagakit.store._postgres_errors import diagnose
from sagakit.store._postgres_pool import RetryingPool
from sagakit.store._postgres_url import DEFAULT_TIMEOUT, Settings

URL = "postgresql://app:s3cret@db.example:5432/orders?schema=sagas"

TRANSIENT: list[BaseException] = [
    pg.AdminShutdownError("terminating connection due to administrator command"),
    pg.CrashShutdownError("terminating connection because of crash of another server process"),
    pg.CannotConnectNowError("the database system is starting up"),
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pg.ConnectionFailureError("server closed the connection unexpectedly"),
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    TimeoutError(),
    OSError("Multiple exceptions: [Errno 111] Connect call failed, [Errno 99] ..."),
    FileNotFoundError(2, "No such file or directory"),
    socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    asyncpg.InterfaceError("connection is closed"),
    pg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
]
FOR_GOOD: list[BaseException] = [
    pg.InvalidPasswordError('password authentication failed for user "app"'),
    pg.InvalidAuthorizationSpecificationError('role "app" does not exist'),
    pg.InvalidCatalogNameError('database "orders" does not exist'),
    pg.UndefinedTableError('relation "sagas" does not exist'),
    pg.UniqueViolationError("duplicate key value violates unique constraint"),
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ssl.SSLCertVerificationError("certificate verify failed"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ValueError("not a driver error at all"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=repr)
def test_a_lost_or_refused_connection_is_transient(error: BaseException) -> None:
    assert diagnose(error).transient


@pytest.mark.parametrize("error", FOR_GOOD, ids=repr)
def test_credentials_a_missing_database_and_statements_are_not(error: BaseException) -> None:
    assert not diagnose(error).transient


def test_an_outage_is_told_with_the_database_and_what_happened() -> None:
    settings = Settings.parse(URL)
    error = settings.error(pg.InternalClientError("cannot switch to state 12; protocol failed"))

    assert isinstance(error, StoreUnavailableError)
    assert str(error) == (
        "PostgreSQL saga log postgresql://app:***@db.example:5432/orders?schema=sagas: the "
        "connection broke in the middle of a call (cannot switch to state 12; protocol failed)"
    )
    timed_out = settings.error(TimeoutError())
    assert isinstance(timed_out, StoreUnavailableError)
    assert str(timed_out).endswith(f": no answer within {DEFAULT_TIMEOUT:g} s (?timeout=)")


def test_a_failure_for_good_is_a_plain_store_error_without_the_password() -> None:
    settings = Settings.parse(URL)
    error = settings.error(pg.InvalidPasswordError('password "s3cret" refused for user "app"'))

    assert type(error) is StoreError
    assert "s3cret" not in str(error)
    assert "the server refused the credentials" in str(error)


def test_the_statement_timeout_is_read_from_the_url_and_not_passed_on() -> None:
    assert Settings.parse(URL).timeout == DEFAULT_TIMEOUT
    settings = Settings.parse(URL + "&timeout=2.5&sslmode=disable")
    assert settings.timeout == 2.5
    assert settings.dsn == "postgresql://app:s3cret@db.example:5432/orders?sslmode=disable"
    unlimited = Settings.parse(URL + "&timeout=0")
    assert unlimited.timeout is None and unlimited.connect_timeout == 60.0


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan", ""])
def test_a_bad_timeout_is_refused_naming_the_parameter(value: str) -> None:
    with pytest.raises(InvalidStoreURLError, match=r"\?timeout=SECONDS"):
        Settings.parse(URL + f"&timeout={value}")


# --------------------------------------------------------------------------- the pool


class _Connection:
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool

    async def fetchval(self, sql: str, *args: Any) -> str:
        self.pool.calls += 1
        if self.pool.failures:
            raise self.pool.failures.pop(0)
        return sql


class _Pool:
    """Stands in for asyncpg's pool: each call fails with the next of ``failures``."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Connection]:
        yield _Connection(self)


def _retrying(fake: _Pool) -> RetryingPool:
    return RetryingPool(cast("asyncpg.Pool[asyncpg.Record]", fake))


async def test_a_call_on_a_connection_a_restart_closed_is_made_once_more() -> None:
    fake = _Pool(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    assert await _retrying(fake).fetchval("SELECT 1") == "SELECT 1"
    assert fake.calls == 2


async def test_only_once_more_and_never_for_a_refusal_or_a_timeout() -> None:
    dead = pg.ConnectionDoesNotExistError("connection was closed in the middle")
    twice = _Pool(dead, dead)
    with pytest.raises(pg.ConnectionDoesNotExistError):
        await _retrying(twice).fetchval("SELECT 1")
    assert twice.calls == 2
    for failure in (ConnectionRefusedError(111, "refused"), TimeoutError()):
        fake = _Pool(failure)
        with pytest.raises(type(failure)):
            await _retrying(fake).fetchval("SELECT 1")
        assert fake.calls == 1


async def test_a_call_that_must_not_run_twice_is_repeated_only_if_never_sent() -> None:
    maybe_sent = _Pool(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    with pytest.raises(pg.ConnectionDoesNotExistError):
        await _retrying(maybe_sent).once.fetchval("INSERT ...")
    assert maybe_sent.calls == 1
    unsent = _Pool(asyncpg.InterfaceError("connection is closed"))
    assert await _retrying(unsent).once.fetchval("INSERT ...") == "INSERT ..."


# --------------------------------------------------------------------------- waiting


def test_an_outage_is_said_once_when_lost_and_once_when_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.outage")
    outage = Outage(logging.getLogger("test.outage"), "worker w")
    error = StoreUnavailableError("PostgreSQL saga log postgresql://h/db: the connection was lost")
    delays = [outage.failed(error) for _ in range(5)]
    outage.back()
    assert outage.back() is None  # not lost any more: nothing to say

    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert said[0] == (logging.WARNING, f"worker w: lost the database: {error}; retrying")
    assert said[1][0] == logging.INFO and said[1][1].startswith("worker w: database back after")
    assert len(said) == 2
    assert all(d is not None and 0 < d <= 7.5 for d in delays)


def test_an_outage_past_its_deadline_tells_the_caller_to_give_up() -> None:
    outage = Outage(logging.getLogger("test.outage"), "worker w", give_up_after=0)
    assert outage.failed(StoreUnavailableError("gone")) is None


class _FailingDatabase(SqliteDatabase):
    """A service's database whose outbox cannot be read while ``down``."""

    down = True
    tries = 0

    async def _chains(self, limit: int) -> list[Pending]:
        self.tries += 1
        if self.down:
            raise LocalDatabaseError("cannot read the outbox of service.db: disk I/O error")
        return await super()._chains(limit)


async def test_the_relay_says_once_that_it_lost_its_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sagakit")
    db = _FailingDatabase(tmp_path / "service.db")
    broker = MemoryBroker()
    relay = Relay(db, broker, name="orders relay", poll=0.01, retry=Retry(None, 0.01, jitter=0))
    async with db.transaction() as tx:
        await tx.enqueue("s", Event.new("OrderCreated", {}, source="t", correlation_id="o-1"))

    async with running(relay.run):
        await eventually(lambda: db.tries >= 4, "a few failed passes")
        db.down = False
        await eventually(lambda: relay.published == 1, "the event, once the database is back")
    await db.close()
    await broker.close()

    said = [r.getMessage() for r in caplog.records if r.name.startswith("sagakit")]
    assert sum("orders relay: lost the database" in line for line in said) == 1
    assert sum("orders relay: database back after" in line for line in said) == 1
    assert not any("wait in the outbox" in line for line in said)


# --------------------------------------------------------------------------- the worker


class _Away(StoreWrapper):
    """A store whose writes and hand-backs fail while ``down``, as a restarting server's do."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("PostgreSQL saga log memory: the connection was lost")

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        self._check()
        await super().append(saga_id, records, status)

    async def release(self, owner: str, saga_id: str, due_at: float | None) -> None:
        self._check()
        await super().release(owner, saga_id, due_at)


def _gated_saga(calls: list[str], gate: asyncio.Event) -> Saga:
    saga = Saga("away", 1)

    async def undo(ctx: CompensationContext) -> None:
        return None

    async def first(ctx: StepContext) -> int:
        calls.append(ctx.idempotency_key)
        await gate.wait()
        return 1

    async def second(ctx: StepContext) -> int:
        calls.append(ctx.idempotency_key)
        return 2

    return saga.add(first, compensate=undo).add(second, kind="pivot")


async def test_a_worker_waits_out_the_database_and_hands_back_what_it_could_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sagakit")
    calls: list[str] = []
    gate = asyncio.Event()
    store = _Away(MemoryStore())
    saga = _gated_saga(calls, gate)
    client = Client(store)
    saga_id = await client.start(saga, {})
    stop = asyncio.Event()
    worker = Worker(store, [saga], poll=0.01)
    running_worker = asyncio.ensure_future(worker.run(stop))

    await eventually(lambda: len(calls) == 1, "the first step running")
    store.down = True  # its outcome cannot be recorded, nor the saga handed back
    gate.set()

    def said(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    await eventually(lambda: bool(said("lost the database")), "the worker seeing the outage")
    store.down = False
    result = await client.result(saga_id, timeout=10)
    stop.set()
    await running_worker  # it never stopped

    assert result.status is SagaStatus.COMPLETED
    assert calls == [f"{saga_id}:first:action"] * 2 + [f"{saga_id}:second:action"]
    assert len(said("lost the database")) == 1
    [back] = said("database back after")
    assert "handed back 1 saga(s)" in back.getMessage()


async def test_a_worker_gives_up_once_the_database_was_away_longer_than_it_allows() -> None:
    store = _Away(MemoryStore())
    open_gate = asyncio.Event()
    open_gate.set()  # the claim records the first call (claims still work): it returns
    saga = _gated_saga([], open_gate)
    await Client(store).start(saga, {})
    store.down = True
    worker = Worker(store, [saga], poll=0.01, give_up_after=0.05)
    with pytest.raises(StoreUnavailableError, match="the connection was lost"):
        await worker.run(asyncio.Event())
