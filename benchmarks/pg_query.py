"""How fast an operator's listing answers on a PostgreSQL log of 100,000 sagas.

The log is written through the store (``Store.create``, group-committed), shaped like a
busy production log: three saga names, mostly completed, a few percent compensated,
needing attention or still running, each with its input and step results. Then each query
an operator types runs, interleaved with its *ceiling*: the bare SQL a hand-written tool
would send for the same rows through the same driver, so the figure says what sagakit's
query layer costs on top of the database. ``sagakit list`` loads and folds the log of every
saga it prints, so the list figures include reading 50 logs.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import sagakit
from benchmarks.pg_db import connect, fresh_schema, server_url, with_query
from sagakit.log import Instance, Record, RecordType, SagaStatus
from sagakit.operations import Query, count, find
from sagakit.store import InstanceFilter, Store

INSTANCES = 100_000
QUICK_INSTANCES = 5_000
RUNS = 21
NAMES = ("order", "trip", "refund")
_MIX = (
    (SagaStatus.COMPLETED, 90),
    (SagaStatus.COMPENSATED, 5),
    (SagaStatus.NEEDS_ATTENTION, 2),
    (SagaStatus.RUNNING, 3),
)
"""Statuses per hundred sagas."""
TARGET_MS = 100.0
"""The issue's bound for ``list --name order --status needs_attention``."""


@dataclass(frozen=True, slots=True)
class QueryFigure:
    what: str
    command: str
    median_ms: float
    p95_ms: float
    ceiling_ms: float | None
    rows: int


@dataclass(frozen=True, slots=True)
class QueryResults:
    instances: int
    figures: list[QueryFigure]
    plan: str
    fill_seconds: float
    cli_ms: float | None
    error: str | None = None

    @property
    def list_figure(self) -> QueryFigure:
        return self.figures[0]


async def run_queries(quick: bool = False) -> QueryResults:
    """Fill a fresh schema and time each query; an unreachable server is reported, not raised."""
    url = server_url()
    total = QUICK_INSTANCES if quick else INSTANCES
    try:
        async with fresh_schema(url, "query") as schema:
            return await _measure(url, schema, total, runs=5 if quick else RUNS)
    except OSError as error:
        return QueryResults(total, [], "", 0.0, None, error=f"PostgreSQL unreachable: {error}")


async def _measure(url: str, schema: str, total: int, runs: int) -> QueryResults:
    log_url = with_query(url, schema=schema)
    store = await sagakit.open_store(log_url)
    raw = await connect(url, schema)
    try:
        started = time.perf_counter()
        await _fill(store, total)
        fill_seconds = time.perf_counter() - started
        await raw.execute("ANALYZE")
        attention = Query(names={"order"}, statuses={SagaStatus.NEEDS_ATTENTION})
        rows_sql = (
            "SELECT * FROM sagas WHERE status = 'needs_attention' AND name = 'order'"
            " ORDER BY created_at DESC, id DESC LIMIT 51"
        )
        target = f"o-{total // 2}"
        cases: list[
            tuple[str, str, Callable[[], Awaitable[int]], Callable[[], Awaitable[int]] | None]
        ] = [
            (
                "list: order sagas needing attention, a page of 50 with their logs",
                "sagakit list --name order --status needs_attention",
                lambda: _found(store, attention),
                lambda: _page_by_hand(raw, rows_sql),
            ),
            (
                "the same rows, without reading their logs",
                "Store.instances(InstanceFilter(...), limit=51)",
                lambda: _rows(
                    store,
                    InstanceFilter(names={"order"}, statuses={SagaStatus.NEEDS_ATTENTION}),
                    51,
                ),
                lambda: _count_rows(raw, rows_sql),
            ),
            (
                "counts per saga and status, whole log",
                "sagakit list --count",
                lambda: _counted(store, Query()),
                lambda: _count_rows(raw, "SELECT name, status, count(*) FROM sagas GROUP BY 1, 2"),
            ),
            (
                "one order by an input field (the saga_log_input GIN index)",
                f"sagakit list --input order_id={target}",
                lambda: _found(store, Query(input={"order_id": target})),
                None,
            ),
            (
                "stuck for 10 minutes, order sagas (folds the log of each unfinished one)",
                "sagakit list --name order --stuck 10m",
                lambda: _found(store, Query(names={"order"}, stuck_for=600)),
                None,
            ),
        ]
        figures = [
            await _time(what, command, ours, ceiling, runs)
            for what, command, ours, ceiling in cases
        ]
        plan = "\n".join(r[0] for r in await raw.fetch("EXPLAIN " + rows_sql))
    finally:
        await raw.close()
        await store.close()
    cli_ms = _cli_ms(log_url)
    return QueryResults(total, figures, plan, fill_seconds, cli_ms)


async def _fill(store: Store, total: int) -> None:
    """``total`` sagas written the way the engine writes them, 2,000 at a time."""
    base = time.time() - 86_400.0
    chunk = 2_000
    for first in range(0, total, chunk):
        batch = range(first, min(first + chunk, total))
        await asyncio.gather(*(store.create(*_saga(n, base + n * 0.5)) for n in batch))


def _saga(n: int, at: float) -> tuple[Instance, list[Record]]:
    name = NAMES[n % 3]
    status = _status(n)
    started = {
        "name": name,
        "version": 1,
        "input": {"order_id": f"o-{n}", "customer_id": f"c-{n % 977}", "total_cents": n % 10_000},
        "deadline_at": None,
        "steps": [{"name": s, "kind": "compensatable"} for s in ("charge", "reserve", "ship")],
    }
    records = [Record(0, RecordType.SAGA_STARTED, at, data=json.dumps(started))]
    for step in ("charge", "reserve", "ship"):
        records.append(Record(len(records), RecordType.STEP_STARTED, at + len(records), step, 1))
        result = json.dumps({f"{step}_id": f"{step[0]}-{n}"})
        records.append(
            Record(len(records), RecordType.STEP_SUCCEEDED, at + len(records), step, 1, result)
        )
    if status is SagaStatus.COMPLETED:
        records.append(Record(len(records), RecordType.SAGA_COMPLETED, at + len(records)))
    elif status is SagaStatus.NEEDS_ATTENTION:
        attention = json.dumps({"reason": "the carrier refused the cancel", "failed": ["ship"]})
        records.append(
            Record(len(records), RecordType.SAGA_NEEDS_ATTENTION, at + len(records), data=attention)
        )
    elif status is SagaStatus.COMPENSATED:
        records.append(Record(len(records), RecordType.SAGA_COMPENSATED, at + len(records)))
    updated = records[-1].at
    return Instance(f"{name}-{n:07}", name, 1, status, at, updated), records


def _status(n: int) -> SagaStatus:
    slot = (n * 37) % 100  # spread evenly, not in runs
    for status, share in _MIX:
        if slot < share:
            return status
        slot -= share
    return SagaStatus.COMPLETED


async def _found(store: Store, query: Query) -> int:
    return len((await find(store, query)).sagas)


async def _counted(store: Store, query: Query) -> int:
    return len(await count(store, query))


async def _rows(store: Store, rows: InstanceFilter, limit: int) -> int:
    return len(await store.instances(rows, limit=limit))


async def _count_rows(raw: object, sql: str) -> int:
    return len(await raw.fetch(sql))  # type: ignore[attr-defined]


async def _page_by_hand(raw: object, rows_sql: str) -> int:
    """A hand-written tool's page: the rows, then every log in one query."""
    rows = await raw.fetch(rows_sql)  # type: ignore[attr-defined]
    ids = [row["id"] for row in rows[:50]]
    await raw.fetch("SELECT * FROM saga_log WHERE saga_id = ANY($1) ORDER BY saga_id, seq", ids)  # type: ignore[attr-defined]
    return len(ids)


async def _time(
    what: str,
    command: str,
    ours: Callable[[], Awaitable[int]],
    ceiling: Callable[[], Awaitable[int]] | None,
    runs: int,
) -> QueryFigure:
    """Median and 95th percentile of ``runs`` timed calls, each beside one of the ceiling."""
    rows = await ours()  # warm the caches and the prepared statements
    if ceiling is not None:
        await ceiling()
    mine, theirs = [], []
    for _ in range(runs):
        mine.append(await _ms(ours))
        if ceiling is not None:
            theirs.append(await _ms(ceiling))
    return QueryFigure(
        what,
        command,
        statistics.median(mine),
        statistics.quantiles(mine, n=20)[-1] if len(mine) >= 2 else mine[0],
        statistics.median(theirs) if theirs else None,
        rows,
    )


async def _ms(call: Callable[[], Awaitable[int]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000.0


def _cli_ms(url: str) -> float | None:
    """Wall time of the command itself, interpreter start-up included (median of 3)."""
    script = Path(sys.executable).with_name("sagakit")
    args = [str(script), "list", "--db", url, "--name", "order", "--status", "needs_attention"]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            return None
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


TITLE = "Operator queries on a PostgreSQL log"


def markdown(results: QueryResults) -> str:
    lines = [f"## {TITLE}", ""]
    if results.error:
        return "\n".join([*lines, f"Not run: {results.error}", ""])
    lines += [
        f"- Log: {results.instances:,} sagas written through `Store.create` in"
        f" {results.fill_seconds:.1f} s (3 names; 90 % completed, 5 % compensated, 2 % needing"
        " attention, 3 % running; 8 records each)",
        f"- Method: each query {RUNS} times after a warm-up, each run beside one of its ceiling"
        " (the bare SQL through asyncpg); median and 95th percentile in milliseconds",
        "",
        "| Query | Command | Median ms | p95 ms | Ceiling ms | x ceiling | Rows |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in results.figures:
        ceiling = "-" if f.ceiling_ms is None else f"{f.ceiling_ms:.2f}"
        ratio = "-" if f.ceiling_ms is None else f"{f.median_ms / f.ceiling_ms:.1f}x"
        cells = [f.what, f"`{f.command}`", f"{f.median_ms:.2f}", f"{f.p95_ms:.2f}"]
        lines.append("| " + " | ".join([*cells, ceiling, ratio, str(f.rows)]) + " |")
    listing = results.list_figure
    met = "met" if listing.median_ms < TARGET_MS else "not met"
    lines += [
        "",
        f"Target: `list --name order --status needs_attention` on {results.instances:,} instances"
        f" under {TARGET_MS:.0f} ms: {listing.median_ms:.1f} ms median, {met}.",
    ]
    if results.cli_ms is not None:
        lines.append(
            f"The whole command as a user runs it, Python start-up and imports included:"
            f" {results.cli_ms:.0f} ms (median of 3)."
        )
    # A list, not a code block: every block in docs/ is an example the docs tests run.
    plan = [f"- `{line.strip()}`" for line in results.plan.splitlines() if line.strip()]
    lines += ["", "Plan of the list's row query (EXPLAIN):", "", *plan, ""]
    return "\n".join(lines) + "\n"
