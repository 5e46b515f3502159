"""The PostgreSQL saga log with many workers: throughput, latency, ceilings and DBOS.

Throughput is measured the way a deployment runs: worker *processes*
(:mod:`benchmarks.pg_fleet`) claim and drive the sagas, and this process only starts them
with :meth:`sagakit.Client.start` and watches the log until every one is terminal. A run's
clock starts before its first start and stops at the last saga's final record, so starting
is inside the figure. Sagas are started in chunks of :attr:`PgSettings.chunk` concurrent
``Client.start`` calls, which the client's store group-commits, so the bench process is
not the bottleneck while the workers are already claiming.

Every scenario has a schema of its own, and after its runs the log is checked: every saga
with the path's final status, every log whole (8 records for success, 13 for a compensated
saga, ending in the right record), and the workers' own counts agreeing, so a run that
lost or skipped work cannot post a number.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sagakit
from benchmarks.dbos_baseline import DbosResult, run_dbos
from benchmarks.measure import Measurement, Mode, Run, sized
from benchmarks.pg_ceiling import Ceilings, measure_ceilings
from benchmarks.pg_db import (
    Connection,
    CpuUse,
    ServerFacts,
    checkpoint,
    connect,
    cpu_between,
    cpu_sample,
    fresh_schema,
    server_facts,
    server_url,
    with_query,
)
from benchmarks.pg_fleet import Fleet, WorkerSummary
from benchmarks.pg_worker import COMPENSATION_ORDER, SUCCESS_ORDER, build_saga
from sagakit import Client, Engine, RecordType, Saga, SagaStatus

STORE_POOL = 10
"""Connections per store: sagakit's default (``?pool=N``), which every worker keeps."""


class SagaPath(StrEnum):
    SUCCESS = "success"
    COMPENSATION = "compensation"


@dataclass(frozen=True, slots=True)
class Expected:
    order: dict[str, Any]
    status: SagaStatus
    records: int
    last: RecordType


EXPECTED = {
    SagaPath.SUCCESS: Expected(SUCCESS_ORDER, SagaStatus.COMPLETED, 8, RecordType.SAGA_COMPLETED),
    SagaPath.COMPENSATION: Expected(
        COMPENSATION_ORDER, SagaStatus.COMPENSATED, 13, RecordType.SAGA_COMPENSATED
    ),
}
"""What every saga of a path must end as: the third step refuses, the first two are undone."""


@dataclass(frozen=True, slots=True)
class PgSettings:
    quick: bool = False
    workers: tuple[int, ...] = (1, 2, 4)
    concurrency: tuple[int, ...] = (1, 64)
    paths: tuple[SagaPath, ...] = (SagaPath.SUCCESS, SagaPath.COMPENSATION)
    repetitions: int = 3
    target_seconds: float = 3.0
    """How long each timed throughput run should last (sized from its warm-up)."""
    warmup_per_slot: int = 10
    """Warm-up sagas per concurrent slot (at least 20 per worker, at most 400 in all): enough
    to open the pools' connections and to size the runs, few enough not to leave a backlog."""
    poll: float = 0.05
    """The workers' ``--poll``: how often an idle worker looks for due sagas."""
    chunk: int = 500
    """``Client.start`` calls awaited together while starting a run's sagas."""
    run_timeout: float = 120.0
    latency_seconds: float = 2.0
    latency_poll: float = 0.005
    ceiling_connections: tuple[int, ...] = (1, 10, 20, 40)
    ceiling_seconds: float = 1.0
    dbos: bool = True
    dbos_width: int = 50
    dbos_processes: int = 4
    """DBOS processes at once on PostgreSQL: as many as the largest fleet has workers, so
    both get the machine's cores (one DBOS process is bound by one core's CPU)."""
    dbos_target_seconds: float = 2.0
    baseline_fleets: tuple[tuple[int, int], ...] = ((4, 64),)
    """The fleets (workers, concurrency) also measured with a baseline ref's sagakit, when
    ``--baseline`` names one: the figure the throughput targets speak of."""

    def warmup(self, workers: int, concurrency: int) -> int:
        return min(400, workers * max(20, self.warmup_per_slot * concurrency))


FULL = PgSettings()
QUICK = PgSettings(
    quick=True,
    workers=(1,),
    concurrency=(64,),
    repetitions=1,
    target_seconds=0.05,
    warmup_per_slot=1,
    latency_seconds=0.05,
    ceiling_connections=(1, 10),
    ceiling_seconds=0.05,
    dbos=False,
    dbos_target_seconds=0.05,
    baseline_fleets=((1, 64),),
)


@dataclass(frozen=True, slots=True)
class Throughput:
    """One fleet on one path: the runs, where the CPU went, and what the workers said."""

    workers: int
    concurrency: int
    path: SagaPath
    measurement: Measurement
    start_seconds: tuple[float, ...]
    """Per timed run: from the first start until every start was committed."""
    cpu: tuple[CpuUse, ...]
    summaries: tuple[WorkerSummary, ...]
    failure: str | None = None

    @property
    def name(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''} {TIMES} {self.concurrency}"

    @property
    def connections(self) -> int:
        return self.workers * STORE_POOL

    @property
    def reported(self) -> int:
        status = EXPECTED[self.path].status.value
        return sum(s.statuses.get(status, 0) for s in self.summaries)

    @property
    def problems(self) -> list[str]:
        found = [self.failure] if self.failure else []
        m = self.measurement
        if m.completed != m.sagas:
            found.append(
                f"{m.sagas - m.completed:,} sagas did not end {EXPECTED[self.path].status}"
            )
        if m.logged != m.sagas:
            found.append(f"{m.sagas - (m.logged or 0):,} logs are not whole")
        for summary in self.summaries:
            if summary.failure:
                found.append(summary.failure)
            found += summary.errors[:3]
        if self.summaries and self.reported != m.sagas:
            found.append(f"the workers reported {self.reported:,} of {m.sagas:,} sagas")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def median_run(self) -> int:
        """The index of the run whose rate is the median (the one the figure is)."""
        rates = self.measurement.rates
        return rates.index(statistics.median_low(rates))

    @property
    def median_cpu(self) -> CpuUse | None:
        """The CPU use of the median run."""
        return self.cpu[self.median_run] if self.cpu else None

    def cpu_ms_per_saga(self) -> float | None:
        """Milliseconds of CPU a saga cost in all, in the median run."""
        cpu = self.median_cpu
        if cpu is None or not self.ok:
            return None
        return 1000 * sum(cpu.parts) / self.measurement.runs[self.median_run].sagas

    def joined(self, again: Throughput) -> Throughput:
        """This fleet's runs and those of the same fleet measured ``again``, as one
        measurement: the figure is then the median of both sets of runs."""
        m, n = self.measurement, again.measurement
        warmups = Run(
            m.warmup.sagas + n.warmup.sagas,
            m.warmup.completed + n.warmup.completed,
            m.warmup.seconds + n.warmup.seconds,
            max(m.warmup.peak, n.warmup.peak),
        )
        logged = None if m.logged is None or n.logged is None else m.logged + n.logged
        failures = [f for f in (self.failure, again.failure) if f]
        return Throughput(
            self.workers,
            self.concurrency,
            self.path,
            Measurement(m.scenario, m.mode, warmups, m.runs + n.runs, logged),
            self.start_seconds + again.start_seconds,
            self.cpu + again.cpu,
            self.summaries + again.summaries,
            "; ".join(failures) or None,
        )


@dataclass(frozen=True, slots=True)
class Latency:
    """One saga at a time: how long each took, end to end."""

    name: str
    how: str
    samples: tuple[float, ...]
    completed: int

    @property
    def ok(self) -> bool:
        return bool(self.samples) and self.completed == len(self.samples)

    def percentile(self, p: int) -> float:
        if len(self.samples) < 2:
            return self.samples[0] if self.samples else float("nan")
        return statistics.quantiles(self.samples, n=100, method="inclusive")[p - 1]


@dataclass(slots=True)
class PgResults:
    settings: PgSettings
    url: str
    facts: ServerFacts | None = None
    ceilings: Ceilings | None = None
    latency: list[Latency] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    dbos: list[DbosResult] = field(default_factory=list)
    baseline: str | None = None
    """The ref (and commit) whose sagakit ran the :attr:`baseline_throughput` fleets."""
    baseline_throughput: list[Throughput] = field(default_factory=list)
    error: str | None = None
    """Why nothing could be measured (no server), if so."""
    load: tuple[float, ...] = ()
    """The machine's load average when the runs began: other work shows here."""

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and (self.ceilings is None or self.ceilings.ok)
            and all(latency.ok for latency in self.latency)
            and all(throughput.ok for throughput in self.throughput)
            and all(throughput.ok for throughput in self.baseline_throughput)
            and all(dbos.ok for dbos in self.dbos)
        )


TIMES = "\u00d7"
POLL = 0.02
"""Seconds between looks at the count of unfinished sagas while a run goes on."""
_UNFINISHED_SQL = """SELECT 1 FROM sagas
    WHERE created_at >= $1 AND status IN ('pending', 'running', 'compensating')
    ORDER BY created_at DESC LIMIT 1"""
"""A row if a saga of the run that began at ``$1`` is unfinished: the newest first, down
``sagas_by_created``, which every schema version has (0.02 ms a look). It runs every
:data:`POLL` seconds on the machine it measures, so it must cost little, and the same for
every version: a count of all unfinished rows scanned the whole table where no index on
the status is left (3.5 ms a look at 24,000 sagas: a twelfth of PostgreSQL's CPU in a
fleet run), and less where the baseline's index on the status was."""
_BATCH_SQL = """SELECT count(*) FILTER (WHERE status = $2), count(*), max(updated_at)
FROM sagas WHERE created_at >= $1"""
_WHOLE_SQL = """SELECT count(*) FROM (
    SELECT saga_id FROM saga_log GROUP BY saga_id
    HAVING count(*) = $1 AND max(seq) = $1 - 1 AND bool_or(type = $2 AND seq = $1 - 1)
) AS whole"""


Beside = Callable[[str, int, int, SagaPath], Awaitable[Throughput]]
"""Runs a fleet scenario with another ref's sagakit (:mod:`benchmarks.pg_baseline`)."""


async def run_postgres(
    settings: PgSettings, beside: Beside | None = None, baseline: str | None = None
) -> PgResults:
    """Every PostgreSQL scenario, then DBOS on the same server and on SQLite.

    With ``beside``, each fleet of :attr:`PgSettings.baseline_fleets` is also run with the
    ``baseline`` ref's sagakit, twice, between two runs of this code's fleet (A B B A); each
    side's figure is the median of all its timed runs, so that both see the same machine
    state: the baseline's fleet gave 3,664 sagas/s in one run here and 2,734 in the next,
    ten minutes later, with nothing changed in it; measured once each, in one order, such
    drift fell on one side of the ratio only.
    """
    url = server_url()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    results = PgResults(settings, url, baseline=baseline, load=load)
    try:
        results.facts = await server_facts(url)
    except Exception as error:  # no server, refused, bad URL: say so in the report
        results.error = f"cannot reach PostgreSQL at {url}: {type(error).__name__}: {error}"
        _progress(results.error)
        return results
    _progress(f"PostgreSQL {results.facts.version} at {url}")
    _progress(f"database ceilings from {settings.ceiling_connections} connections")
    results.ceilings = await measure_ceilings(
        url, settings.ceiling_connections, settings.ceiling_seconds, settings.repetitions
    )
    results.latency.append(await engine_latency(url, settings))
    results.latency.append(await worker_latency(url, settings))
    for workers in settings.workers:
        for concurrency in settings.concurrency:
            for path in settings.paths:
                ours = await throughput(url, settings, workers, concurrency, path)
                if beside is not None and (workers, concurrency) in settings.baseline_fleets:
                    _progress(f"the same with {baseline}'s sagakit, twice, then this code again")
                    first = await beside(url, workers, concurrency, path)
                    second = await beside(url, workers, concurrency, path)
                    results.baseline_throughput.append(first.joined(second))
                    ours = ours.joined(await throughput(url, settings, workers, concurrency, path))
                results.throughput.append(ours)
    if settings.dbos:
        results.dbos = await run_dbos(
            url,
            settings.dbos_width,
            settings.dbos_target_seconds,
            settings.repetitions,
            settings.dbos_processes,
        )
    return results


async def throughput(
    url: str, settings: PgSettings, workers: int, concurrency: int, path: SagaPath
) -> Throughput:
    """A fresh schema and fleet; a warm-up that sizes the runs; the timed runs; the checks."""
    expected = EXPECTED[path]
    saga = build_saga()
    name = f"{workers} {TIMES} {concurrency}, {path}"
    await checkpoint(url)
    async with fresh_schema(url) as schema:
        log_url = with_query(url, schema=schema)
        store = await sagakit.open_store(log_url)  # migrated before the workers race to it
        monitor = await connect(url, schema)
        peak = workers * concurrency
        warmup = runs_none = Run(0, 0, float("nan"), peak)
        runs: list[Run] = []
        starts: list[float] = []
        cpu: list[CpuUse] = []
        failure: str | None = None
        fleet = Fleet(log_url, workers, concurrency, settings.poll)
        try:
            async with fleet:
                client = Client(store)
                warm = settings.warmup(workers, concurrency)
                warmup, _ = await _batch(client, saga, expected, warm, peak, monitor, settings)
                sagas = sized(warmup, settings.target_seconds, floor=2 * peak)
                _progress(f"PostgreSQL {name}: {settings.repetitions} x {sagas:,} sagas")
                for _ in range(settings.repetitions):
                    before = cpu_sample(fleet.pids)
                    run, started = await _batch(
                        client, saga, expected, sagas, peak, monitor, settings
                    )
                    cpu.append(cpu_between(before, cpu_sample(fleet.pids)))
                    runs.append(run)
                    starts.append(started)
                    if run.completed != run.sagas:
                        failure = f"a run ended with {run.sagas - run.completed:,} sagas unfinished"
                        break
        except Exception as error:  # reported in the table, not raised: the others still run
            failure = f"{type(error).__name__}: {error}"
        finally:
            summaries = tuple(await fleet.stop())
            try:
                whole = int(await monitor.fetchval(_WHOLE_SQL, expected.records, expected.last))
            finally:
                await monitor.close()
                await store.close()
    measurement = Measurement(
        f"sagakit + PostgreSQL, {name}", Mode.CONCURRENT, warmup, tuple(runs or [runs_none]), whole
    )
    result = Throughput(
        workers, concurrency, path, measurement, tuple(starts), tuple(cpu), summaries, failure
    )
    if not result.ok:
        _progress(f"PostgreSQL {name} FAILED: {'; '.join(result.problems)}")
    return result


async def _batch(
    client: Client,
    saga: Saga,
    expected: Expected,
    sagas: int,
    peak: int,
    monitor: Connection,
    settings: PgSettings,
) -> tuple[Run, float]:
    """Start ``sagas`` sagas and wait until none is unfinished.

    The run lasts from just before the first start until the last saga's final record
    (``updated_at`` of the latest terminal row: the workers' clock, which is this machine's).
    Also returns how long starting took.
    """
    gc.collect()
    began = time.time()
    clock = time.perf_counter()
    for first in range(0, sagas, settings.chunk):
        count = min(settings.chunk, sagas - first)
        await asyncio.gather(*(client.start(saga, expected.order) for _ in range(count)))
    started = time.perf_counter() - clock
    await _until_none_unfinished(monitor, began, clock + settings.run_timeout)
    row = await monitor.fetchrow(_BATCH_SQL, began, expected.status.value)
    assert row is not None
    ended = row[2] if row[2] is not None else time.time()
    return Run(sagas, int(row[0]), max(ended - began, 1e-9), peak), started


async def _until_none_unfinished(monitor: Connection, began: float, deadline: float) -> None:
    """Poll the log (other processes write it, so there is nothing here to wait on) until
    no saga started since ``began`` is unfinished or the deadline passes; the caller checks
    which."""
    while time.perf_counter() < deadline:
        if not await monitor.fetchval(_UNFINISHED_SQL, began):
            return
        await asyncio.sleep(POLL)


async def engine_latency(url: str, settings: PgSettings) -> Latency:
    """``Engine.run`` on PostgreSQL in this process, one saga at a time, no worker."""
    saga = build_saga()
    async with fresh_schema(url) as schema:
        store = await sagakit.open_store(with_query(url, schema=schema))
        try:
            engine = Engine(store, [saga])
            for _ in range(20):  # the pool's connections and the server's caches warm up
                await engine.run(saga, SUCCESS_ORDER)
            samples: list[float] = []
            completed = 0
            gc.collect()
            end = time.perf_counter() + settings.latency_seconds
            while time.perf_counter() < end or len(samples) < 10:
                began = time.perf_counter()
                result = await engine.run(saga, SUCCESS_ORDER)
                samples.append(time.perf_counter() - began)
                completed += result.status is SagaStatus.COMPLETED
        finally:
            await store.close()
    _progress(f"Engine.run latency: {len(samples):,} sagas")
    return Latency("Engine.run, in this process", "no worker", tuple(samples), completed)


async def worker_latency(url: str, settings: PgSettings) -> Latency:
    """``Client.start`` then ``Client.result``, one saga at a time, through one worker."""
    saga = build_saga()
    samples: list[float] = []
    completed = 0
    async with fresh_schema(url) as schema:
        log_url = with_query(url, schema=schema)
        store = await sagakit.open_store(log_url)
        try:
            async with Fleet(log_url, 1, 1, settings.latency_poll):
                client = Client(store)
                for n in range(1_000_000):
                    began = time.perf_counter()
                    saga_id = await client.start(saga, SUCCESS_ORDER)
                    result = await client.result(saga_id, timeout=30)
                    if n >= 10:  # the first ones warm the worker up
                        samples.append(time.perf_counter() - began)
                        completed += result.status is SagaStatus.COMPLETED
                    if len(samples) >= 10 and sum(samples) >= settings.latency_seconds:
                        break
        finally:
            await store.close()
    _progress(f"start->result latency: {len(samples):,} sagas")
    how = f"1 worker, --poll {settings.latency_poll:g}"
    return Latency("Client.start -> Client.result", how, tuple(samples), completed)


def cores() -> int:
    return os.cpu_count() or 1


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)
