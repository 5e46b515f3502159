"""The PostgreSQL section of the report: printed to the console and appended to the markdown.

As in :mod:`benchmarks.report`, every ratio and every target verdict is computed here from
the measured medians, never typed in, so the document cannot claim what the run did not
show; a scenario whose checks failed meets no target.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from benchmarks.dbos_baseline import POSTGRES
from benchmarks.measure import Measurement, Mode
from benchmarks.pg_ceiling import (
    APPEND_COPY,
    APPEND_SAGAS,
    APPEND_UNNEST,
    GROUP_COMMIT,
    RECORDS_PER_SAGA,
    SAGAS_PER_STAGE,
    WRITES_PER_SAGA,
)
from benchmarks.postgres import EXPECTED, STORE_POOL, PgResults, SagaPath, Throughput
from sagakit.store.postgres import MAX_BATCH

TIMES = "\u00d7"
DASH = "\u2013"
TITLE = "PostgreSQL saga log and many workers"

SAGAS_TARGET = 5_000.0
DBOS_TARGET = 30.0
CEILING_TARGET = 0.5
LATENCY_TARGET_MS = 5.0
BASELINE_TARGETS = {SagaPath.SUCCESS: 2.0, SagaPath.COMPENSATION: 1.5}
"""How many times the baseline's figure each path must reach, in the same run."""
UNNEST_TARGET = 0.2
CPU_TARGET_MS = 0.5
CPU_FLEET = (4, 64)
"""The fleet whose CPU per saga is held to :data:`CPU_TARGET_MS`."""

THROUGHPUT_COLUMNS = (
    f"Workers {TIMES} concurrency",
    "Path",
    "Sagas per run",
    "Sagas/s (median)",
    f"Min{DASH}max",
    f"{TIMES} DBOS on PostgreSQL (same mode)",
    f"{TIMES} append-only unnest ceiling",
    "Starting took (s)",
    "CPU ms/saga: workers / PostgreSQL / bench = all",
    "Cores busy",
    "Final status",
    "Whole in log",
)
BASELINE_COLUMNS = (
    f"Workers {TIMES} concurrency",
    "Path",
    "Baseline sagas/s (median)",
    "This code sagas/s (median)",
    f"{TIMES} baseline",
    "Baseline CPU ms/saga: workers / PostgreSQL / bench = all",
    "This code CPU ms/saga",
)
DBOS_COLUMNS = (
    "Database",
    "Mode",
    "Workflows per run",
    "Workflows/s (median)",
    f"Min{DASH}max",
    "Completed",
    "SUCCESS in DBOS",
    "CPU ms/workflow (DBOS processes)",
)
LATENCY_COLUMNS = (
    "Measured",
    "How",
    "Sagas",
    "p50 (ms)",
    "p95 (ms)",
    "Max (ms)",
    "Mean (ms)",
    "Completed",
)
CEILING_COLUMNS = (
    "Connections",
    "Single-row commits/s",
    "Store-shaped: sagas/s bound",
    "Append-only unnest: sagas/s",
    "Append-only COPY: sagas/s",
    "Rows checked",
)
"""Each rate is the median, with the runs' min{DASH}max after it."""


@dataclass(frozen=True, slots=True)
class Target:
    goal: str
    measured: str
    met: bool


def best_concurrent(results: PgResults) -> Throughput | None:
    """The success-path fleet with the highest median among those driving more than one
    saga per worker: "the concurrent success path" the targets speak of."""
    candidates = [
        t for t in results.throughput if t.path is SagaPath.SUCCESS and t.concurrency > 1 and t.ok
    ]
    return max(candidates, key=lambda t: t.measurement.median, default=None)


def dbos_measurement(
    results: PgResults, mode: Mode = Mode.CONCURRENT, database: str = POSTGRES
) -> Measurement | None:
    for dbos in results.dbos:
        if dbos.database == database and dbos.ok:
            return dbos.find(mode)
    return None


def dbos_ratio(results: PgResults, throughput: Throughput) -> float | None:
    """Against DBOS in the same mode: one saga per worker at a time against DBOS running
    one workflow at a time, concurrent fleets against DBOS's concurrent run."""
    mode = Mode.SEQUENTIAL if throughput.concurrency == 1 else Mode.CONCURRENT
    dbos = dbos_measurement(results, mode)
    if dbos is None or not throughput.ok:
        return None
    return throughput.measurement.median / dbos.median


def ceiling_ratio(results: PgResults, throughput: Throughput) -> float | None:
    """Sagas/s over the append-only ``unnest`` ceiling: how near the log's own limit."""
    ceilings = results.ceilings
    if ceilings is None or not ceilings.ok or not throughput.ok:
        return None
    return throughput.measurement.median / ceilings.unnest_sagas_rate()


def targets(results: PgResults) -> list[Target]:
    best = best_concurrent(results)
    rate = best.measurement.median if best else 0.0
    where = f" ({best.name})" if best else " (no concurrent success run passed its checks)"
    judged = [
        Target(
            f"concurrent success path ≥ {SAGAS_TARGET:,.0f} sagas/s",
            f"{rate:,.0f} sagas/s{where}",
            best is not None and rate >= SAGAS_TARGET,
        )
    ]
    dbos = dbos_measurement(results)
    if best is not None and dbos is not None:
        times = rate / dbos.median
        judged.append(
            Target(
                f"≥ {DBOS_TARGET:g}{TIMES} DBOS on PostgreSQL, same run",
                f"{times:,.1f}{TIMES} ({rate:,.0f} vs {dbos.median:,.1f} workflows/s, "
                f"{results.settings.dbos_processes} {TIMES} {results.settings.dbos_width}"
                " concurrent)",
                times >= DBOS_TARGET,
            )
        )
    else:
        judged.append(
            Target(f"≥ {DBOS_TARGET:g}{TIMES} DBOS on PostgreSQL, same run", "not measured", False)
        )
    ceilings = results.ceilings
    if best is not None and ceilings is not None and ceilings.ok:
        bound = ceilings.group_sagas_rate()
        share = rate / bound
        judged.append(
            Target(
                f"≥ {CEILING_TARGET:.0%} of the group-commit ceiling",
                f"{share:.0%} ({rate:,.0f} of {bound:,.0f} sagas/s)",
                share >= CEILING_TARGET,
            )
        )
    else:
        judged.append(
            Target(f"≥ {CEILING_TARGET:.0%} of the group-commit ceiling", "not measured", False)
        )
    judged += baseline_targets(results)
    judged.append(unnest_target(results, best))
    judged.append(cpu_target(results))
    engine = results.latency[0] if results.latency else None
    p50 = engine.percentile(50) * 1000 if engine else math.nan
    judged.append(
        Target(
            f"one saga, sequential: p50 < {LATENCY_TARGET_MS:g} ms (Engine.run)",
            f"{p50:.2f} ms",
            engine is not None and engine.ok and p50 < LATENCY_TARGET_MS,
        )
    )
    return judged


def baseline_targets(results: PgResults) -> list[Target]:
    """Each path of the 4-worker fleet against the baseline ref's, same run."""
    judged = []
    for path, times in BASELINE_TARGETS.items():
        goal = f"{path} path ≥ {times:g}{TIMES} the baseline's, same run"
        pair = _baseline_pair(results, (*CPU_FLEET, path))
        if pair is None:
            judged.append(Target(goal, "not measured (make bench BASELINE=REF)", False))
            continue
        old, new = pair
        ratio = new.measurement.median / old.measurement.median
        measured = (
            f"{ratio:.2f}{TIMES} ({new.measurement.median:,.0f} vs "
            f"{old.measurement.median:,.0f} sagas/s, {results.baseline})"
        )
        judged.append(Target(goal, measured, ratio >= times))
    return judged


def unnest_target(results: PgResults, best: Throughput | None) -> Target:
    goal = f"≥ {UNNEST_TARGET:g}{TIMES} the append-only unnest ceiling"
    ratio = None if best is None else ceiling_ratio(results, best)
    if best is None or ratio is None or results.ceilings is None:
        return Target(goal, "not measured", False)
    bound = results.ceilings.unnest_sagas_rate()
    measured = f"{ratio:.2f}{TIMES} ({best.measurement.median:,.0f} of {bound:,.0f} sagas/s)"
    return Target(goal, measured, ratio >= UNNEST_TARGET)


def cpu_target(results: PgResults) -> Target:
    workers, concurrency = CPU_FLEET
    goal = f"CPU ≤ {CPU_TARGET_MS:g} ms a saga in all ({workers} {TIMES} {concurrency}, success)"
    fleet = _find(results.throughput, (workers, concurrency, SagaPath.SUCCESS))
    per = None if fleet is None else fleet.cpu_ms_per_saga()
    if fleet is None or per is None:
        return Target(goal, "not measured", False)
    return Target(goal, f"{per:.2f} ms ({cpu_per_saga(fleet)})", per <= CPU_TARGET_MS)


def _baseline_pair(
    results: PgResults, key: tuple[int, int, SagaPath]
) -> tuple[Throughput, Throughput] | None:
    old, new = _find(results.baseline_throughput, key), _find(results.throughput, key)
    if old is None or new is None or not (old.ok and new.ok):
        return None
    return old, new


def _find(runs: list[Throughput], key: tuple[int, int, SagaPath]) -> Throughput | None:
    return next((t for t in runs if (t.workers, t.concurrency, t.path) == key), None)


# -- rows -------------------------------------------------------------------------------------


def throughput_rows(results: PgResults) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for t in results.throughput:
        m = t.measurement
        cpu = t.median_cpu
        busy = "—" if cpu is None or not m.ok else f"{cpu.busy:.0%}"
        dbos = dbos_ratio(results, t)
        ceiling = ceiling_ratio(results, t)
        rows.append(
            (
                t.name,
                str(t.path),
                _sizes(m),
                f"{m.median:,.0f}" if t.ok else f"{m.median:,.0f} (FAILED)",
                _spread(m),
                "—" if dbos is None else f"{dbos:,.1f}{TIMES}",
                "—" if ceiling is None else f"{ceiling:.2f}{TIMES}",
                ", ".join(f"{s:.2f}" for s in t.start_seconds) or "—",
                cpu_per_saga(t),
                busy,
                f"{m.completed:,}/{m.sagas:,} {EXPECTED[t.path].status}",
                f"{m.logged or 0:,}/{m.sagas:,}",
            )
        )
    return rows


def _sizes(m: Measurement) -> str:
    """Sagas per timed run: two sizes where a fleet was measured twice (its warm-ups differ)."""
    return ", ".join(f"{size:,}" for size in dict.fromkeys(run.sagas for run in m.runs))


def cpu_per_saga(t: Throughput) -> str:
    """Milliseconds of CPU per saga in the median run: workers / server / bench = all."""
    cpu = t.median_cpu
    if cpu is None or not t.measurement.ok:
        return "—"
    sagas = t.measurement.runs[t.median_run].sagas
    split = " / ".join(f"{1000 * seconds / sagas:.2f}" for seconds in cpu.parts)
    return f"{split} = {1000 * sum(cpu.parts) / sagas:.2f}"


def baseline_rows(results: PgResults) -> list[tuple[str, ...]]:
    """Each baseline fleet beside the same fleet of this code, measured around it (A B B A:
    see :func:`benchmarks.postgres.run_postgres`)."""
    rows: list[tuple[str, ...]] = []
    for old in results.baseline_throughput:
        new = _find(results.throughput, (old.workers, old.concurrency, old.path))
        if new is None:
            continue
        both = old.ok and new.ok
        ratio = new.measurement.median / old.measurement.median if both else math.nan
        rows.append(
            (
                new.name,
                str(new.path),
                _rate(old),
                _rate(new),
                f"{ratio:.2f}{TIMES}" if both else "—",
                cpu_per_saga(old),
                cpu_per_saga(new),
            )
        )
    return rows


def _rate(t: Throughput) -> str:
    return f"{t.measurement.median:,.0f}" if t.ok else f"FAILED: {'; '.join(t.problems)[:200]}"


def dbos_rows(results: PgResults) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for dbos in results.dbos:
        if dbos.failure is not None:
            rows.append((dbos.database, "—", "—", "not run", "—", "—", "—", dbos.failure))
            continue
        for m in dbos.measurements:
            cpu = dbos.cpu.get(m.mode, ())
            per = statistics.median(cpu) / m.runs[0].sagas * 1000 if cpu else math.nan
            processes = results.settings.dbos_processes if dbos.database == POSTGRES else 1
            rows.append(
                (
                    f"{dbos.database}, {processes} process(es)",
                    _mode(m.mode, results.settings.dbos_width),
                    f"{m.runs[0].sagas:,}",
                    f"{m.median:,.1f}",
                    _spread(m, ".1f"),
                    f"{m.completed:,}/{m.sagas:,}",
                    f"{m.logged or 0:,}/{m.sagas:,}",
                    f"{per:.2f}",
                )
            )
    return rows


def latency_rows(results: PgResults) -> list[tuple[str, ...]]:
    return [
        (
            lat.name,
            lat.how,
            f"{len(lat.samples):,}",
            f"{lat.percentile(50) * 1000:.2f}",
            f"{lat.percentile(95) * 1000:.2f}",
            f"{max(lat.samples, default=math.nan) * 1000:.2f}",
            f"{1000 * sum(lat.samples) / max(len(lat.samples), 1):.2f}",
            f"{lat.completed:,}/{len(lat.samples):,}",
        )
        for lat in results.latency
    ]


def ceiling_rows(results: PgResults) -> list[tuple[str, ...]]:
    ceilings = results.ceilings
    if ceilings is None:
        return []
    rows: list[tuple[str, ...]] = []
    for count, single in ceilings.single_row.items():
        kinds = (
            (single, 1),
            (ceilings.group_commit[count], WRITES_PER_SAGA),
            (ceilings.append_unnest[count], RECORDS_PER_SAGA),
            (ceilings.append_copy[count], RECORDS_PER_SAGA),
        )
        checked = "all" if all(m.ok for m, _ in kinds) else "MISSING ROWS"
        cells = [_with_spread(m, per) for m, per in kinds]
        rows.append((str(count), *cells, checked))
    return rows


def _with_spread(m: Measurement, per: int) -> str:
    """A ceiling's median over ``per`` (units a saga makes), with its runs' lowest and highest."""
    rates = [r / per for r in m.rates if not math.isnan(r)]
    if not rates:
        return "—"
    return f"{m.median / per:,.0f} ({min(rates):,.0f}{DASH}{max(rates):,.0f})"


def _spread(m: Measurement, spec: str = ",.0f") -> str:
    rates = [r for r in m.rates if not math.isnan(r)]
    if not rates:
        return "—"
    return f"{min(rates):{spec}}{DASH}{max(rates):{spec}}"


def _mode(mode: Mode, width: int) -> str:
    return "sequential" if mode is Mode.SEQUENTIAL else f"{width} concurrent"


# -- text -------------------------------------------------------------------------------------


def facts(results: PgResults) -> list[str]:
    settings = results.settings
    ref = results.baseline.split()[0] if results.baseline else None
    lines = [
        f"- Command: `make bench{f' BASELINE={ref}' if ref else ''}` (installs `.[bench]`, then"
        f" runs `.venv/bin/python -m benchmarks{f' --baseline {ref}' if ref else ''}`): these"
        " figures come from the same invocation as the tables above.",
    ]
    server = results.facts
    if server is not None:
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(server.settings.items()))
        lines.append(f"- Server: PostgreSQL {server.version} at `{results.url}` ({knobs}).")
    load = ", ".join(f"{x:.2f}" for x in results.load) if results.load else "unknown"
    lines += [
        f"- Machine: {os.cpu_count()} cores ({platform.platform()}), shared by PostgreSQL, "
        f"the worker processes and the bench process; load average (1, 5, 15 min) when "
        f"these runs began: {load}, which shows other work on the machine. With 4 workers, "
        "5 Python processes and the server share these cores.",
        f"- Sagas: the order saga of the tables above (three no-op steps, each with its "
        f"compensation); on the compensation path the shipping step refuses, so two "
        f"compensations run. Workers: `python -m benchmarks.pg_worker` processes "
        f"(`sagakit.Worker`, as `sagakit worker` builds it, without its per-saga output), "
        f"`--poll {settings.poll:g}`, default lease, each store with its default pool of "
        f"{STORE_POOL} connections; a fresh schema per scenario.",
        f"- Starting: this process calls `Client.start` in chunks of {settings.chunk:,} "
        f"concurrent calls (the client's store group-commits them) and then polls the count "
        f"of unfinished sagas every 20 ms. A run lasts from before its first start to the "
        f"last saga's final record (`updated_at`), so starting is inside the figure; "
        f"*Starting took* is how long the starts alone took. A warm-up sizes each run to "
        f"about {settings.target_seconds:g} s; the figure is the median of "
        f"{settings.repetitions} runs; of {2 * settings.repetitions} for a fleet also run "
        f"with the baseline's sagakit, which runs twice between two runs of this code's "
        f"(A B B A), each side's figure the median of all its runs.",
    ]
    if settings.quick:
        lines.append(
            "- Quick mode: only 1 worker (concurrency 64), tiny runs, and no DBOS: the "
            "2- and 4-worker runs, concurrency 1 and DBOS are skipped, and no figure means "
            "anything."
        )
    return lines


def ceiling_lines(results: PgResults) -> list[str]:
    ceilings = results.ceilings
    if ceilings is None:
        return []
    best = ceilings.group_best_connections()
    return [
        "*Single-row commits*: each connection loops `INSERT` of one row into "
        "`(id bigserial primary key, at float8)`, one transaction per row, so every row "
        "waits for its WAL flush (concurrent connections share flushes).",
        f"*{GROUP_COMMIT}*: what the saga log's batching could at best achieve with its "
        f"own write shape. Each statement commits {MAX_BATCH} writes (the store's largest "
        "batch) into copies of `sagas` and `saga_log` (`LIKE ... INCLUDING ALL`: same "
        f"columns and indexes): {SAGAS_PER_STAGE} sagas at each of the {WRITES_PER_SAGA} "
        "writes a saga makes under a worker (create with `saga_started`; four appends "
        "inserting their log records, the 8 records of a real run, two of them also "
        "updating the instance's status), with nothing else: no claims, loads, inbox "
        f"reads or engine. Sagas/s bound = writes/s / {WRITES_PER_SAGA}; the best "
        f"connection count ({best}) gives {ceilings.group_sagas_rate():,.0f} sagas/s.",
        f"*{APPEND_UNNEST}* and *{APPEND_COPY}*: the log alone. Each statement appends the "
        f"{RECORDS_PER_SAGA} records of {APPEND_SAGAS} sagas to the copy of `saga_log` "
        "(one `INSERT ... SELECT FROM unnest` of seven arrays, or one binary COPY with "
        f"asyncpg's `copy_records_to_table`): sagas/s = rows/s / {RECORDS_PER_SAGA}; no log "
        "of these records can be appended faster. The throughput table's "
        f"*{TIMES} append-only unnest ceiling* divides by the best unnest figure "
        f"({ceilings.unnest_sagas_rate():,.0f} sagas/s; COPY: "
        f"{ceilings.copy_sagas_rate():,.0f}). The kinds are measured in turn at each "
        "connection count, before the fleets.",
    ]


def print_section(results: PgResults) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(f"\n[bold]{TITLE}[/]")
    if results.error:
        console.print(f"[red]not run: {results.error}[/]", highlight=False)
        return
    for title, columns, rows in _tables(results):
        table = Table(title=title)
        for column in columns:
            table.add_column(column, justify="left" if column == columns[0] else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    if not results.dbos:
        console.print("DBOS was not run (quick mode).")
    for target in targets(results):
        verdict = "[green]met[/]" if target.met else "[red]not met[/]"
        console.print(f"{target.goal}: {target.measured} -> {verdict}", highlight=False)


def _tables(
    results: PgResults,
) -> list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]]:
    tables = [
        ("Throughput (sagas per second)", THROUGHPUT_COLUMNS, throughput_rows(results)),
        (
            f"Against the baseline {results.baseline}, same run, interleaved",
            BASELINE_COLUMNS,
            baseline_rows(results),
        ),
        ("DBOS baseline (same saga)", DBOS_COLUMNS, dbos_rows(results)),
        ("Latency, one saga at a time", LATENCY_COLUMNS, latency_rows(results)),
        ("Database ceilings", CEILING_COLUMNS, ceiling_rows(results)),
    ]
    return [table for table in tables if table[2]]  # quick mode runs no DBOS


def markdown(results: PgResults) -> str:
    lines = [f"## {TITLE}", ""]
    if not results.ok:
        lines += ["> **FAILED**: a scenario below failed its checks or could not run.", ""]
    if results.error:
        lines += [f"Not run: {results.error}", ""]
        return "\n".join(lines) + "\n"
    lines += facts(results)
    for title, columns, rows in _tables(results):
        lines += ["", f"### {title}", "", _md_row(columns), _md_row(tuple("---" for _ in columns))]
        lines += [_md_row(row) for row in rows]
        if title == "Database ceilings":
            for paragraph in ceiling_lines(results):
                lines += ["", paragraph]
    if not results.dbos:
        lines += ["", "DBOS was not run (quick mode)."]
    lines += ["", "### Targets", "", "| Target | Measured (median) | Met? |", "| --- | --- | --- |"]
    for target in targets(results):
        lines.append(_md_row((target.goal, target.measured, "yes" if target.met else "no")))
    lines += ["", HOW_TO_READ]
    return "\n".join(lines) + "\n"


def _md_row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


HOW_TO_READ = """### How to read the PostgreSQL figures

A row of the throughput table is a fleet of worker processes on one path: each worker
claims due sagas (`FOR UPDATE SKIP LOCKED`, the same statement returning each one's log),
drives each with every transition group-committed to PostgreSQL before the next action,
and takes more as slots free up. *Concurrency* is how many sagas one worker drives at once;
concurrency 1 is the sequential case. The figure includes starting the sagas, claiming and
every commit, on one machine whose cores PostgreSQL and every process share: *CPU ms/saga* is
where the cores' time went during the median run (worker processes, all PostgreSQL server
processes, this bench process, from `/proc`), and *Cores busy* is their sum over the
machine's capacity; a row far below 100 % is waiting on round trips or on a serial step,
not on CPU. *Final status* and *Whole in log* are checked after the runs from the log
itself (8 records ending `saga_completed`, or 13 ending `saga_compensated`), and the
workers' own counts must agree; a failed row meets no target. DBOS runs the same three
no-op steps as `@DBOS.step`s in one `@DBOS.workflow`, compensating in an `except` block,
called directly on one event loop (sequentially, or with that many in flight), in a process
of its own with its own database, offline (no Conductor, no OTLP); on PostgreSQL as many
DBOS processes run at once as the largest fleet has workers (each a database of its own),
and their rates are summed run by run, so both sides have the machine's cores; *SUCCESS in
DBOS* counts the workflows DBOS recorded as succeeded. The *DBOS ratio* divides by DBOS on
PostgreSQL in the same mode: its sequential runs for concurrency 1, its concurrent runs
otherwise.
Latency is one saga at a time: `Engine.run` in this process without workers (the saga's
four commits and the engine), and `Client.start` to `Client.result` through one worker,
which also includes waiting for the worker's next poll (idle workers are not notified of
new sagas) and for the notification of the result; *Max* shows any saga whose result
notification was missed (`Client.result` then waits its 30 s re-check)."""
