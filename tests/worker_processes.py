"""What the tests with real worker processes share: a ledger the workers' steps write their
effects to, a ``sagakit worker`` process, a migrated saga log, and a bounded look at what
other processes did (which no watch can announce)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from saga_logs import SagaLogs
from sagakit import Saga, open_store

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))


@contextlib.contextmanager
def open_ledger(path: Path) -> Iterator[sqlite3.Connection]:
    """The ledger, committed and closed at the end (Python 3.13 warns of an unclosed one)."""
    db = sqlite3.connect(path)
    try:
        with db:
            yield db
    finally:
        db.close()


async def migrated_log(saga_logs: SagaLogs, directory: Path) -> str:
    """A fresh saga log, created and migrated before the workers race to it."""
    url = saga_logs.new(directory)
    store = await open_store(url)
    await store.close()
    return url


async def until(check: Callable[[], bool], what: str, deadline: float = 90.0) -> None:
    """Until ``check()`` holds. It looks at other processes, which cannot be awaited: a
    bounded look every 20 ms, failing the test after ``deadline`` seconds."""
    try:
        async with asyncio.timeout(deadline):
            while True:
                if check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


class WorkerProcess:
    """``sagakit worker --app APP --db URL`` in a process of its own, in ``app_dir``, its
    output kept in files named for its ``role``."""

    def __init__(
        self,
        app_dir: Path,
        url: str,
        role: str,
        *,
        app: str,
        options: Sequence[str],
        env: Mapping[str, str],
        deadline: float,
    ) -> None:
        self.out, self.err = app_dir / f"{role}.out", app_dir / f"{role}.err"
        self.deadline = deadline
        args = [SAGAKIT, "worker", "--app", app, "--db", url, *options]
        environment = {**os.environ, "ROLE": role, **env}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                args, cwd=app_dir, env=environment, stdout=out, stderr=err
            )

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen process cannot take a SIGTERM
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=self.deadline)


def client_side(name: str, steps: Sequence[str]) -> Saga:
    """The workers' saga as a client starts it: its name and compensatable steps' names
    are what the log records; the bodies are the workers' (their app module)."""
    saga = Saga(name, 1)

    async def noop(ctx: object) -> None:
        return None

    for step in steps:
        saga.add(noop, name=step, compensate=noop)
    return saga
