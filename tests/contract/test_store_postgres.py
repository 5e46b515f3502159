"""The store contract against PostgreSQL, plus what only a shared server-backed log must do.

Runs against the machine's real server (``SAGAKIT_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``); a server that is down fails these tests
rather than skipping them. Every test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sagakit import SagaStatus, SchemaVersionError, StoreError, open_store
from sagakit.errors import ConcurrentUpdateError, UnknownSagaError
from sagakit.log import RecordType
from sagakit.store import FirstCall, Store
from sagakit.store._base import ANY_INSTANCE
from sagakit.store._postgres_schema import CHANNEL, WORK_CHANNEL
from sagakit.store.postgres import (
    SCHEMA_VERSION,
    PostgresStore,
    _Append,
    _Create,
    commit_batch,
    flushers,
    migrate,
)
from sagakit.testing import SchedulingContract, StoreContract, instance, started, step_record

pytestmark = pytest.mark.postgres

SERVER = os.environ.get("SAGAKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema name; the schema (if anything made it) is dropped afterwards."""
    name = f"sagakit_test_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def url(schema: str) -> str:
    return f"{SERVER}?schema={schema}"


@pytest.fixture
async def admin(schema: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A plain connection to the test schema, to look at and tamper with the tables."""
    conn = await asyncpg.connect(SERVER, server_settings={"search_path": f'"{schema}"'})
    yield conn
    await conn.close()


class TestPostgresStore(StoreContract, SchedulingContract):
    @pytest.fixture
    async def store(self, url: str) -> AsyncIterator[Store]:
        store = await open_store(url)
        yield store
        await store.close()


async def versions(conn: asyncpg.Connection[asyncpg.Record]) -> list[int]:
    return [row[0] for row in await conn.fetch("SELECT version FROM sagakit_schema ORDER BY 1")]


async def test_opening_again_and_migrating_again_change_nothing(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    for _ in range(2):
        await (await open_store(url)).close()
    assert await migrate(url) == SCHEMA_VERSION
    assert await versions(admin) == list(range(1, SCHEMA_VERSION + 1))


async def test_concurrent_openers_of_a_new_schema_migrate_it_once(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    stores = await asyncio.gather(*(open_store(url) for _ in range(5)))
    await asyncio.gather(*(store.close() for store in stores))
    assert await versions(admin) == list(range(1, SCHEMA_VERSION + 1))


async def test_newer_schema_is_refused_and_left_untouched(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    store = await open_store(url)
    await store.create(instance("a"), [started()])
    await store.close()
    await admin.execute("INSERT INTO sagakit_schema (version) VALUES ($1)", SCHEMA_VERSION + 1)

    async def snapshot() -> list[object]:
        tables = await admin.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema ="
            " current_schema() ORDER BY 1"
        )
        log = await admin.fetch("SELECT * FROM saga_log ORDER BY saga_id, seq")
        rows = await admin.fetch("SELECT * FROM sagas ORDER BY id")
        return [list(map(tuple, part)) for part in (tables, log, rows)] + [await versions(admin)]

    before = await snapshot()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await open_store(url)
    with pytest.raises(SchemaVersionError):
        await migrate(url)
    assert await snapshot() == before


async def test_the_log_is_append_only(url: str, admin: asyncpg.Connection[asyncpg.Record]) -> None:
    store = await open_store(url)
    await store.create(instance("a"), [started()])
    await store.close()
    for statement in (
        "UPDATE saga_log SET type = 'x'",
        "DELETE FROM saga_log",
        "TRUNCATE saga_log",
    ):
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await admin.execute(statement)
    assert await admin.fetchval("SELECT count(*) FROM saga_log") == 1


async def test_a_reader_does_not_create_a_missing_log(
    url: str, schema: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    with pytest.raises(StoreError, match="no sagakit saga log"):
        await open_store(url, create=False)
    found = await admin.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    assert found is None


async def test_a_notify_wakes_a_waiter_of_another_store(url: str) -> None:
    watcher, writer = await open_store(url), await open_store(url)
    try:
        await writer.create(instance("n"), [started()])
        for change in (
            writer.send("n", "go", "null"),
            writer.append("n", [step_record(1, RecordType.SAGA_COMPLETED)], SagaStatus.COMPLETED),
        ):
            async with watcher.watch("n") as watch:  # the server listens once it is entered
                waiting = asyncio.ensure_future(watch.wait(60.0))
                assert not waiting.done()
                await change
                async with asyncio.timeout(10):  # far below the 60 s it would otherwise wait
                    await waiting
    finally:
        await watcher.close()
        await writer.close()


async def test_a_watch_hears_another_store_commit_right_after_it_is_entered(url: str) -> None:
    """Entering a store's first watch on a channel returns only once the server listens on
    it, so a change committed elsewhere straight after is heard: nothing to wait for first."""
    watcher, writer = await open_store(url), await open_store(url)
    try:
        await writer.create(instance("e"), [started()])
        async with watcher.watch("e") as watch:
            await writer.append(
                "e", [step_record(1, RecordType.SAGA_COMPLETED)], SagaStatus.COMPLETED
            )
            await asyncio.wait_for(watch.wait(3600.0), 10.0)  # woken, not timed out
        async with watcher.watch(ANY_INSTANCE) as work:
            await writer.create(instance("f")._replace(due_at=time.time()), [started()])
            await asyncio.wait_for(work.wait(3600.0), 10.0)
    finally:
        await watcher.close()
        await writer.close()


async def test_a_wait_does_not_return_early_for_having_just_started_to_listen(url: str) -> None:
    """The listening starts when the watch is entered, so a first wait has nothing to
    catch up on: while another instance's change is heard, it goes on waiting."""
    watcher, writer = await open_store(url), await open_store(url)
    try:
        for saga_id in ("quiet", "loud"):
            await writer.create(instance(saga_id), [started()])
        async with watcher.watch("quiet") as quiet, watcher.watch("loud") as loud:
            waiting = asyncio.ensure_future(quiet.wait(3600.0))
            await writer.append("loud", [step_record(1)], SagaStatus.COMPENSATING)
            await asyncio.wait_for(loud.wait(3600.0), 10.0)
            assert not waiting.done()
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    finally:
        await watcher.close()
        await writer.close()


async def test_a_lost_listener_wakes_its_waiters_and_is_replaced(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    watcher, writer = await open_store(url), await open_store(url)
    assert isinstance(watcher, PostgresStore)
    try:
        await writer.create(instance("l"), [started()])
        async with watcher.watch("l") as watch:  # listening from here on
            assert watcher._listener is not None
            pid = watcher._listener.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            async with asyncio.timeout(10):
                await watch.wait(60.0)  # a change may have gone unheard: the waiter looks again
            async with asyncio.timeout(10):
                await watch.wait(60.0)  # listens anew, and says so by returning
            await writer.send("l", "go", "null")
            async with asyncio.timeout(10):
                await watch.wait(60.0)
    finally:
        await watcher.close()
        await writer.close()


async def test_only_a_watched_status_change_notifies(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    """The hot path stays cheap: a NOTIFY (a lock on the whole database at commit) is sent
    only for a status change of an instance some store watches; an append that keeps the
    status sends none, even for a watched instance, and nor does a change nobody watches.

    Another store's waiter hears of a change only by a NOTIFY, so the test listens itself.
    The watched status change is committed last; notifications arrive in commit order, so
    once that one is heard, any for the others would have been heard before it.
    """
    writer, watcher = await open_store(url), await open_store(url)
    quiet, unwatched, loud = (uuid.uuid4().hex for _ in range(3))  # the channel is shared
    heard: list[object] = []
    loud_heard = asyncio.Event()

    def hear(conn: object, pid: int, channel: str, payload: object) -> None:
        heard.append(payload)
        if payload == loud:
            loud_heard.set()

    try:
        for saga_id in (quiet, unwatched, loud):
            await writer.create(instance(saga_id), [started()])
        await admin.add_listener(CHANNEL, hear)
        async with watcher.watch(quiet), watcher.watch(loud):
            await writer.append(quiet, [step_record(1)], SagaStatus.RUNNING)
            await writer.append(unwatched, [step_record(1)], SagaStatus.COMPENSATING)
            await writer.append(loud, [step_record(1)], SagaStatus.COMPENSATING)
            async with asyncio.timeout(10):
                await loud_heard.wait()
        assert heard == [loud]
        assert await admin.fetchval("SELECT count(*) FROM sagakit_watched") == 0
    finally:
        await writer.close()
        await watcher.close()


async def test_workers_hear_of_new_work_but_not_of_every_status_change(url: str) -> None:
    """A worker waiting for work listens on a channel of its own: on the shared one every
    worker process was woken by every status change of every saga."""
    watcher, writer = await open_store(url), await open_store(url)
    assert isinstance(watcher, PostgresStore)
    heard: list[tuple[str, object]] = []

    def hear(conn: object, pid: int, channel: str, payload: object) -> None:
        heard.append((channel, payload))
        PostgresStore._on_notify(watcher, conn, pid, channel, payload)

    watcher._on_notify = hear  # type: ignore[method-assign]
    try:
        async with watcher.watch(ANY_INSTANCE) as work:  # listening from here on
            finished = uuid.uuid4().hex  # the channels are database-wide: no other test's id
            await writer.create(instance(finished), [started()])
            await writer.append(
                finished, [step_record(1, RecordType.SAGA_COMPLETED)], SagaStatus.COMPLETED
            )
            new = instance(uuid.uuid4().hex)._replace(due_at=time.time())
            await writer.create(new, [started()])
            async with asyncio.timeout(10):
                await work.wait(60.0)
        assert (WORK_CHANNEL, ANY_INSTANCE) in heard
        assert all(payload != finished for _, payload in heard)  # committed first: not heard
    finally:
        await watcher.close()
        await writer.close()


async def test_one_conflict_in_a_batch_fails_only_that_write(url: str) -> None:
    store = await open_store(url)
    assert isinstance(store, PostgresStore)
    try:
        await store.create(instance("x"), [started(), step_record(1)])
        await store.create(instance("y"), [started()])
        writes: list[_Create | _Append] = [
            _Append("y", [step_record(1)], SagaStatus.RUNNING),
            _Append("x", [step_record(1)], SagaStatus.COMPENSATING),  # seq 1 is taken
            _Create(instance("z"), [started()]),
            _Create(instance("y"), [started()]),
            _Append("ghost", [step_record(1)], SagaStatus.RUNNING),
        ]
        async with store._pool.acquire() as conn:
            outcomes = await commit_batch(conn, writes)
        assert [ok for ok, _ in outcomes] == [True, False, True, True, False]
        assert isinstance(outcomes[1][1], ConcurrentUpdateError)
        assert isinstance(outcomes[1][1].__cause__, asyncpg.UniqueViolationError)
        assert [value for _, value in outcomes[2:4]] == [True, False]
        assert isinstance(outcomes[4][1], UnknownSagaError)
        x, y, z = [await store.load(i) for i in "xyz"]
        assert x is not None and y is not None and z is not None
        assert (len(x.records), x.instance.status) == (2, SagaStatus.RUNNING)
        assert [len(y.records), len(z.records)] == [2, 1]
    finally:
        await store.close()


async def test_two_workers_claiming_at_once_never_share_an_instance(url: str) -> None:
    first, second = await open_store(url), await open_store(url)
    past = time.time() - 1
    ids = [f"c{i:03}" for i in range(200)]
    try:
        await asyncio.gather(
            *(first.create(instance(i)._replace(due_at=past), [started()]) for i in ids)
        )

        async def drain(store: Store, owner: str) -> list[str]:
            taken: list[str] = []
            while batch := await store.claim(owner, 7, 60.0):
                taken.extend(stored.instance.id for stored in batch)
            return taken

        got = await asyncio.gather(
            *(drain(store, f"w{n}-{k}") for n, store in enumerate((first, second)) for k in (0, 1))
        )
        everything = [saga_id for batch in got for saga_id in batch]
        assert sorted(everything) == ids  # each exactly once
        assert all(got)  # every claimer got some: they ran side by side
        owners = {i.id: i.lease_owner for i in await first.instances()}
        for batch, owner in zip(got, ["w0-0", "w0-1", "w1-0", "w1-1"], strict=True):
            assert {owners[saga_id] for saga_id in batch} == {owner}
    finally:
        await first.close()
        await second.close()


async def test_writes_of_many_sagas_share_commits(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    store = await open_store(url)
    try:
        created = await asyncio.gather(
            *(store.create(instance(f"b{i}"), [started()]) for i in range(300))
        )
        assert all(created)
        # A row's xmin is the transaction that inserted it: as many as there were commits.
        commits = await admin.fetchval("SELECT count(DISTINCT xmin::text) FROM sagas")
        assert commits <= 10
    finally:
        await store.close()


async def test_a_server_that_is_down_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1") as caught:
        await open_store("postgresql://sagakit:s3cret-pw@127.0.0.1:1/test?schema=x")
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_bad_parameters_are_store_errors() -> None:
    with pytest.raises(StoreError, match="schema name"):
        await open_store(f"{SERVER}?schema=bad-name;drop")
    with pytest.raises(StoreError, match="pool size"):
        await open_store(f"{SERVER}?pool=0")


async def test_postgres_scheme_and_pool_parameter_are_accepted(schema: str) -> None:
    url = SERVER.replace("postgresql://", "postgres://", 1) + f"?schema={schema}&pool=3"
    store = await open_store(url)
    try:
        assert isinstance(store, PostgresStore)
        assert store._pool.get_max_size() + flushers(3) == 3  # the writers' own come out of it
        await store.create(instance("p"), [started()])
        assert [i.id for i in await store.instances()] == ["p"]
    finally:
        await store.close()


async def test_a_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "sagakit.store.postgres")
    with pytest.raises(StoreError, match=r"pip install 'sagakit\[postgres\]'"):
        await open_store(f"{SERVER}?schema=unused")


async def test_a_first_call_that_races_a_late_write_is_not_recorded(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    """The lapsed holder of a lease writes the saga's first call while a claim would record
    its own at that position: the claim waits for the holder's commit, then is made again
    without recording calls, and returns the log with the holder's record in it."""
    store = await open_store(url)
    try:
        await store.create(instance("raced")._replace(due_at=time.time() - 1), [started()])
        head = '{"name":"contract","version":1,"steps":[],"deadline_at":null,"input":'
        calls = {"contract@1": FirstCall(head, "charge", '{"holder":"w2"}')}
        late = step_record(1, data='{"holder":"w1"}')
        async with admin.transaction():
            await admin.execute(
                "INSERT INTO saga_log VALUES ($1, 1, $2, $3, $4, $5, $6)",
                *("raced", late.type, late.at, late.step, late.attempt, late.data),
            )
            claim = asyncio.create_task(store.claim("w2", 10, 30.0, first_calls=calls))
            await waiting_on_a_lock(admin, deadline=time.monotonic() + 10)
        [claimed] = await claim
        assert [r.data for r in claimed.records] == [started().data, late.data]
        assert claimed == await store.load("raced")
    finally:
        await store.close()


async def waiting_on_a_lock(conn: asyncpg.Connection[asyncpg.Record], deadline: float) -> None:
    """Return once another session waits for a lock that ``conn``'s session holds."""
    waits = (
        "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
    )
    while not await conn.fetchval(waits):
        assert time.monotonic() < deadline, "the claim never waited for the late write"
        await asyncio.sleep(0.01)


async def test_an_append_that_keeps_the_status_writes_only_log_rows(
    url: str, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    """The log is appended, not updated: a step's records in a running saga leave the
    instance's row as it was (same tuple version), and its ``updated_at`` is still read as
    the newest record's time; a status change rewrites the row."""
    store = await open_store(url)
    version = "SELECT xmin::text FROM sagas WHERE id = 'kept'"
    try:
        await store.create(instance("kept"), [started()])
        await store.append("kept", [step_record(1)], SagaStatus.RUNNING)
        before = await admin.fetchval(version)
        last = step_record(2)
        await store.append("kept", [last], SagaStatus.RUNNING)
        assert await admin.fetchval(version) == before
        loaded = await store.load("kept")
        assert loaded is not None and loaded.instance.updated_at == pytest.approx(last.at)
        (listed,) = await store.instances()
        assert listed.updated_at == pytest.approx(last.at)
        await store.append(
            "kept", [step_record(3, RecordType.SAGA_COMPLETED)], SagaStatus.COMPLETED
        )
        assert await admin.fetchval(version) != before
    finally:
        await store.close()
