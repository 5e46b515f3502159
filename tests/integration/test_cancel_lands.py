"""A cancel sent while a step runs lands before the next step starts, with the default
lease: the worker hears of the message (NOTIFY on PostgreSQL, the inbox on SQLite) and the
saga compensates at the step boundary; the next step's action is never called."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from saga_logs import SagaLogs
from sagakit import Client, RecordType, Saga, SagaStatus, open_store
from sagakit.store import Store

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))

APP = """
import asyncio, os
from pathlib import Path

from sagakit import Saga

HERE = Path(os.environ["MARKS"])
saga = Saga("slow_order", 1)


async def undo(ctx):
    (HERE / f"undo-{ctx.step}").touch()


@saga.step(compensate=undo)
async def reserve(ctx):
    while not (HERE / "release").exists():  # the step's own slow work, until the test says
        await asyncio.sleep(0.01)
    return "reserved"


@saga.step(compensate=undo)
async def charge(ctx):
    (HERE / "charge-called").touch()
    return "charged"


@saga.pivot()
async def ship(ctx):
    return "shipped"
"""


def definition() -> Saga:
    saga = Saga("slow_order", 1)

    async def noop(ctx: object) -> None:
        return None

    for step in ("reserve", "charge"):
        saga.add(noop, name=step, compensate=noop)
    return saga.add(noop, name="ship", kind="pivot")


class Worker:
    """A ``sagakit worker`` process with the default lease; its log lines are read as they
    come, and ``heard`` is set once it says a message came."""

    def __init__(self, app_dir: Path, url: str, marks: Path) -> None:
        args = [SAGAKIT, "worker", "--app", "slow_app:saga", "--db", url, "--poll", "0.05"]
        env = {**os.environ, "MARKS": str(marks)}
        self.process = subprocess.Popen(
            args, cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.heard = threading.Event()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for raw in self.process.stderr:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                if "a message came" in line:
                    self.heard.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=60)
        self._reader.join(timeout=60)


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    (tmp_path / "slow_app.py").write_text(APP)
    directory = tmp_path / "marks"
    directory.mkdir()
    return directory


@pytest.fixture
def worker(saga_logs: SagaLogs, tmp_path: Path, marks: Path) -> Iterator[tuple[Worker, str]]:
    url = saga_logs.new(tmp_path / "log")
    asyncio.run(_migrated(url))
    running = Worker(tmp_path, url, marks)
    yield running, url
    running.stop()


async def _migrated(url: str) -> None:
    store = await open_store(url)
    await store.close()


async def started(store: Store, saga_id: str, step: str) -> None:
    """Until the log says ``step`` started (the worker writes that before it calls it)."""
    async with store.watch(saga_id) as change, asyncio.timeout(60):
        while True:
            stored = await store.load(saga_id)
            records = stored.records if stored is not None else []
            if any(r.type is RecordType.STEP_STARTED and r.step == step for r in records):
                return
            await change.wait(1.0)


@pytest.mark.timeout(120)
async def test_a_cancel_lands_before_the_next_step(worker: tuple[Worker, str], marks: Path) -> None:
    process, url = worker
    store = await open_store(url)
    try:
        client = Client(store)
        saga_id = await client.start(definition(), {})
        await started(store, saga_id, "reserve")
        await client.cancel(saga_id, reason="the customer changed their mind", by="ops")
        assert await asyncio.to_thread(process.heard.wait, 60), "".join(process.lines)
        (marks / "release").touch()
        result = await client.result(saga_id, timeout=60)
        stored = await store.load(saga_id)
    finally:
        await store.close()
    assert result.status is SagaStatus.COMPENSATED
    assert not (marks / "charge-called").exists()
    assert (marks / "undo-reserve").exists()
    assert stored is not None
    kinds = [r.type for r in stored.records]
    assert RecordType.CANCEL_REQUESTED in kinds
    assert [r.step for r in stored.records if r.type is RecordType.STEP_STARTED] == ["reserve"]
