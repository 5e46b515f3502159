"""A worker that lost its lease stops driving: the new holder's run is the only one.

An ``async def`` step that blocks the event loop (``time.sleep``) starves the lease
renewals; past the lease a second worker takes the saga over. Once the block ends, the
first worker must make no further call and no write, say that it lost the lease and to
whom (not an error that reads like a corrupt log), and name the step that blocked its loop.
The two workers are separate processes (a blocked loop blocks everything in it) on one
SQLite file or one PostgreSQL schema, run through the installed ``sagakit worker``.

The same rule in one process, where each turn can be arranged exactly: a write refused
because the new holder wrote first ends the drive quietly, and so does a renewal that
finds the lease gone, before the next write.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from saga_logs import SagaLogs
from sagakit import (
    Client,
    CompensationContext,
    Engine,
    Saga,
    SagaResult,
    SagaStatus,
    StepContext,
    Store,
    open_store,
)
from sagakit.log import Record, RecordType
from sagakit.store import StoreWrapper
from worker_processes import WorkerProcess, migrated_log, open_ledger, until

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
LEASE = 0.6
DEADLINE = 60.0
"""Seconds the test waits at most for another process's doings: a safety net, not a check."""

APP = """
import asyncio
import contextlib
import os
import sqlite3
import time

from sagakit import Saga

LEDGER = os.environ["LEDGER"]
RELEASE = os.environ["RELEASE"]
ROLE = os.environ["ROLE"]
DEADLINE = 60.0


def ledger():
    return contextlib.closing(sqlite3.connect(LEDGER, timeout=30, isolation_level=None))


def record(step, attempt):
    with ledger() as db:
        db.execute("INSERT INTO calls VALUES (?, ?, ?, ?)", (ROLE, os.getpid(), step, attempt))


def called_by(role, step):
    with ledger() as db:
        query = "SELECT count(*) FROM calls WHERE role = ? AND step = ?"
        return db.execute(query, (role, step)).fetchone()[0] > 0


saga = Saga("lost_lease", 1)


async def undo(ctx):
    record("undo:" + ctx.step, ctx.attempt)


@saga.step(compensate=undo)
async def block(ctx):
    record("block", ctx.attempt)
    give_up = time.monotonic() + DEADLINE
    if ROLE == "A":
        # The scenario: time.sleep in an async def blocks the loop, so the renewals starve
        # and the lease lapses; it goes on until worker B has taken the saga over.
        while not called_by("B", "block") and time.monotonic() < give_up:
            time.sleep(0.02)
    else:
        # B holds the saga until the test has seen A give it up.
        while not os.path.exists(RELEASE) and time.monotonic() < give_up:
            await asyncio.sleep(0.02)
    return ROLE


@saga.pivot()
async def charge(ctx):
    record("charge", ctx.attempt)
    return "charged"


@saga.retriable()
async def notify(ctx):
    record("notify", ctx.attempt)
    return "sent"
"""


def definition() -> Saga:
    """The workers' saga as the client starts it (its names and kinds are what count)."""

    async def noop(ctx: StepContext | CompensationContext) -> None:
        return None

    saga = Saga("lost_lease", 1).add(noop, name="block", compensate=noop)
    return saga.add(noop, name="charge", kind="pivot").add(noop, name="notify", kind="retriable")


def calls(ledger: Path) -> list[tuple[str, int, str, int]]:
    """(role, pid, step, attempt) of every call the workers made, in order."""
    with open_ledger(ledger) as db:
        return db.execute("SELECT role, pid, step, attempt FROM calls ORDER BY rowid").fetchall()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    with open_ledger(tmp_path / "ledger.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE calls (role TEXT, pid INTEGER, step TEXT, attempt INTEGER)")
    (tmp_path / "lost_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
async def store_url(saga_logs: SagaLogs, tmp_path: Path) -> str:
    return await migrated_log(saga_logs, tmp_path / "log")


def worker(app_dir: Path, url: str, role: str) -> WorkerProcess:
    env = {"LEDGER": str(app_dir / "ledger.db"), "RELEASE": str(app_dir / "release")}
    options = ["--lease", str(LEASE), "--poll", "0.05"]
    return WorkerProcess(
        app_dir, url, role, app="lost_app:saga", options=options, env=env, deadline=DEADLINE
    )


async def test_a_worker_whose_loop_was_blocked_past_its_lease_stops_driving(
    store_url: str, app_dir: Path, workers: list[WorkerProcess]
) -> None:
    ledger = app_dir / "ledger.db"
    a = worker(app_dir, store_url, "A")
    workers.append(a)
    store = await open_store(store_url)
    try:
        client = Client(store)
        saga_id = await client.start(definition(), saga_id="blocked")
        await until(lambda: [c[2] for c in calls(ledger)] == ["block"], "A to call 'block'")
        b = worker(app_dir, store_url, "B")  # A's loop is blocked: it cannot renew
        workers.append(b)
        await until(lambda: "lost the lease" in a.stderr(), "A to say it lost the lease")
        (app_dir / "release").touch()
        result = await client.result(saga_id, timeout=DEADLINE)
        records = (await client.state(saga_id)).records
    finally:
        await store.close()
    a_rc, b_rc = a.stop(), b.stop()
    a_out, a_err, b_out = a.stdout(), a.stderr(), b.stdout()

    assert result.status is SagaStatus.COMPLETED
    made = calls(ledger)
    assert [(role, step) for role, _, step, _ in made] == [
        ("A", "block"),
        ("B", "block"),  # made again with the same key: A's outcome was never recorded
        ("B", "charge"),
        ("B", "notify"),
    ]
    assert {pid for role, pid, _, _ in made if role == "A"} == {a.process.pid}
    # One writer after the takeover: every outcome once, in order, no write refused.
    steps = [(r.type, r.step) for r in records if r.type is not RecordType.SAGA_STARTED]
    assert steps == [
        (RecordType.STEP_STARTED, "block"),
        (RecordType.CALL_TAKEN_OVER, "block"),  # B says whose call it makes again
        (RecordType.STEP_SUCCEEDED, "block"),
        (RecordType.STEP_STARTED, "charge"),
        (RecordType.STEP_SUCCEEDED, "charge"),
        (RecordType.STEP_STARTED, "notify"),
        (RecordType.STEP_SUCCEEDED, "notify"),
        (RecordType.SAGA_COMPLETED, None),
    ]

    match = re.search(r"worker (\S+) started", b_out)
    assert match is not None, b_out
    b_owner = match.group(1)
    lost = f"lost the lease of saga blocked to {b_owner}; the new holder carries it on"
    assert lost in a_err
    lag = re.search(r"saga blocked: the event loop was blocked for [\d.]+ s[^\n]*", a_err)
    assert lag is not None, a_err
    assert "step 'block' (action, attempt 1) was in flight" in lag.group(0)
    for text in (a_out, a_err):
        assert "already written" not in text
        assert "error" not in text.lower()
    assert a_rc == 0, "a lost lease is not an error of the worker"
    assert b_rc == 0


# --- the same rule in one process --------------------------------------------------------


class Renewals(StoreWrapper):
    """Counts appends, and says when a renewal leaves out an instance it was asked for."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.appends = 0
        self.refused = asyncio.Event()

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        self.appends += 1
        await self.inner.append(saga_id, records, status)

    async def renew(self, owner: str, saga_ids: Sequence[str], lease: float) -> list[str]:
        kept = await self.inner.renew(owner, saga_ids, lease)
        if set(saga_ids) - set(kept):
            self.refused.set()
        return kept


B_OWNER = "b-host:2:bb"


Action = Callable[[StepContext], Awaitable[str]]


def two_step(first: Action, second: Action) -> Saga:
    """``first`` (compensatable) then ``second`` (the pivot), as each engine's code has it."""

    async def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("two").add(first, name="first", compensate=undo)
    return saga.add(second, name="second", kind="pivot")


async def test_a_write_refused_because_the_new_holder_wrote_first_ends_the_drive_quietly(
    saga_logs: SagaLogs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = saga_logs.new(tmp_path / "log")
    store_a, store_b = await open_store(url), await open_store(url)
    made: list[tuple[str, str]] = []
    b_in_second, b_may_finish = asyncio.Event(), asyncio.Event()
    engine_b = Engine(store_b, owner=B_OWNER)
    taking_over: list[asyncio.Task[SagaResult]] = []

    async def a_first(ctx: StepContext) -> str:
        made.append(("A", "first"))
        # As if this process froze: its lease lapses and B takes the saga over and goes on.
        await store_a.renew("a-host:1:aa", [ctx.saga_id], -1.0)
        taking_over.append(asyncio.create_task(engine_b.resume_saga(ctx.saga_id)))
        await b_in_second.wait()
        return "a"

    async def a_second(ctx: StepContext) -> str:
        made.append(("A", "second"))
        return "a"

    async def b_first(ctx: StepContext) -> str:
        made.append(("B", "first"))
        return "b"

    async def b_second(ctx: StepContext) -> str:
        made.append(("B", "second"))
        b_in_second.set()
        await b_may_finish.wait()
        return "b"

    engine_b.register(two_step(b_first, b_second))
    try:
        engine_a = Engine(store_a, owner="a-host:1:aa")
        with caplog.at_level(logging.INFO, logger="sagakit"):
            result = await engine_a.run(two_step(a_first, a_second), saga_id="x")
        b_may_finish.set()
        finished = await taking_over[0]
    finally:
        await store_a.close()
        await store_b.close()

    assert result.status is SagaStatus.RUNNING  # as the store holds it: B's to carry on
    assert result.lost_lease == f"lost the lease to {B_OWNER}; the new holder carries it on"
    assert finished.status is SagaStatus.COMPLETED
    assert made == [("A", "first"), ("B", "first"), ("B", "second")]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "took over 1 saga from a-host:1 (lease lapsed): their calls in flight are made again"
        " with the same idempotency keys",
        f"lost the lease of saga x to {B_OWNER}; the new holder carries it on",
    ]
    assert getattr(warnings[1], "saga_id", None) == "x"
    assert getattr(warnings[1], "lease_owner", None) == B_OWNER


async def test_a_renewal_that_finds_the_lease_gone_stops_the_drive_before_its_next_write(
    saga_logs: SagaLogs, tmp_path: Path
) -> None:
    url = saga_logs.new(tmp_path / "log")
    inner = await open_store(url)
    store = Renewals(inner)
    made: list[str] = []
    stolen_at: list[int] = []

    async def first(ctx: StepContext) -> str:
        made.append("first")
        await inner.renew("a-host:1:aa", [ctx.saga_id], -1.0)  # lapsed...
        assert await inner.acquire(B_OWNER, ctx.saga_id, 30.0)  # ...and taken
        stolen_at.append(store.appends)
        await store.refused.wait()  # the next renewal finds out
        return "a"

    async def second(ctx: StepContext) -> str:
        made.append("second")
        return "a"

    try:
        engine = Engine(store, owner="a-host:1:aa", lease=LEASE)
        result = await engine.run(two_step(first, second), saga_id="x")
        stored = await inner.load("x")
    finally:
        await inner.close()

    assert made == ["first"]
    assert store.appends == stolen_at[0], "no write once the lease was gone"
    assert result.lost_lease == f"lost the lease to {B_OWNER}; the new holder carries it on"
    assert stored is not None and stored.instance.lease_owner == B_OWNER
    assert [r.type for r in stored.records][-1] is RecordType.STEP_STARTED


async def test_a_step_that_blocks_the_loop_for_a_third_of_the_lease_is_named(
    saga_logs: SagaLogs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lease = 1.2
    store = await open_store(saga_logs.new(tmp_path / "log"))

    async def busy(ctx: StepContext) -> str:
        time.sleep(lease / 2)  # noqa: ASYNC251 - the scenario: blocks the loop, not past the lease
        return "done"

    async def after(ctx: StepContext) -> str:
        return "done"

    async def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("lag").add(busy, compensate=undo).add(after, kind="pivot")
    try:
        with caplog.at_level(logging.WARNING, logger="sagakit"):
            result = await Engine(store, lease=lease).run(saga, saga_id="lagging")
    finally:
        await store.close()

    assert result.status is SagaStatus.COMPLETED
    named = [r for r in caplog.records if "the event loop was blocked" in r.getMessage()]
    assert len(named) == 1, [r.getMessage() for r in caplog.records]
    message = named[0].getMessage()
    assert message.startswith("saga lagging: the event loop was blocked for")
    assert "step 'busy' (action, attempt 1) was in flight" in message
    assert getattr(named[0], "saga_id", None) == "lagging"
    assert getattr(named[0], "key", None) == "lagging:busy:action"


async def test_a_stall_during_a_plain_def_step_is_not_blamed_on_the_step(
    saga_logs: SagaLogs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync step runs in a thread: when the loop stalls meanwhile, something else held it
    (here: a coroutine beside the saga), and the warning says so rather than telling the
    operator to turn the step into the plain def it already is."""
    lease = 1.2
    store = await open_store(saga_logs.new(tmp_path / "log"))
    loop = asyncio.get_running_loop()
    in_step = asyncio.Event()
    stall_over = threading.Event()

    def waits(ctx: StepContext) -> str:
        loop.call_soon_threadsafe(in_step.set)
        assert stall_over.wait(timeout=30), "the stall never ended"
        return "done"

    async def blocker() -> None:
        await in_step.wait()
        time.sleep(lease / 2)  # noqa: ASYNC251 - the scenario: not the step blocks the loop
        stall_over.set()

    def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("lag-sync").add(waits, compensate=undo)
    try:
        with caplog.at_level(logging.WARNING, logger="sagakit"):
            blocking = asyncio.create_task(blocker())
            result = await Engine(store, lease=lease).run(saga, saga_id="threaded")
            await blocking
    finally:
        await store.close()

    assert result.status is SagaStatus.COMPLETED
    named = [r for r in caplog.records if "the event loop was blocked" in r.getMessage()]
    assert len(named) == 1, [r.getMessage() for r in caplog.records]
    message = named[0].getMessage()
    assert "step 'waits' (action, attempt 1) was in flight" in message
    assert "the step is a plain def running in a thread, so something else held" in message
    assert "make the step a plain def" not in message
