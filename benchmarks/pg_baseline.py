"""Another git ref's sagakit measured beside this one: ``python -m benchmarks --baseline REF``.

A claim such as "twice as fast as before" is only honest against the old code measured in
the same run, on the same machine state: figures from another day differ by more than
many an optimisation gains. So the ref's ``src/`` is extracted (``git archive``, once per
commit, under ``.bench-baseline/``) and a PostgreSQL fleet scenario runs in a process of
its own whose ``PYTHONPATH`` puts that ``src/`` before this checkout: its client, its
worker processes (which inherit the path) and the schema they migrate are the ref's,
while the harness (this ``benchmarks`` package, the saga, the checks) is the same for
both, so only sagakit differs. The scenario process prints its
:class:`~benchmarks.postgres.Throughput` as one JSON line.

The harness uses sagakit's public API only (``open_store``, ``Client``, ``Worker``,
``Saga``, ``RecordType``, ``SagaStatus``), so a ref from before a change to the store or
the engine runs it unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sagakit
from benchmarks.measure import Measurement, Mode, Run
from benchmarks.pg_db import CpuUse
from benchmarks.pg_fleet import WorkerSummary
from benchmarks.postgres import FULL, QUICK, SagaPath, Throughput, throughput

ROOT = Path(__file__).resolve().parents[1]
CHECKOUTS = ROOT / ".bench-baseline"
SCENARIO_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Baseline:
    """The ref as asked for, the commit it named, and its extracted ``src/``."""

    ref: str
    commit: str
    src: Path

    @property
    def short(self) -> str:
        return self.commit[:7]


class BaselineError(Exception):
    """The ref cannot be measured: not a commit here, or its tree has no ``src/sagakit``."""


def check_out(ref: str) -> Baseline:
    """Extract ``ref``'s ``src/`` once (kept by commit, so a rerun costs nothing)."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not commit:
        raise BaselineError(f"--baseline {ref}: not a commit of {ROOT}")
    target = CHECKOUTS / commit
    if not (target / "src" / "sagakit").is_dir():
        CHECKOUTS.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CHECKOUTS) as scratch:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", commit, "src"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
            if not (Path(scratch) / "src" / "sagakit").is_dir():
                raise BaselineError(f"--baseline {ref}: {commit[:7]} has no src/sagakit")
            os.replace(scratch, target)
            Path(scratch).mkdir()  # for TemporaryDirectory's clean-up, now an empty one
    return Baseline(ref, commit, target / "src")


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


async def baseline_throughput(
    baseline: Baseline,
    url: str,
    quick: bool,
    workers: int,
    concurrency: int,
    path: SagaPath,
) -> Throughput:
    """The scenario of :func:`benchmarks.postgres.throughput` with the ref's sagakit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(baseline.src), str(ROOT)])}
    args = ["--db", url, "--src", str(baseline.src), "--workers", str(workers)]
    args += ["--concurrency", str(concurrency)]
    args += ["--path", str(path), *(["--quick"] if quick else [])]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.pg_baseline",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SCENARIO_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return _failed(workers, concurrency, path, f"took over {SCENARIO_TIMEOUT:g} s")
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        return _failed(workers, concurrency, path, f"scenario exited {proc.returncode}")
    return decode(json.loads(lines[-1]))


def _failed(workers: int, concurrency: int, path: SagaPath, why: str) -> Throughput:
    none = Run(0, 0, float("nan"), workers * concurrency)
    measurement = Measurement("baseline", Mode.CONCURRENT, none, (none,), 0)
    return Throughput(workers, concurrency, path, measurement, (), (), (), f"baseline: {why}")


def encode(result: Throughput) -> dict[str, Any]:
    return asdict(result)


def decode(data: dict[str, Any]) -> Throughput:
    """The inverse of :func:`encode` (``asdict`` turned tuples into lists)."""
    m = data["measurement"]
    measurement = Measurement(
        m["scenario"],
        Mode(m["mode"]),
        Run(**m["warmup"]),
        tuple(Run(**run) for run in m["runs"]),
        m["logged"],
    )
    return Throughput(
        data["workers"],
        data["concurrency"],
        SagaPath(data["path"]),
        measurement,
        tuple(data["start_seconds"]),
        tuple(CpuUse(**cpu) for cpu in data["cpu"]),
        tuple(WorkerSummary(**summary) for summary in data["summaries"]),
        data["failure"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The scenario process: one fleet scenario, its result as the last line of stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_baseline")
    parser.add_argument("--db", required=True)
    parser.add_argument("--src", type=Path, required=True, help="the baseline's src/")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--path", type=SagaPath, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    imported = Path(sagakit.__file__).resolve()
    if not imported.is_relative_to(args.src.resolve()):  # a figure of the wrong code is worse
        print(f"sagakit was imported from {imported}, not {args.src}", file=sys.stderr)
        return 1
    settings = QUICK if args.quick else FULL
    result = asyncio.run(throughput(args.db, settings, args.workers, args.concurrency, args.path))
    print(json.dumps(encode(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
