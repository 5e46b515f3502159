"""Worker processes for a PostgreSQL scenario: start N, wait until each is ready, stop them.

Each is ``python -m benchmarks.pg_worker`` (a :class:`sagakit.Worker`, see that module) in a
process of its own, as a deployment would run them; stopping sends SIGTERM, and each answers
with what it drove, which the scenario checks against the saga log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(slots=True)
class WorkerSummary:
    """What one worker process said it did, or why it said nothing."""

    statuses: dict[str, int] = field(default_factory=dict)
    error_count: int = 0
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0
    failure: str | None = None


class Fleet:
    """``workers`` worker processes on one saga log, each driving ``concurrency`` sagas."""

    def __init__(self, url: str, workers: int, concurrency: int, poll: float) -> None:
        self.url = url
        self.workers = workers
        self.concurrency = concurrency
        self.poll = poll
        self._procs: list[asyncio.subprocess.Process] = []
        self._stderr: list[IO[bytes]] = []
        self._files = contextlib.ExitStack()
        self.summaries: list[WorkerSummary] = []

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    async def __aenter__(self) -> Fleet:
        try:
            for _ in range(self.workers):
                await self._spawn()
            await asyncio.gather(*(self._ready(i) for i in range(len(self._procs))))
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _spawn(self) -> None:
        # Kept open until stop() reads it for a failure message; the ExitStack closes it.
        stderr = self._files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        self._stderr.append(stderr)
        # benchmarks/ is beside src/, not installed; a path set before it (a baseline's
        # src/, see benchmarks.pg_baseline) stays in front, so the workers run that sagakit.
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*inherited, str(ROOT)])}
        args = ["--db", self.url, "--concurrency", str(self.concurrency), "--poll", str(self.poll)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.pg_worker",
            *args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        self._procs.append(proc)

    async def _ready(self, index: int) -> None:
        proc = self._procs[index]
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        if line.strip() != b"ready":
            raise RuntimeError(
                f"benchmark worker {index} did not start: {self._stderr_tail(index)}"
            )

    async def stop(self) -> list[WorkerSummary]:
        """SIGTERM every worker, wait for each, and collect what each reports (once)."""
        if self.summaries or not self._procs:
            return self.summaries
        for proc in self._procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        self.summaries = [await self._collect(i) for i in range(len(self._procs))]
        self._files.close()
        return self.summaries

    async def _collect(self, index: int) -> WorkerSummary:
        proc = self._procs[index]
        assert proc.stdout is not None
        try:
            out = await asyncio.wait_for(proc.stdout.read(), STOP_TIMEOUT)
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return WorkerSummary(failure=f"worker {index} did not stop within {STOP_TIMEOUT:g} s")
        lines = out.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = self._stderr_tail(index)
            return WorkerSummary(failure=f"worker {index} exited {proc.returncode}: {tail}")
        data: dict[str, Any] = json.loads(lines[-1])
        return WorkerSummary(
            statuses={str(k): int(v) for k, v in data["statuses"].items()},
            error_count=int(data["error_count"]),
            errors=[str(e) for e in data["errors"]],
            cpu=float(data["cpu"]),
        )

    def _stderr_tail(self, index: int) -> str:
        stderr = self._stderr[index]
        if stderr.closed:
            return "(stderr gone)"
        stderr.seek(0)
        text = stderr.read().decode(errors="replace").strip()
        return text[-2000:] or "(no output)"
