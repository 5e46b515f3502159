"""Many workers, one saga log, no single point of failure.

Three real worker processes share one store; 300 sagas are started; one worker is killed
with SIGKILL mid-run. Every saga must end terminal, none lost, and the effects ledger (which
every step writes under its idempotency key, counting calls) must show each effect applied
at most once, and exactly once for what the outcome says happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from saga_logs import SagaLogs
from sagakit import Client, Saga, SagaStatus, Store, open_store
from worker_processes import open_ledger

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
SAGAS = 300
FAIL_EVERY = 10
"""Every tenth order fails at its last step and is compensated."""

APP = """
import asyncio, os, sqlite3

from sagakit import Saga

LEDGER = os.environ["LEDGER"]


def effect(key, kind):
    # one transaction: count the call, apply the effect once per key
    with sqlite3.connect(LEDGER, timeout=60, isolation_level=None) as db:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO calls VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,)
        )
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, kind))
        db.execute("COMMIT")


def hung(key):
    with sqlite3.connect(LEDGER, timeout=60) as db:
        db.execute("INSERT INTO hung VALUES (?)", (key,))


saga = Saga("many_workers", 1)


def make(name):
    async def action(ctx):
        await asyncio.sleep(0.01)  # the remote call's latency
        await asyncio.to_thread(effect, ctx.idempotency_key, "do")
        if os.environ.get("HANG_AFTER_EFFECT"):  # the victim: dies with its calls unfinished
            await asyncio.to_thread(hung, ctx.idempotency_key)
            await asyncio.Event().wait()
        if name == "ship" and ctx.input["fail"]:
            raise RuntimeError("courier refused")
        return {"step": name}

    async def undo(ctx):
        await asyncio.to_thread(effect, ctx.idempotency_key, "undo")

    action.__name__ = name
    return action, undo


for step in ("charge", "reserve", "ship"):
    action, undo = make(step)
    saga.add(action, compensate=undo)
"""


def definition() -> Saga:
    """The same saga as the workers', for the client to start (names and kinds only)."""
    saga = Saga("many_workers", 1)

    async def noop(ctx: object) -> None:
        return None

    for step in ("charge", "reserve", "ship"):
        saga.add(noop, name=step, compensate=noop)
    return saga


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    with open_ledger(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        db.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, kind TEXT NOT NULL)")
        db.execute("CREATE TABLE hung (key TEXT PRIMARY KEY)")
    (tmp_path / "many_app.py").write_text(APP)
    return path


@pytest.fixture
async def store_url(saga_logs: SagaLogs, tmp_path: Path) -> str:
    url = saga_logs.new(tmp_path / "log")
    store = await open_store(url)  # created and migrated before the workers race to
    await store.close()
    return url


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for worker in started:
        if worker.poll() is None:
            worker.terminate()
        worker.wait(timeout=60)


def start_worker(
    app_dir: Path, url: str, ledger: Path, *, victim: bool = False
) -> subprocess.Popen[bytes]:
    """A worker process; the ``victim`` applies each effect and then hangs before the call
    returns, so when it is killed every saga it holds has a call whose outcome is unknown."""
    args = [SAGAKIT, "worker", "--app", "many_app:saga", "--db", url]
    args += ["--concurrency", "16", "--lease", "2", "--poll", "0.05"]
    env = {**os.environ, "LEDGER": str(ledger)}
    if victim:
        env["HANG_AFTER_EFFECT"] = "1"
    return subprocess.Popen(
        args, cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.mark.timeout(300)
async def test_300_sagas_survive_a_worker_killed_mid_run(
    store_url: str, ledger: Path, workers: list[subprocess.Popen[bytes]]
) -> None:
    app_dir = ledger.parent
    workers.append(start_worker(app_dir, store_url, ledger, victim=True))
    workers.extend(start_worker(app_dir, store_url, ledger) for _ in range(2))
    store = await open_store(store_url)
    try:
        client = Client(store)
        saga = definition()
        ids = [
            await client.start(saga, {"fail": i % FAIL_EVERY == 0}, saga_id=f"order-{i}")
            for i in range(SAGAS)
        ]
        await _until_terminal(store, SAGAS // 4)
        await _until_hung(ledger)
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        done_at_kill = await _terminal_count(store)
        assert done_at_kill < SAGAS, "the kill must land mid-run"

        results = [await client.result(saga_id, timeout=120) for saga_id in ids]
    finally:
        await store.close()

    statuses = {r.saga_id: r.status for r in results}
    failing = {f"order-{i}" for i in range(0, SAGAS, FAIL_EVERY)}
    assert all(statuses[i] is SagaStatus.COMPENSATED for i in failing)
    assert all(s is SagaStatus.COMPLETED for i, s in statuses.items() if i not in failing)
    _check_ledger(ledger, statuses)


def _check_ledger(ledger: Path, statuses: dict[str, SagaStatus]) -> None:
    """Each effect at most once per key (the table's key makes a second one visible as a
    call without an effect); exactly the effects each outcome implies."""
    with open_ledger(ledger) as db:
        effects = dict(db.execute("SELECT key, kind FROM effects").fetchall())
        calls = dict(db.execute("SELECT key, n FROM calls").fetchall())
        hung = [key for (key,) in db.execute("SELECT key FROM hung")]
    for saga_id, status in statuses.items():
        for step in ("charge", "reserve", "ship"):
            assert effects.get(f"{saga_id}:{step}:action") == "do"
        undone = {effects.get(f"{saga_id}:{s}:compensation") for s in ("charge", "reserve")}
        assert undone == ({"undo"} if status is SagaStatus.COMPENSATED else {None})
    assert set(calls) == set(effects)
    assert hung, "the victim was killed with calls in flight"
    not_repeated = [key for key in hung if calls[key] < 2]
    assert not not_repeated, f"calls the victim left unfinished were not made again: {not_repeated}"


async def _terminal_count(store: Store) -> int:
    rows = await store.instances()
    return sum(1 for row in rows if row.status.is_terminal)


async def _until_hung(ledger: Path) -> None:
    """Until the victim holds a call it will never finish (it is another process, whose
    ledger writes cannot be awaited: a bounded look every 20 ms)."""
    async with asyncio.timeout(60):
        while True:
            with open_ledger(ledger) as db:
                if db.execute("SELECT count(*) FROM hung").fetchone()[0]:
                    return
            await asyncio.sleep(0.02)


async def _until_terminal(store: Store, count: int) -> None:
    async with asyncio.timeout(120), store.watch("order-0") as change:
        while await _terminal_count(store) < count:
            await change.wait(0.05)
