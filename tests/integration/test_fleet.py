"""A fleet of real worker processes that never harms a saga it does not know.

Two teams' workers share one database and each drives only its own sagas; a rolling deploy
replaces the workers of version 1 with workers of versions 1 and 2, then of version 2
alone once ``sagakit versions`` says nothing of version 1 is in flight. No saga is ever
flipped to ``needs_attention`` for being unknown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from saga_logs import SagaLogs
from sagakit import Client, Saga, SagaStatus, open_store

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))

APPS = """
from sagakit import Saga


def steps(name, version, *extra, queue="default"):
    saga = Saga(name, version, queue=queue)

    async def undo(ctx):
        return None

    async def reserve(ctx):
        if ctx.input.get("park"):
            return await ctx.wait_for("approved", timeout=3600)
        return {"by": "v%d" % version}

    async def charge(ctx):
        return {"charged": ctx.input.get("n")}

    saga.add(reserve, compensate=undo)
    for step in extra:
        async def more(ctx, step=step):
            return step
        more.__name__ = step
        saga.add(more, compensate=undo)
    saga.add(charge, kind="pivot")
    return saga


trip = [steps("trip", 1)]
order = [steps("order", 1)]
v1 = [steps("order", 1)]
v1_and_v2 = [steps("order", 1), steps("order", 2, "check_fraud")]
v2 = [steps("order", 2, "check_fraud")]
payments = [steps("order", 1), steps("refund", 1, queue="payments")]
"""


def definition(name: str, version: int = 1, *extra: str) -> Saga:
    """The saga as the workers define it (names and kinds), for the client to start."""
    saga = Saga(name, version)

    async def noop(ctx: object) -> None:
        return None

    saga.add(noop, name="reserve", compensate=noop)
    for step in extra:
        saga.add(noop, name=step, compensate=noop)
    return saga.add(noop, name="charge", kind="pivot")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "fleet_apps.py").write_text(APPS)
    return tmp_path


@pytest.fixture
async def url(saga_logs: SagaLogs, tmp_path: Path) -> str:
    made = saga_logs.new(tmp_path / "log")
    store = await open_store(made)  # migrated before the workers race to it
    await store.close()
    return made


class Fleet:
    """Worker processes started for a test, stopped (SIGTERM, as a deploy does) at its end."""

    def __init__(self, app_dir: Path, url: str) -> None:
        self.app_dir, self.url = app_dir, url
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, app: str, *options: str) -> subprocess.Popen[bytes]:
        """A worker, once it says it started (it stops cleanly on SIGTERM from then on)."""
        args = [SAGAKIT, "worker", "--app", f"fleet_apps:{app}", "--db", self.url]
        args += ["--lease", "5", "--poll", "0.05", *options]
        worker = subprocess.Popen(
            args, cwd=self.app_dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.running.append(worker)
        started = threading.Event()
        threading.Thread(target=_drain, args=(worker, started), daemon=True).start()
        assert started.wait(timeout=60), "the worker said it started"
        return worker

    def stop(self, worker: subprocess.Popen[bytes]) -> None:
        worker.terminate()
        assert worker.wait(timeout=60) == 0, "a worker stopped by a deploy exits cleanly"
        self.running.remove(worker)

    def stop_all(self) -> None:
        for worker in list(self.running):
            self.stop(worker)


def _drain(worker: subprocess.Popen[bytes], started: threading.Event) -> None:
    """Read the worker's lines (a full pipe would stall it); note its "started" line."""
    assert worker.stdout is not None
    with worker.stdout:
        for line in worker.stdout:
            if b" started (" in line:
                started.set()


@pytest.fixture
def fleet(app_dir: Path, url: str) -> Iterator[Fleet]:
    workers = Fleet(app_dir, url)
    yield workers
    for worker in workers.running:
        worker.kill()
        worker.wait(timeout=60)


def versions(url: str) -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [SAGAKIT, "versions", "--db", url, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {f"{v['name']}@{v['version']}": v for v in json.loads(done.stdout)}


@pytest.mark.timeout(180)
async def test_two_teams_workers_each_drive_only_their_own_sagas(url: str, fleet: Fleet) -> None:
    fleet.start("trip")
    fleet.start("order")
    store = await open_store(url)
    try:
        client = Client(store)
        trips = [await client.start(definition("trip"), {"n": n}) for n in range(30)]
        orders = [await client.start(definition("order"), {"n": n}) for n in range(30)]
        results = [await client.result(saga_id, timeout=90) for saga_id in trips + orders]
    finally:
        await store.close()
    assert {r.status for r in results} == {SagaStatus.COMPLETED}
    fleet.stop_all()


@pytest.mark.timeout(180)
async def test_a_queue_keeps_a_workers_hands_off_other_queues(url: str, fleet: Fleet) -> None:
    fleet.start("payments", "--queue", "default")
    store = await open_store(url)
    try:
        client = Client(store)
        refund = await client.start(definition("refund"), {})
        order = await client.start(definition("order"), {})
        assert (await client.result(order, timeout=90)).status is SagaStatus.COMPLETED
        listed = versions(url)
        assert listed["refund@1"]["in_flight"] == 1 and listed["refund@1"]["workers"] == []
        fleet.start("payments", "--queue", "payments")
        assert (await client.result(refund, timeout=90)).status is SagaStatus.COMPLETED
    finally:
        await store.close()
    fleet.stop_all()


@pytest.mark.timeout(300)
async def test_a_rolling_deploy_finishes_every_saga_on_its_own_version(
    url: str, fleet: Fleet, saga_logs: SagaLogs
) -> None:
    """200 order@1 sagas, 40 of them parked in a one-hour wait_for; the workers go from v1
    to v1+v2 to v2. On SQLite one worker at a time, on PostgreSQL two side by side."""
    side_by_side = 1 if saga_logs.kind == "sqlite" else 2
    old = [fleet.start("v1") for _ in range(side_by_side)]
    store = await open_store(url)
    try:
        client = Client(store)
        v1, v2 = definition("order", 1), definition("order", 2, "check_fraud")
        first = [await client.start(v1, {"n": n, "park": n % 5 == 0}) for n in range(200)]
        parked = first[::5]
        second: list[str] = []
        for worker in old:  # replaced one by one; v2 sagas start while v1 workers remain
            fleet.stop(worker)
            fleet.start("v1_and_v2")
            second += [await client.start(v2, {"n": n}) for n in range(50 // len(old))]
        for saga_id in parked:
            await client.signal(saga_id, "approved", {"ok": True})
        results = [await client.result(saga_id, timeout=120) for saga_id in first + second]
        listed = versions(url)
        assert listed["order@1"]["in_flight"] == 0  # so the v1 code may go
        for worker in list(fleet.running):
            fleet.stop(worker)
            fleet.start("v2")
        third = [await client.start(v2, {"n": n}) for n in range(20)]
        results += [await client.result(saga_id, timeout=120) for saga_id in third]
        rows = {i.id: i for i in await store.instances(limit=1000)}
    finally:
        await store.close()
    assert {r.status for r in results} == {SagaStatus.COMPLETED}
    assert [rows[i].version for i in first] == [1] * 200
    assert {rows[i].version for i in second + third} == {2}
    assert versions(url)["order@2"]["workers"], "the v2 workers report themselves"
    fleet.stop_all()
    assert "order@1" not in {k for k, v in versions(url).items() if v["workers"]}


def test_versions_on_an_empty_log_says_so(url: str) -> None:
    done = subprocess.run(
        [SAGAKIT, "versions", "--db", url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "no sagas and no live workers"


def test_a_queue_no_saga_is_on_is_one_line(app_dir: Path, url: str) -> None:
    done = subprocess.run(
        [SAGAKIT, "worker", "--once", "--app", "fleet_apps:order", "--queue", "nope", "--db", url],
        cwd=app_dir, capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no saga is on queue nope: the sagas are on default"
