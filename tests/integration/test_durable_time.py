"""Durable time: a retry's back-off is a stored due time, so a restart neither forgets nor
repeats it. A real worker process hands the waiting saga back, is SIGKILLed, and a second
worker process must make the retry exactly once, and not before it is due."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagakit import Client, Saga, SagaStatus, open_store
from sagakit.log import Record, RecordType
from sagakit.log._codec import decode

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
BACKOFF = 2.0

APP = f"""
import os, time
from sagakit import Retry, Saga

saga = Saga("flaky_order", 1)


async def undo(ctx):
    return None


@saga.step(compensate=undo, retry=Retry(attempts=3, backoff={BACKOFF}, jitter=0))
def charge(ctx):
    with open(os.environ["CALLS_FILE"], "a") as calls:
        calls.write(f"{{ctx.attempt}} {{time.time()}}\\n")
    if ctx.attempt == 1:
        raise RuntimeError("payment provider timed out")
    return {{"payment_id": "p-1"}}
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "flaky_app.py").write_text(APP)
    return tmp_path


def start_worker(app_dir: Path, db: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CALLS_FILE": str(app_dir / "calls.txt")}
    args = ["worker", "--app", "flaky_app:saga", "--db", db, "--poll", "0.05", "--lease", "1"]
    return subprocess.Popen(
        [SAGAKIT, *args], cwd=app_dir, env=env, stdout=subprocess.PIPE, text=True
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for worker in started:
        if worker.poll() is None:
            worker.kill()
        worker.communicate(timeout=30)


async def wait_until_handed_back(db: str, saga_id: str) -> float:
    """The back-off's due time, once the worker has stored it and let the saga go."""
    store = await open_store(db)
    try:
        async with asyncio.timeout(30), store.watch(saga_id) as change:
            while True:
                stored = await store.load(saga_id)
                assert stored is not None
                failed = [r for r in stored.records if r.type is RecordType.STEP_FAILED]
                row = stored.instance
                if failed and row.lease_owner is None and row.due_at is not None:
                    return row.due_at
                await change.wait(0.5)
    finally:
        await store.close()


async def records(db: str, saga_id: str) -> list[Record]:
    """The saga's log as it is stored now."""
    store = await open_store(db)
    try:
        stored = await store.load(saga_id)
    finally:
        await store.close()
    assert stored is not None
    return stored.records


def _kinds(log: list[Record]) -> list[RecordType]:
    return [record.type for record in log]


async def start_and_wait(db: str, app_dir: Path, workers: list[subprocess.Popen[str]]) -> None:
    store = await open_store(db)
    try:
        client = Client(store)
        saga = Saga("flaky_order", 1)  # only its name and version are recorded here

        async def no_op(ctx: object) -> None:
            return None

        saga.add(no_op, name="charge", compensate=no_op)
        saga_id = await client.start(saga, {"order": 7}, saga_id="order-7")
    finally:
        await store.close()

    due_at = await wait_until_handed_back(db, saga_id)
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait(timeout=30)
    assert workers[0].returncode == -signal.SIGKILL
    before = await records(db, saga_id)
    assert _kinds(before).count(RecordType.STEP_STARTED) == 1, "it died before the retry"

    workers.append(start_worker(app_dir, db))
    store = await open_store(db)
    try:
        result = await Client(store).result(saga_id, timeout=60)
    finally:
        await store.close()
    assert result.status is SagaStatus.COMPLETED

    calls = [line.split() for line in (app_dir / "calls.txt").read_text().splitlines()]
    assert [attempt for attempt, _ in calls] == ["1", "2"], calls  # once more: not twice, not never
    log = await records(db, saga_id)
    failed = next(r for r in log if r.type is RecordType.STEP_FAILED)
    retried = [r for r in log if r.type is RecordType.STEP_STARTED][1]
    assert decode(failed.data or "null")["retry_at"] == due_at, "the due time is the back-off's"
    assert due_at == pytest.approx(failed.at + BACKOFF, abs=0.05), "due a back-off after"
    assert retried.at >= due_at, "the retry must not fire before it is due"


def test_a_retry_due_later_fires_once_after_a_restart(
    app_dir: Path, workers: list[subprocess.Popen[str]]
) -> None:
    db = f"sqlite:///{app_dir / 'sagas.db'}"
    workers.append(start_worker(app_dir, db))
    asyncio.run(start_and_wait(db, app_dir, workers))
