"""``sagakit worker --once``: one pass over a real SQLite log, then exit, holding nothing.

It drives what is due, hands back what waits (a signal with an hour's timeout, a retry an
hour away) with its due time, says what it left and until when, and releases every lease,
so the next worker is not kept out. Leases a killed worker left are waited for, with a line
saying whose, and then taken over. The worker runs as a separate process through the
installed entry point, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sagakit import (
    Client,
    DriveReport,
    SagaResult,
    SagaState,
    SagaStatus,
    Store,
    StoreError,
    open_store,
)
from sagakit.log import Instance, Record
from sagakit.orchestration import resume_all
from sagakit.store import StoreWrapper

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
DEADLINE = 60
"""Seconds a command may take before the test gives up on it: a safety net, not a check."""

APP = """
import asyncio
import os

from sagakit import Retry, Saga

quick = Saga("quick", 1)


@quick.pivot()
async def only(ctx):
    return "done"


waits = Saga("waits", 1)


@waits.pivot()
async def await_payment(ctx):
    return await ctx.wait_for("paid", timeout=3600)


fails = Saga("fails", 1)


@fails.pivot()
async def charge(ctx):
    return "charged"


@fails.retriable(retry=Retry(attempts=None, backoff=7200, max_backoff=7200, jitter=0))
async def send_email(ctx):
    raise ConnectionError("smtp down")


flaky = Saga("flaky", 1)


@flaky.pivot()
async def book(ctx):
    return "booked"


@flaky.retriable(retry=Retry(attempts=None, backoff=0.1, jitter=0))
async def notify(ctx):
    raise ConnectionError("smtp down")


hangs = Saga("hangs", 1)


@hangs.pivot()
async def ship(ctx):
    if os.environ.get("HANG"):  # the worker about to be killed: stuck in the call
        print(f"hung {ctx.saga_id}", flush=True)
        await asyncio.Event().wait()
    return "shipped"


sagas = [quick, waits, fails, flaky, hangs]
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "once_app.py").write_text(APP)
    return directory


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


def definitions(app_dir: Path) -> dict[str, Any]:
    """The app module's globals: the very definitions the worker loads."""
    app: dict[str, Any] = {}
    exec((app_dir / "once_app.py").read_text(), app)
    return app


def start(db: str, app_dir: Path, sagas: dict[str, str]) -> None:
    """Start instances (id: saga name) due now, as a client would, for a worker."""
    app = definitions(app_dir)

    async def main() -> None:
        store = await open_store(db)
        try:
            for saga_id, name in sagas.items():
                await Client(store).start(app[name], saga_id=saga_id)
        finally:
            await store.close()

    asyncio.run(main())


def rows(db: str, ids: Sequence[str]) -> dict[str, tuple[Instance, SagaState]]:
    """Each instance's row and state, read from the log file."""

    async def main() -> dict[str, tuple[Instance, SagaState]]:
        store = await open_store(db, create=False)
        try:
            found = {}
            for saga_id in ids:
                stored = await store.load(saga_id)
                assert stored is not None
                found[saga_id] = (stored.instance, SagaState.from_records(saga_id, stored.records))
            return found
        finally:
            await store.close()

    return asyncio.run(main())


def once(db: str, app_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [SAGAKIT, "worker", "--once", "--app", "once_app:sagas", "--db", db, *args]
    return subprocess.run(
        command, cwd=app_dir, capture_output=True, text=True, timeout=DEADLINE, check=False
    )


def at(when: float | None) -> str:
    assert when is not None
    return datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S")


def test_once_drives_what_is_due_hands_back_what_waits_and_exits(db: str, app_dir: Path) -> None:
    start(db, app_dir, {"q-1": "quick", "w-1": "waits", "f-1": "fails"})

    first = once(db, app_dir)

    assert first.returncode == 0, first.stderr
    assert "q-1  quick@1  completed" in first.stdout.splitlines()
    saw = rows(db, ["q-1", "w-1", "f-1"])
    assert all(row.lease_owner is None and row.lease_expires is None for row, _ in saw.values())
    waiting, failing = saw["w-1"], saw["f-1"]
    assert [s.status.value for s in waiting[1].steps] == ["waiting"]
    assert waiting[0].due_at == waiting[1].steps[0].waiting["until"]  # type: ignore[index]
    assert failing[0].due_at == failing[1].steps[1].retry_at
    left = (
        f"left 2 waiting: w-1 for signal 'paid' until {at(waiting[0].due_at)}, "
        f"f-1 retry of step 'send_email' at {at(failing[0].due_at)}"
    )
    assert first.stdout.splitlines()[-1] == f"resumed 3 saga(s): 1 completed; {left}"

    second = once(db, app_dir)  # at once: no lease of the first keeps it out

    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [f"resumed 2 saga(s): {left}"]
    assert "for the lease of" not in second.stderr
    again = rows(db, ["w-1", "f-1"])
    assert all(row.lease_owner is None for row, _ in again.values())
    assert again["f-1"][1].steps[1].attempts == 1  # its retry is an hour away: not made early
    assert again["f-1"][0].due_at == failing[0].due_at
    assert again["w-1"][0].due_at == waiting[0].due_at


def test_once_with_max_attempts_sees_short_back_offs_through_to_needs_attention(
    db: str, app_dir: Path
) -> None:
    start(db, app_dir, {"r-1": "flaky"})

    done = once(db, app_dir, "--max-attempts", "3")

    assert done.returncode == 0, done.stderr
    reason = "step 'notify' failed 3 times after the pivot: smtp down"
    assert f"r-1  flaky@1  needs_attention  ({reason})" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == "resumed 1 saga(s): 1 needs_attention"
    [(row, state)] = rows(db, ["r-1"]).values()
    assert state.steps[1].attempts == 3
    assert row.lease_owner is None


@pytest.fixture
def victim(db: str, app_dir: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A worker whose calls hang, with a one-second lease; killed by the test (or after)."""
    command = [SAGAKIT, "worker", "--app", "once_app:sagas", "--db", db, "--lease", "1"]
    with (tmp_path / "victim.err").open("w") as errors:
        worker = subprocess.Popen(
            [*command, "--poll", "0.05"],
            cwd=app_dir,
            env={**os.environ, "HANG": "1"},
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate(timeout=DEADLINE)


def test_once_says_whose_leases_it_waits_for_then_takes_over_a_killed_worker_s_sagas(
    db: str, app_dir: Path, victim: subprocess.Popen[str]
) -> None:
    ids = ["h-1", "h-2", "h-3"]
    start(db, app_dir, dict.fromkeys(ids, "hangs"))
    assert victim.stdout is not None
    hung: set[str] = set()
    while len(hung) < len(ids):  # bounded by the victim: its stdout ends if it dies
        line = victim.stdout.readline()
        assert line, "the worker stopped before its calls hung"
        if line.startswith("hung "):
            hung.add(line.split()[1])
    holders = {row.lease_owner for row, _ in rows(db, ids).values()}
    assert len(holders) == 1
    [holder] = holders
    assert holder is not None and holder.startswith(f"{socket.gethostname()}:{victim.pid}:")

    env = {k: v for k, v in os.environ.items() if k != "HANG"}
    command = [SAGAKIT, "worker", "--once", "--app", "once_app:sagas", "--db", db]
    with subprocess.Popen(
        [*command, "--lease", "10"],  # waits up to 10 s for leases to lapse
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as resume:
        try:
            assert resume.stderr is not None
            progress = ""
            while "for the lease of" not in progress:  # bounded: stderr ends when it exits
                progress = resume.stderr.readline()
                assert progress, "the pass ended without waiting for the leases"
            os.kill(victim.pid, signal.SIGKILL)
            assert victim.wait(timeout=DEADLINE) == -signal.SIGKILL
            out, err = resume.communicate(timeout=DEADLINE)
        finally:
            if resume.poll() is None:
                resume.kill()

    assert "waiting" in progress and f"the lease of 3 saga(s) held by {holder}" in progress
    assert resume.returncode == 0, err
    lines = out.splitlines()
    assert all(f"{saga_id}  hangs@1  completed" in lines for saga_id in ids), out
    assert lines[-1] == "resumed 3 saga(s): 3 completed"
    after = rows(db, ids)
    assert all(state.status.value == "completed" for _, state in after.values())
    assert all(row.lease_owner is None for row, _ in after.values())


class BrokenFor(StoreWrapper):
    """A saga log that cannot write one instance's records: driving it raises."""

    def __init__(self, inner: Store, broken: str) -> None:
        super().__init__(inner)
        self.broken = broken

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        if saga_id == self.broken:
            raise StoreError("disk full")
        await self.inner.append(saga_id, records, status)


def test_a_drive_that_raises_is_reported_once_and_the_pass_still_ends(
    db: str, app_dir: Path
) -> None:
    start(db, app_dir, {"q-1": "quick", "b-1": "quick"})
    reports: list[DriveReport] = []

    async def main() -> list[SagaResult]:
        store = BrokenFor(await open_store(db), "b-1")
        try:
            return await resume_all(store, definitions(app_dir)["sagas"], report=reports.append)
        finally:
            await store.close()

    results = asyncio.run(main())

    assert [(r.saga_id, r.status.value) for r in results] == [("q-1", "completed")]
    errors = [(r.saga_id, str(r.error)) for r in reports if r.error is not None]
    assert errors == [("b-1", "disk full")]  # once: not driven again and again in the pass
    row, state = rows(db, ["b-1"])["b-1"]
    assert row.lease_owner is None and row.due_at is not None  # handed back, due for a worker
    assert state.status.value == "pending"
