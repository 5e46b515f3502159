"""A cancel is safe whatever was in flight (issue 12, point 5).

A real worker process applies a step's effect and hangs before the call returns; it is
killed with SIGKILL, so the step's outcome is never recorded. An operator cancels; a fresh
engine drives the saga. The effects ledger (every call writes under its idempotency key,
counting calls) must then show: every effect of a compensated saga undone, none applied
twice, none after the saga's terminal record; and with the pivot in flight, the pivot made
again, the saga completed, and the cancel refused in the log. A timeout that applied its
effect, with a retry pending, is the third case.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from saga_logs import SagaLogs
from sagakit import Client, Engine, SagaStatus, Store, open_store
from sagakit.log import RecordType, SagaState
from worker_processes import open_ledger

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))

APP = """
import asyncio, os, sqlite3, time

from sagakit import Retry, Saga, StepKind

LEDGER = os.environ["LEDGER"]
TIME_OUT_AT = None
\"\"\"A step whose first attempt applies its effect, then outlives its timeout.\"\"\"


def effect(key, kind):
    with sqlite3.connect(LEDGER, timeout=60, isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO calls VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,)
        )
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?, ?)", (key, kind, time.time()))
        db.execute("COMMIT")
    db.close()


def hung(key):
    with sqlite3.connect(LEDGER, timeout=60) as db:
        db.execute("INSERT INTO hung VALUES (?)", (key,))
    db.close()


def make(name):
    async def action(ctx):
        await asyncio.to_thread(effect, ctx.idempotency_key, "do")
        if os.environ.get("HANG_AT") == name:  # the victim: dies with the call unfinished
            await asyncio.to_thread(hung, ctx.idempotency_key)
            await asyncio.Event().wait()
        if TIME_OUT_AT == name and ctx.attempt == 1:
            await asyncio.sleep(60)  # cut off by the step's timeout, its effect applied
        return {"step": name}

    async def undo(ctx):
        await asyncio.to_thread(effect, ctx.idempotency_key, "undo")

    action.__name__ = name
    return action, undo


def build(ship_timeout):
    saga = Saga("trip", 1)
    charge, undo_charge = make("charge")
    ship, undo_ship = make("ship")
    saga.add(charge, compensate=undo_charge)
    saga.add(
        ship,
        compensate=undo_ship,
        timeout=ship_timeout,
        retry=Retry(attempts=3, backoff=3600.0, max_backoff=3600.0, jitter=0.0),
    )
    saga.add(make("book")[0], kind=StepKind.PIVOT)
    saga.add(make("notify")[0], kind=StepKind.RETRIABLE)
    return saga


saga = build(60.0)
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The app module (as the worker imports it), its ledger beside it."""
    ledger = tmp_path / "ledger.db"
    with open_ledger(ledger) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        db.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, kind TEXT, at REAL)")
        db.execute("CREATE TABLE hung (key TEXT PRIMARY KEY)")
    path = tmp_path / "trip_app.py"
    path.write_text(APP)
    monkeypatch.setenv("LEDGER", str(ledger))
    spec = importlib.util.spec_from_file_location(f"trip_app_{tmp_path.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def url(saga_logs: SagaLogs, tmp_path: Path) -> str:
    return saga_logs.new(tmp_path / "log")


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = await open_store(url)
    try:
        yield opened
    finally:
        await opened.close()


def ledger_of(app: ModuleType) -> tuple[dict[str, tuple[str, float]], dict[str, int]]:
    with open_ledger(Path(app.LEDGER)) as db:
        effects = {k: (kind, at) for k, kind, at in db.execute("SELECT * FROM effects")}
        calls = dict(db.execute("SELECT key, n FROM calls").fetchall())
    return effects, calls


async def crash_in(app: ModuleType, store: Store, url: str, step: str) -> tuple[str, int]:
    """Start a saga; a worker process applies ``step``'s effect, hangs, and is SIGKILLed.
    Returns the saga id and the victim's pid."""
    victim = start_victim(app, url, step)
    try:
        saga_id = await Client(store).start(app.saga, {}, saga_id=f"trip-{step}")
        await until_hung(app, f"{saga_id}:{step}:action", victim)
    finally:
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    return saga_id, victim.pid


def start_victim(app: ModuleType, url: str, step: str) -> subprocess.Popen[bytes]:
    """A worker process (a 2 s lease) that hangs in ``step`` once it applied its effect."""
    module = Path(app.LEDGER).with_name("trip_app.py")
    args = [SAGAKIT, "worker", "--app", f"{module.stem}:saga", "--db", url]
    args += ["--lease", "2", "--poll", "0.05"]
    return subprocess.Popen(
        args,
        cwd=module.parent,
        env={**os.environ, "HANG_AT": step},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def until_hung(app: ModuleType, key: str, victim: subprocess.Popen[bytes]) -> None:
    """Until the victim holds the call (another process: a bounded look every 20 ms)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert victim.poll() is None, "the worker exited before it hung"
        with open_ledger(Path(app.LEDGER)) as db:
            if db.execute("SELECT 1 FROM hung WHERE key = ?", (key,)).fetchone():
                return
        await asyncio.sleep(0.02)
    pytest.fail(f"the worker never hung in {key}")


async def drive_after(store: Store, app: ModuleType, saga_id: str) -> SagaState:
    """A fresh engine carries on whatever is left (waiting out the victim's lease)."""
    engine = Engine(store, [app.saga], owner="fresh:1:aaaaaa")
    await engine.resume(wait=30)
    state = await engine.status(saga_id)
    assert state.status.is_terminal, state.status
    return state


def types(state: SagaState) -> list[RecordType]:
    return [record.type for record in state.records]


def check_ledger(app: ModuleType, state: SagaState, done: list[str], undone: list[str]) -> None:
    """Exactly these effects, each once, none after the terminal record."""
    effects, calls = ledger_of(app)
    saga_id = state.id
    expected = {f"{saga_id}:{s}:action": "do" for s in done}
    expected |= {f"{saga_id}:{s}:compensation": "undo" for s in undone}
    assert {k: kind for k, (kind, _) in effects.items()} == expected
    assert set(calls) == set(effects)
    ended = state.records[-1].at
    assert all(at <= ended for _, at in effects.values())


def taken_over_from(state: SagaState, pid: int) -> None:
    records = [r for r in state.records if r.type is RecordType.CALL_TAKEN_OVER]
    assert records, "the takeover is in the log"
    assert f":{pid}:" in (records[0].data or "")


@pytest.mark.timeout(180)
async def test_a_crash_mid_step_then_cancel_undoes_the_crashed_step(
    app: ModuleType, store: Store, url: str
) -> None:
    saga_id, pid = await crash_in(app, store, url, "ship")
    await Client(store).cancel(saga_id, reason="customer changed their mind", by="ops")

    state = await drive_after(store, app, saga_id)

    assert state.status is SagaStatus.COMPENSATED
    check_ledger(app, state, ["charge", "ship"], ["charge", "ship"])
    assert ledger_of(app)[1][f"{saga_id}:ship:action"] == 2  # settled: made again
    assert RecordType.CANCEL_REQUESTED in types(state)
    assert state.reason == "cancelled by ops: customer changed their mind"
    taken_over_from(state, pid)


@pytest.mark.timeout(180)
async def test_a_crash_with_the_pivot_in_flight_then_cancel_goes_forward(
    app: ModuleType, store: Store, url: str
) -> None:
    saga_id, pid = await crash_in(app, store, url, "book")
    await Client(store).cancel(saga_id, by="ops")

    state = await drive_after(store, app, saga_id)

    assert state.status is SagaStatus.COMPLETED
    check_ledger(app, state, ["charge", "ship", "book", "notify"], [])
    assert ledger_of(app)[1][f"{saga_id}:book:action"] == 2
    kinds = types(state)
    assert RecordType.SAGA_COMPENSATING not in kinds
    assert kinds.index(RecordType.CANCEL_REQUESTED) < kinds.index(RecordType.CANCEL_REFUSED)
    refused = next(r for r in state.records if r.type is RecordType.CANCEL_REFUSED)
    assert "pivot 'book'" in (refused.data or "")
    taken_over_from(state, pid)


@pytest.mark.timeout(180)
async def test_a_timeout_with_a_retry_pending_then_cancel_undoes_its_effect(
    app: ModuleType, store: Store
) -> None:
    setattr(app, "TIME_OUT_AT", "ship")  # noqa: B010 - a module, not a typed object
    setattr(app, "saga", app.build(0.5))  # noqa: B010 - ship's first attempt is cut off
    first = Engine(store, [app.saga], hand_back=True)
    parked = await first.run(app.saga, {}, saga_id="trip-timeout")
    assert parked.status is SagaStatus.RUNNING and parked.retrying == "ship"

    await Client(store).cancel("trip-timeout", by="ops")
    state = await drive_after(store, app, "trip-timeout")

    assert state.status is SagaStatus.COMPENSATED
    check_ledger(app, state, ["charge", "ship"], ["charge", "ship"])
    assert ledger_of(app)[1]["trip-timeout:ship:action"] == 2
    assert RecordType.CALL_TAKEN_OVER not in types(state)  # nothing was in flight
