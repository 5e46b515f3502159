"""A worker frozen past its lease, and a cancel of everything (issue 12, "Done when").

Worker A (a real ``sagakit worker`` process) drives 100 sagas and holds each in the middle
of a step whose effect it has applied (charge, reserve, ship the pivot, or the e-mail after
it); it is then frozen with SIGSTOP, so its leases lapse. All 100 are cancelled; worker B
takes A's lapsed leases over and carries every saga to its end. Only then is A resumed,
its held calls let return, and it is watched until it has said, for every saga, that it
lost the lease. The effects ledger (every call writes a row, in order, under its
idempotency key) must show every effect of a compensated saga undone, no undo for a
completed one, and no row at all from the moment every saga was terminal: the frozen
worker made no call once it woke.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from saga_logs import SagaLogs
from sagakit import Client, OperatorActionError, Saga, SagaStatus, StepKind, open_store
from sagakit.log import RecordType, SagaState
from worker_processes import WorkerProcess, migrated_log, open_ledger, until

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
SAGAS = 100
LEASE = 1.5
DEADLINE = 90.0
"""Seconds the test waits at most for another process's doings: a safety net, not a check."""
STEPS = ("charge", "reserve", "ship", "email")
UNDOABLE = ("charge", "reserve")

APP = """
import asyncio, contextlib, os, sqlite3, time

from sagakit import Saga, StepKind

LEDGER = os.environ["LEDGER"]
THAW = os.environ["THAW"]
ROLE = os.environ["ROLE"]
DEADLINE = 90.0


def write(sql, args):
    with contextlib.closing(sqlite3.connect(LEDGER, timeout=60, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(sql, args)
        db.execute("COMMIT")


def effect(ctx, step, kind):
    # every call is a row, in order; the effect itself is applied once per key
    key = ctx.idempotency_key
    with contextlib.closing(sqlite3.connect(LEDGER, timeout=60, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO calls (key, saga, step, kind, role, at) VALUES (?, ?, ?, ?, ?, ?)",
            (key, ctx.saga_id, step, kind, ROLE, time.time()),
        )
        db.execute(
            "INSERT OR IGNORE INTO effects VALUES (?, ?, ?, ?)", (key, ctx.saga_id, step, kind)
        )
        db.execute("COMMIT")


def make(name):
    async def action(ctx):
        await asyncio.sleep(0.01)  # the remote call's latency
        await asyncio.to_thread(effect, ctx, name, "do")
        if ROLE == "A" and ctx.input["hold"] == name:
            # applied, but the reply is slow: A is frozen with this call in flight, and it
            # returns only once A is thawed
            await asyncio.to_thread(write, "INSERT INTO held VALUES (?, ?)", (ctx.saga_id, name))
            give_up = time.monotonic() + DEADLINE
            while not os.path.exists(THAW) and time.monotonic() < give_up:
                await asyncio.sleep(0.02)
        return {"step": name}

    async def undo(ctx):
        await asyncio.to_thread(effect, ctx, name, "undo")

    action.__name__ = name
    return action, undo


saga = Saga("frozen_cancel", 1)
for step in ("charge", "reserve"):
    action, undo = make(step)
    saga.add(action, compensate=undo)
saga.add(make("ship")[0], kind=StepKind.PIVOT)
saga.add(make("email")[0], kind=StepKind.RETRIABLE)
"""


def definition() -> Saga:
    """The workers' saga as the client starts it (its names and kinds are what count)."""

    async def noop(ctx: object) -> None:
        return None

    saga = Saga("frozen_cancel", 1)
    for step in UNDOABLE:
        saga.add(noop, name=step, compensate=noop)
    saga.add(noop, name="ship", kind=StepKind.PIVOT)
    return saga.add(noop, name="email", kind=StepKind.RETRIABLE)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    with open_ledger(tmp_path / "ledger.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE calls (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, saga TEXT,"
            " step TEXT, kind TEXT, role TEXT, at REAL)"
        )
        db.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, saga TEXT, step TEXT, kind TEXT)")
        db.execute("CREATE TABLE held (saga TEXT PRIMARY KEY, step TEXT)")
    (tmp_path / "frozen_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
async def store_url(saga_logs: SagaLogs, tmp_path: Path) -> str:
    return await migrated_log(saga_logs, tmp_path / "log")


def worker(app_dir: Path, url: str, role: str) -> WorkerProcess:
    options = ["--concurrency", str(SAGAS), "--lease", str(LEASE), "--poll", "0.05"]
    env = {"LEDGER": str(app_dir / "ledger.db"), "THAW": str(app_dir / "thaw")}
    return WorkerProcess(
        app_dir, url, role, app="frozen_app:saga", options=options, env=env, deadline=DEADLINE
    )


def held(ledger: Path) -> dict[str, str]:
    with open_ledger(ledger) as db:
        return dict(db.execute("SELECT saga, step FROM held").fetchall())


def row_count(ledger: Path) -> int:
    with open_ledger(ledger) as db:
        count: int = db.execute("SELECT count(*) FROM calls").fetchone()[0]
    return count


def log_writable(url: str) -> bool:
    """False if the SQLite saga log's write lock is held (by the frozen worker, which would
    then hold it until thawed). A PostgreSQL store writes in single statements: never."""
    if not url.startswith("sqlite:///"):
        return True
    db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return True


async def freeze(worker: WorkerProcess, url: str) -> None:
    """SIGSTOP, at a moment the worker is not inside a write to the saga log."""
    for _ in range(100):
        worker.process.send_signal(signal.SIGSTOP)
        if log_writable(url):
            return
        worker.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.01)
    pytest.fail("the worker was always inside a write to the saga log")


@pytest.mark.timeout(300)
async def test_a_frozen_worker_and_a_cancel_of_100_sagas_leave_no_effect_undone_or_late(
    store_url: str, app_dir: Path, workers: list[WorkerProcess]
) -> None:
    ledger = app_dir / "ledger.db"
    holds = {f"order-{i}": STEPS[i % len(STEPS)] for i in range(SAGAS)}
    a = worker(app_dir, store_url, "A")
    workers.append(a)
    store = await open_store(store_url)
    refused_at_once = 0
    try:
        client = Client(store)
        saga = definition()
        for saga_id, step in holds.items():
            await client.start(saga, {"hold": step}, saga_id=saga_id)
        await until(lambda: held(ledger) == holds, "A to hold every saga mid-step")
        await freeze(a, store_url)

        for saga_id in holds:
            try:
                await client.cancel(saga_id, reason="frozen worker", by="ops")
            except OperatorActionError:  # past its pivot, as the log shows at once
                refused_at_once += 1
        b = worker(app_dir, store_url, "B")
        workers.append(b)
        results = {s: (await client.result(s, timeout=DEADLINE)).status for s in holds}
        states = {s: await client.state(s) for s in holds}
        rows_when_terminal = row_count(ledger)

        (app_dir / "thaw").touch()  # A's held calls return once it wakes
        a.process.send_signal(signal.SIGCONT)
        await until(
            lambda: a.stderr().count("lost the lease of saga") >= SAGAS,
            "A to say it lost every lease",
        )
        after = {s: await client.state(s) for s in holds}
    finally:
        await store.close()
    a_rc, b_rc = a.stop(), b.stop()
    a_err = a.stderr()

    assert row_count(ledger) == rows_when_terminal, "a call was made after every saga ended"
    assert all(after[s].records == states[s].records for s in holds), "a write after the end"
    expected = {
        s: SagaStatus.COMPENSATED if step in UNDOABLE else SagaStatus.COMPLETED
        for s, step in holds.items()
    }
    assert results == expected
    _check_ledger(ledger, holds, results, states)

    refused_in_log = sum(_has(state, RecordType.CANCEL_REFUSED) for state in states.values())
    taken_over = sum(_has(state, RecordType.CALL_TAKEN_OVER) for state in states.values())
    assert refused_at_once == SAGAS // 4  # holding the e-mail: past the pivot
    assert refused_in_log == SAGAS // 4  # holding the pivot: made again, then refused
    assert taken_over == SAGAS, "B made every call A held again"
    for saga_id in holds:
        assert f"lost the lease of saga {saga_id}; it has ended meanwhile" in a_err
    assert "already written" not in a_err
    assert a_rc == 0 and b_rc == 0


def _has(state: SagaState, kind: RecordType) -> bool:
    return any(record.type is kind for record in state.records)


def _check_ledger(
    ledger: Path,
    holds: dict[str, str],
    results: dict[str, SagaStatus],
    states: dict[str, SagaState],
) -> None:
    """Each compensated saga's effects (up to the one held) all undone; a completed saga's
    all applied, none undone; no call after the saga's terminal record."""
    with open_ledger(ledger) as db:
        effects = db.execute("SELECT saga, step, kind FROM effects").fetchall()
        calls = db.execute("SELECT saga, at FROM calls").fetchall()
    done: dict[str, set[str]] = {s: set() for s in holds}
    undone: dict[str, set[str]] = {s: set() for s in holds}
    for saga_id, step, kind in effects:
        (done if kind == "do" else undone)[saga_id].add(step)
    for saga_id, step in holds.items():
        if results[saga_id] is SagaStatus.COMPENSATED:
            applied = set(STEPS[: STEPS.index(step) + 1])
            assert done[saga_id] == applied, saga_id
            assert undone[saga_id] == applied, f"{saga_id}: an effect left undone"
        else:
            assert done[saga_id] == set(STEPS), saga_id
            assert undone[saga_id] == set(), saga_id
    late = [(s, at) for s, at in calls if at > states[s].records[-1].at]
    assert not late, f"calls after their saga's terminal record: {late}"
