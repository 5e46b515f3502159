"""DBOS as the baseline: the same saga, on the same PostgreSQL server and on SQLite.

This module never imports ``dbos`` (it is the ``bench`` extra, not a dependency): it runs
:mod:`benchmarks.dbos_saga` in a child process per database, and reads back its runs. On
PostgreSQL, DBOS gets a database of its own, ``dbos_bench_<random>``, created here and
dropped afterwards (``WITH (FORCE)``, in case a DBOS thread still holds a connection).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measure import Measurement, Mode, Run
from benchmarks.pg_db import connect, new_name, with_database
from benchmarks.pg_fleet import ROOT

TIMEOUT = 600.0
"""The child's whole run; at DBOS's pace here (tens of workflows per second) a few minutes."""

TIMES = "\u00d7"
POSTGRES = "PostgreSQL"
SQLITE = "SQLite"


@dataclass(frozen=True, slots=True)
class DbosResult:
    """DBOS on one database: its sequential and concurrent measurements, or why none."""

    database: str
    measurements: tuple[Measurement, ...] = ()
    cpu: dict[Mode, tuple[float, ...]] = field(default_factory=dict)
    """The DBOS process's CPU seconds in each timed run."""
    version: str = ""
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and all(m.ok for m in self.measurements)

    def find(self, mode: Mode) -> Measurement | None:
        return next((m for m in self.measurements if m.mode is mode), None)


async def run_dbos(
    url: str, width: int, target: float, repetitions: int, processes: int = 1
) -> list[DbosResult]:
    """DBOS on the PostgreSQL server at ``url``, ``processes`` of them at once (each with a
    fresh database of its own), then one on a SQLite file (a single writer)."""
    if importlib.util.find_spec("dbos") is None:
        why = "the dbos package is not installed (make bench installs '.[bench]')"
        return [DbosResult(POSTGRES, failure=why), DbosResult(SQLITE, failure=why)]
    args = ["--width", str(width), "--target", str(target), "--repetitions", str(repetitions)]
    _progress(f"DBOS on PostgreSQL: {processes} process(es) at once")
    results = [combined(await asyncio.gather(*(_on_postgres(url, args) for _ in range(processes))))]
    with tempfile.TemporaryDirectory(prefix="sagakit-bench-dbos-") as scratch:
        sqlite_url = f"sqlite:///{Path(scratch) / 'dbos.sqlite'}"
        _progress(f"DBOS on SQLite: {sqlite_url}")
        results.append(await _child(SQLITE, [*args, "--db", sqlite_url]))
    return results


async def _on_postgres(url: str, args: list[str]) -> DbosResult:
    database = new_name("dbos_bench")
    base = with_database(url.split("?", 1)[0], database)
    admin = await connect(url.split("?", 1)[0])
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    except Exception as error:
        await admin.close()
        return DbosResult(POSTGRES, failure=f"cannot create database {database}: {error}")
    try:
        return await _child(POSTGRES, [*args, "--db", base])
    finally:
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


async def _child(database: str, args: list[str]) -> DbosResult:
    """Run the DBOS process, offline, and turn its JSON line into measurements."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOS__")}
    env["PYTHONPATH"] = str(ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.dbos_saga",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        return DbosResult(database, failure=f"DBOS did not finish within {TIMEOUT:g} s")
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = err.decode(errors="replace").strip()[-1500:]
        return DbosResult(database, failure=f"DBOS exited {proc.returncode}: {tail}")
    return _parse(database, json.loads(lines[-1]))


def _parse(database: str, data: dict[str, Any]) -> DbosResult:
    measurements = []
    cpu: dict[Mode, tuple[float, ...]] = {}
    for mode in Mode:
        found = data["modes"][mode.value]
        runs = tuple(_run(r) for r in found["runs"])
        measurements.append(
            Measurement(
                f"DBOS + {database}", mode, _run(found["warmup"]), runs, int(found["logged"])
            )
        )
        cpu[mode] = tuple(float(c) for c in found["cpu"])
    return DbosResult(database, tuple(measurements), cpu, str(data["dbos_version"]))


def combined(results: Sequence[DbosResult]) -> DbosResult:
    """DBOS processes that ran side by side, as one: run by run, their rates summed (each
    run's sagas over the seconds that give that rate), their CPU seconds summed."""
    failed = next((r for r in results if r.failure is not None), None)
    if failed is not None or len(results) == 1:
        return failed or results[0]
    measurements = []
    cpu: dict[Mode, tuple[float, ...]] = {}
    for mode in Mode:
        found = [r.find(mode) for r in results]
        each = [m for m in found if m is not None]
        runs = tuple(_summed(runs) for runs in zip(*(m.runs for m in each), strict=True))
        warmup = _summed([m.warmup for m in each])
        logged = sum(m.logged or 0 for m in each)
        name = f"{each[0].scenario} {TIMES} {len(each)}"
        measurements.append(Measurement(name, mode, warmup, runs, logged))
        cpu[mode] = tuple(map(sum, zip(*(r.cpu[mode] for r in results), strict=True)))
    return DbosResult(results[0].database, tuple(measurements), cpu, results[0].version)


def _summed(runs: Sequence[Run]) -> Run:
    sagas = sum(run.sagas for run in runs)
    rate = sum(run.sagas / run.seconds for run in runs)
    completed = sum(run.completed for run in runs)
    return Run(sagas, completed, sagas / rate, sum(run.peak for run in runs))


def _run(values: list[float]) -> Run:
    sagas, completed, seconds, peak = values
    return Run(int(sagas), int(completed), float(seconds), int(peak))


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)
