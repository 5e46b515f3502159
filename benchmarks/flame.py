"""Where a worker's time goes: a py-spy flame graph of one worker of the PostgreSQL fleet.

The fleet is the throughput scenario's on the success path (:mod:`benchmarks.postgres`):
:data:`WORKERS` worker processes, each driving :data:`CONCURRENCY` sagas, on a fresh schema.
This process keeps about :data:`BACKLOG` sagas unfinished ahead of them, starting them in
chunks with :meth:`sagakit.Client.start`, so the workers never run dry while py-spy samples
one of them; it stops starting once the recording ends and lets the fleet drain before
stopping it, so the schema is dropped with every saga finished.

Two py-spy recorders watch the same worker over the same seconds, both ``--nonblocking`` (the
worker is never paused, and two blocking recorders would fight over stopping it): one writes
the flame graph (SVG), the other the collapsed stacks (``--format raw``), which
:func:`summarize` turns into words: the leaf functions and the modules the samples land in.
py-spy cannot render one from the other, and two runs one after the other would describe
different seconds. The recorders' own CPU is reported, as on a small machine it is not free.

py-spy leaves out the instants the worker sleeps, but not those it waits for a core, so
on a machine with fewer cores than runnable processes a frame can be wide because the worker
is preempted there; :class:`Times` (from ``/proc``) says how much of the time was which, and
:attr:`Sampling.gil` (py-spy's ``--gil``) keeps only samples holding the GIL, which drops the
socket calls and ``epoll`` that release it.

Nothing here raises for a missing py-spy, a refused ptrace or an unreachable server: the
result says why there is no flame graph, in a sentence the report can print.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple
from xml.sax.saxutils import escape

import sagakit
from benchmarks.pg_db import Connection, connect, fresh_schema, server_url, with_query
from benchmarks.pg_fleet import ROOT, Fleet, WorkerSummary
from benchmarks.pg_worker import SUCCESS_ORDER, build_saga
from benchmarks.postgres import FULL
from sagakit import Client, Saga

DEFAULT_OUTPUT = ROOT / "docs" / "images" / "worker-flame.svg"
TITLE = "Where a worker's time goes (py-spy)"
WORKERS = 4
CONCURRENCY = 64
RATE = 250
"""Samples per second: fine enough for a 5-10 s recording to show the engine's own frames."""
DEFAULT_SECONDS = 10.0
WARMUP_SECONDS = 1.5
"""Sagas flow this long before sampling starts: the pools are open, the caches warm."""
BACKLOG = 1_000
"""Unfinished sagas kept ahead of the fleet: a few tenths of a second of its work."""
POLL = 0.02
DRAIN_TIMEOUT = 60.0
SPY_GRACE = 30.0
"""How long past its duration py-spy may take to write its file before it is killed."""
MAX_SVG_BYTES = 1_500_000
TIMES = "\u00d7"
TOP = 15
_UNFINISHED_SQL = (
    "SELECT count(*) FROM sagas WHERE status IN ('pending', 'running', 'compensating')"
)
_COMPLETED_SQL = "SELECT count(*) FROM sagas WHERE status = 'completed'"
_SAMPLES = re.compile(r"Samples: (\d+) Errors: (\d+)")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass(frozen=True, slots=True)
class Frames:
    """The collapsed stacks in words: where the samples' innermost frames were."""

    samples: int
    by_function: tuple[tuple[str, int], ...]
    """``function (module file)`` of each stack's leaf frame, most samples first."""
    by_module: tuple[tuple[str, int], ...]
    """The leaf frame's file, as py-spy shortens it (``asyncpg/connection.py``)."""


class Times(NamedTuple):
    """A process's CPU time and its time queued for a core, in seconds (Linux ``/proc``).

    py-spy counts a sample whenever the worker is not asleep, which on a machine with more
    runnable processes than cores includes the time it waits for one: a frame can fill the
    graph because the worker is preempted there (a socket write wakes the server up, which
    takes the core), not because it computes. These say how much of the graph is which.
    """

    user: float
    system: float
    waiting: float

    def __sub__(self, earlier: Times) -> Times:
        user, system, waiting = earlier
        return Times(self.user - user, self.system - system, self.waiting - waiting)

    def sentence(self) -> str:
        return (
            f"The worker ran {self.user:.2f} s in user space and {self.system:.2f} s in the"
            f" kernel, and waited {self.waiting:.2f} s for a core."
        )


@dataclass(frozen=True, slots=True)
class Sampling:
    """How py-spy samples: for whole ``seconds`` (its unit), ``rate`` times a second."""

    seconds: int = int(DEFAULT_SECONDS)
    rate: int = RATE
    gil: bool = False
    """Only samples taken while the worker holds the GIL (py-spy's ``--gil``)."""

    def args(self) -> list[str]:
        args = ["--duration", str(self.seconds), "--rate", str(self.rate), "--nonblocking"]
        return [*args, "--gil"] if self.gil else args

    @property
    def title(self) -> str:
        gil = ", holding the GIL" if self.gil else ""
        return (
            f"One sagakit worker of {WORKERS} ({WORKERS} {TIMES} {CONCURRENCY}, PostgreSQL,"
            f" success path): py-spy, {self.seconds} s at {self.rate} samples/s{gil}"
        )


@dataclass(frozen=True, slots=True)
class FlameResult:
    """The flame graph's file and what it holds, or why there is none."""

    svg: Path | None
    sampling: Sampling
    samples: int = 0
    """Samples in the flame graph (py-spy's count: the moments the worker was not idle)."""
    errors: int = 0
    """Samples py-spy could not read (a stack changing under a non-blocking read)."""
    svg_bytes: int = 0
    sagas: int = 0
    """Sagas the whole fleet completed while the worker was sampled."""
    times: Times | None = None
    """Where the sampled worker's seconds went meanwhile (None: ``/proc`` could not say)."""
    spy_cpu: float = 0.0
    """CPU seconds the two py-spy recorders used between them."""
    frames: Frames | None = None
    failure: str | None = None
    problems: tuple[str, ...] = ()
    """What went wrong around a recording that still happened (a worker's errors)."""

    @property
    def ok(self) -> bool:
        return self.failure is None and self.svg is not None

    @property
    def kept(self) -> float:
        """Share of the sampling instants that made a sample (not idle; holding the GIL)."""
        expected = self.sampling.seconds * self.sampling.rate
        return self.samples / expected if expected else 0.0

    def sentence(self) -> str:
        """A few lines' worth for a report: what was recorded, or why nothing was."""
        if self.failure is not None:
            return f"No flame graph: {self.failure}"
        seconds = self.sampling.seconds
        which = "holding the GIL" if self.sampling.gil else "not idle"
        line = (
            f"py-spy sampled one of {WORKERS} workers ({WORKERS} {TIMES} {CONCURRENCY}, success"
            f" path) for {seconds} s at {self.sampling.rate}/s: {self.samples:,} samples"
            f" ({self.kept:.0%} of the instants found it {which}), {self.errors} unreadable;"
            f" the fleet completed {self.sagas:,} sagas meanwhile ({self.sagas / seconds:,.0f}/s)."
        )
        if self.times is not None:
            line += f" {self.times.sentence()}"
        line += f" The two recorders used {self.spy_cpu:.2f} s of CPU."
        if self.svg_bytes > MAX_SVG_BYTES:
            line += f" The SVG is {self.svg_bytes / 1e6:.1f} MB: record fewer seconds."
        return line + "".join(f" {problem}." for problem in self.problems)


@dataclass(slots=True)
class _Spied:
    """What one py-spy run said."""

    returncode: int | None
    samples: int = 0
    errors: int = 0
    output: str = ""


class Feeder:
    """Keeps about :data:`BACKLOG` sagas unfinished until told to stop.

    The monitor connection is the feeder's: :meth:`completed` borrows it under a lock, as an
    asyncpg connection runs one query at a time.
    """

    def __init__(self, client: Client, saga: Saga, monitor: Connection, chunk: int) -> None:
        self._client = client
        self._saga = saga
        self._monitor = monitor
        self._chunk = chunk
        self._lock = asyncio.Lock()
        self.stop = asyncio.Event()
        self.started = 0

    async def run(self) -> None:
        while not self.stop.is_set():
            async with self._lock:
                unfinished = int(await self._monitor.fetchval(_UNFINISHED_SQL))
            if unfinished < BACKLOG:
                starts = (self._client.start(self._saga, SUCCESS_ORDER) for _ in range(self._chunk))
                await asyncio.gather(*starts)
                self.started += self._chunk
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), POLL)

    async def completed(self) -> int:
        async with self._lock:
            return int(await self._monitor.fetchval(_COMPLETED_SQL))

    async def drained(self, timeout: float) -> bool:
        """Whether every started saga finished within ``timeout`` (call after :attr:`stop`)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            async with self._lock:
                if not await self._monitor.fetchval(_UNFINISHED_SQL):
                    return True
            await asyncio.sleep(POLL)
        return False


def find_py_spy() -> str | None:
    """py-spy beside this interpreter (the venv's bin/, even when it is not on PATH), else
    on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


async def record_flame(
    url: str,
    output: Path = DEFAULT_OUTPUT,
    seconds: float = DEFAULT_SECONDS,
    *,
    rate: int = RATE,
    gil: bool = False,
) -> FlameResult:
    """Run the fleet, sample one worker for ``seconds`` (rounded up to whole seconds) and
    write its flame graph to ``output``; the result says why if it could not."""
    sampling = Sampling(max(1, math.ceil(seconds)), rate, gil)
    spy = find_py_spy()
    if spy is None:
        return FlameResult(None, sampling, failure="py-spy is not installed (pip install py-spy)")
    try:
        async with fresh_schema(url, prefix="flame") as schema:
            return await _record(Recorder(spy, output, sampling), url, schema)
    except Exception as error:  # no server, a worker that would not start: say it, do not crash
        return FlameResult(None, sampling, failure=f"{type(error).__name__}: {error}")


async def _record(recorder: Recorder, url: str, schema: str) -> FlameResult:
    """The fleet on a fresh schema, fed while py-spy records; the fleet stopped after."""
    log_url = with_query(url, schema=schema)
    store = await sagakit.open_store(log_url)  # migrated before the workers race to it
    monitor = await connect(url, schema)
    try:
        fleet = Fleet(log_url, WORKERS, CONCURRENCY, FULL.poll)
        async with fleet:
            feeder = Feeder(Client(store), build_saga(), monitor, FULL.chunk)
            result = await _while_fed(feeder, recorder, fleet.pids[0])
        return _with_workers(result, fleet.summaries)
    finally:
        await monitor.close()
        await store.close()


async def _while_fed(feeder: Feeder, recorder: Recorder, pid: int) -> FlameResult:
    """Feed the fleet, warm it up, record; then stop feeding and let the fleet drain."""
    feeding = asyncio.create_task(feeder.run())
    try:
        await asyncio.sleep(WARMUP_SECONDS)
        before, times = await feeder.completed(), process_times(pid)
        result = await recorder.record(pid)
        after, times_after = await feeder.completed(), process_times(pid)
        spent = None if times is None or times_after is None else times_after - times
        result = replace(result, sagas=after - before, times=spent)
    finally:
        feeder.stop.set()
        await feeding  # its failure (a start that raised) is the run's failure
    _progress(f"flame: {feeder.started:,} sagas started; waiting for the fleet to finish them")
    if not await feeder.drained(DRAIN_TIMEOUT):
        problem = f"the fleet had not finished its sagas {DRAIN_TIMEOUT:g} s after the recording"
        result = replace(result, problems=(*result.problems, problem))
    return result


def process_times(pid: int) -> Times | None:
    """Process ``pid``'s CPU seconds so far, user and system, and its seconds on a run queue
    (``/proc/<pid>/stat`` and ``schedstat``); None where those cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        queued = Path(f"/proc/{pid}/schedstat").read_text().split()[1]
    except (OSError, IndexError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    tick = os.sysconf("SC_CLK_TCK")
    return Times(int(fields[11]) / tick, int(fields[12]) / tick, int(queued) / 1e9)


def _with_workers(result: FlameResult, summaries: Iterable[WorkerSummary]) -> FlameResult:
    """The result, with what the workers reported going wrong (the recording stands)."""
    problems = list(result.problems)
    for summary in summaries:
        if summary.failure:
            problems.append(summary.failure)
        problems += summary.errors[:3]
    return replace(result, problems=tuple(problems))


@dataclass(frozen=True, slots=True)
class Recorder:
    """py-spy (the executable), where the SVG goes, and how to sample."""

    spy: str
    output: Path
    sampling: Sampling

    async def record(self, pid: int) -> FlameResult:
        """Record process ``pid``: the SVG moved to :attr:`output` (an old one stays unless
        this one is recorded), and the collapsed stacks summarized."""
        seconds, rate = self.sampling.seconds, self.sampling.rate
        _progress(f"flame: py-spy on worker {pid} for {seconds} s at {rate}/s")
        children = _children_cpu()
        with tempfile.TemporaryDirectory(prefix="sagakit-flame-") as scratch:
            svg, raw = Path(scratch) / "flame.svg", Path(scratch) / "stacks.txt"
            svg_run, raw_run = await asyncio.gather(
                self._py_spy(pid, "flamegraph", svg), self._py_spy(pid, "raw", raw)
            )
            result = self._outcome(svg_run, raw_run, svg, raw)
        # Only the recorders were reaped meanwhile: the workers are still running.
        return replace(result, spy_cpu=_children_cpu() - children)

    async def _py_spy(self, pid: int, form: str, output: Path) -> _Spied:
        """One ``py-spy record`` run, its output read so a refusal can be told in words."""
        args = ["record", "--pid", str(pid), "--format", form, "--output", str(output)]
        proc = await asyncio.create_subprocess_exec(
            self.spy,
            *args,
            *self.sampling.args(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        limit = self.sampling.seconds + SPY_GRACE
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return _Spied(None, output=f"py-spy did not finish within {limit:g} s")
        text = out.decode(errors="replace")
        found = _SAMPLES.search(text)
        samples, errors = (int(found[1]), int(found[2])) if found else (0, 0)
        return _Spied(proc.returncode, samples, errors, text)

    def _outcome(self, svg_run: _Spied, raw_run: _Spied, svg: Path, raw: Path) -> FlameResult:
        """The recording's result from the two py-spy runs and the files they wrote."""
        failed = next((run for run in (svg_run, raw_run) if run.returncode != 0), None)
        if failed is not None or not svg.is_file():
            why = _last_line(failed.output if failed else svg_run.output)
            return FlameResult(None, self.sampling, failure=f"py-spy could not record: {why}")
        frames = summarize(raw.read_text(encoding="utf-8")) if raw.is_file() else None
        self.output.parent.mkdir(parents=True, exist_ok=True)
        text = retitle(svg.read_text(encoding="utf-8"), self.sampling.title)
        self.output.write_text(text, encoding="utf-8")
        size = self.output.stat().st_size
        return FlameResult(
            self.output, self.sampling, svg_run.samples, svg_run.errors, size, frames=frames
        )


def _children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for, so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def retitle(svg: str, title: str) -> str:
    """``svg`` with ``title`` as its heading. py-spy titles its graph with its own command
    line, which names this machine's paths (py-spy's, a scratch file's) and says nothing of
    what was sampled; it has no option to set the title."""
    heading = re.compile(r'(<text id="title"[^>]*>)[^<]*(</text>)')
    return heading.sub(lambda found: found[1] + escape(title) + found[2], svg, count=1)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def summarize(collapsed: str, top: int = TOP) -> Frames:
    """Samples by leaf function and by leaf module, from py-spy's collapsed stacks (one
    ``frame;frame;...;leaf count`` line per distinct stack, ``name (file:line)`` frames)."""
    functions: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        name, file = _split_frame(stack.rsplit(";", 1)[-1])
        functions[f"{name} ({file})"] += int(count)
        modules[file] += int(count)
    total = sum(modules.values())
    return Frames(total, tuple(functions.most_common(top)), tuple(modules.most_common(top)))


def _split_frame(frame: str) -> tuple[str, str]:
    """``(function, file)`` of one collapsed frame, its line number dropped."""
    found = _FRAME.match(frame.strip())
    if found is None:
        return frame.strip(), "?"
    return found["name"], found["file"]


def summary_lines(frames: Frames) -> list[str]:
    """The top frames as two plain-text lists with percentages, for the console."""
    lines = [f"Leaf functions ({frames.samples:,} samples):"]
    lines += [f"  {_share(n, frames.samples)}  {name}" for name, n in frames.by_function]
    lines += ["Leaf modules:"]
    lines += [f"  {_share(n, frames.samples)}  {name}" for name, n in frames.by_module]
    return lines


def _share(count: int, total: int) -> str:
    return f"{count / total:6.1%}" if total else "   n/a"


def markdown(result: FlameResult, report_dir: Path = ROOT / "docs") -> str:
    """The flame graph's paragraph for the report: the image, what it shows, and the top
    frames as two tables (or the sentence saying why there is no graph)."""
    if not result.ok or result.svg is None:
        return result.sentence() + "\n"
    image = Path(os.path.relpath(result.svg, report_dir)).as_posix()
    parts = [f"![One worker's flame graph]({image})", "", result.sentence()]
    if result.frames is not None and result.frames.samples:
        parts += ["", *_frame_table("Leaf function", result.frames.by_function, result.frames)]
        parts += ["", *_frame_table("Leaf module", result.frames.by_module, result.frames)]
    return "\n".join(parts) + "\n"


def _frame_table(title: str, rows: Sequence[tuple[str, int]], frames: Frames) -> list[str]:
    lines = [f"| {title} | Samples | Share |", "| --- | --- | --- |"]
    for name, count in rows:
        lines.append(f"| `{name}` | {count:,} | {count / frames.samples:.1%} |")
    return lines


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flame",
        description="Record a py-spy flame graph of one worker of the PostgreSQL fleet.",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the SVG to write")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--rate", type=int, default=RATE, help="samples per second")
    parser.add_argument(
        "--gil", action="store_true", help="only samples holding the GIL (py-spy --gil)"
    )
    parser.add_argument("--url", default=None, help="the PostgreSQL server (default: the bench's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Record, print what was recorded and the top frames; 1 if there is no flame graph."""
    args = parse(argv)
    result = asyncio.run(
        record_flame(
            args.url or server_url(), args.output, args.seconds, rate=args.rate, gil=args.gil
        )
    )
    print(result.sentence())
    if result.ok:
        print(f"flame graph written to {result.svg} ({result.svg_bytes / 1e3:,.0f} kB)")
    if result.frames is not None:
        print("\n".join(summary_lines(result.frames)))
    return 0 if result.ok else 1


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
