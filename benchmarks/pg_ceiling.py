"""The database's own limits, measured in the same run as the sagas they bound.

Four ceilings, all with asyncpg straight to the server and no sagakit code on the path:

* **single-row commits**: every connection loops ``INSERT`` of one row into a two-column
  table, each its own transaction (so each waits for its WAL flush). From one connection
  this is the commit latency; from many, PostgreSQL's own WAL flushing already lets
  concurrent commits share a flush.
* **group commit, store-shaped**: what the PostgreSQL saga log's batching could at best
  achieve with its own write shape. Every statement commits
  :data:`sagakit.store.postgres.MAX_BATCH` writes at once, the store's largest batch, against
  copies (``LIKE ... INCLUDING ALL``: same columns, same indexes) of the saga log's two
  tables. Each write is what one of a saga's five store writes does when a worker runs it:
  the client's create inserts the instance row and ``saga_started``; four appends insert that
  write's log records (the eight records of a real run of the benchmark saga, grouped as the
  engine groups them), and the two that change the status update the instance row. Every
  batch carries 50 sagas at each of the five stages, so it completes 50 sagas. Nothing else
  is done: no claims, no loads, no lease renewals, no engine: sagas/s = writes/s / 5.
* **append-only, unnest** and **append-only, COPY**: the log alone, appended as fast as the
  server takes it: each statement inserts the eight records of :data:`APPEND_SAGAS` sagas
  into the copy of ``saga_log`` (one ``INSERT ... SELECT FROM unnest`` of seven arrays, or
  one binary ``COPY``), and nothing else; sagas/s = rows/s / 8. No saga log can append
  its records faster than this, whatever shape its instance rows take.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sagakit
from benchmarks.measure import Measurement, Mode, Run
from benchmarks.pg_db import Connection, connect, fresh_schema, with_query
from benchmarks.pg_worker import SUCCESS_ORDER, build_saga
from sagakit import Engine, MemoryStore, SagaStatus
from sagakit.log import Record
from sagakit.store.postgres import MAX_BATCH

SINGLE_ROW = "single-row commits"
GROUP_COMMIT = "group commit, store-shaped"
APPEND_UNNEST = "append-only, unnest"
APPEND_COPY = "append-only, COPY"
APPEND_SAGAS = 200
"""Sagas whose records one append-only statement carries (1,600 rows): within the
store's batch sizes (up to :data:`MAX_BATCH` writes of one to three records)."""
STAGES = ((0,), (1,), (2, 3), (4, 5), (6, 7))
"""The records each of a saga's five writes carries in worker mode: the client's create
(``saga_started``), the first ``step_started``, then a result with the next start, twice,
then the last result with ``saga_completed``."""
STATUSES = ("pending", "running", "running", "running", "completed")
MOVES = tuple(stage for stage in range(1, len(STATUSES)) if STATUSES[stage] != STATUSES[stage - 1])
"""The stages at which a write changes the status, so the store updates the instance row."""
WRITES_PER_SAGA = len(STAGES)
RECORDS_PER_SAGA = sum(len(stage) for stage in STAGES)
SAGAS_PER_STAGE = MAX_BATCH // WRITES_PER_SAGA
_GENERATIONS = itertools.count()
"""Shared by every connection and measurement, so no two batches make the same saga id."""

_GROUP_SQL = """
WITH created AS (
    INSERT INTO ceiling_sagas (id, name, version, status, created_at, updated_at, due_at)
    SELECT c.id, 'bench_order', 1, 'pending', $4, $4, $4 FROM unnest($1::text[]) AS c (id)
), moved AS (
    UPDATE ceiling_sagas AS s SET status = m.status, updated_at = $4
    FROM unnest($2::text[], $3::text[]) AS m (id, status) WHERE s.id = m.id
)
INSERT INTO ceiling_log (saga_id, seq, type, at, step, attempt, data)
SELECT * FROM unnest($5::text[], $6::integer[], $7::text[], $8::float8[], $9::text[],
                     $10::integer[], $11::text[])
"""

_APPEND_SQL = """
INSERT INTO ceiling_log (saga_id, seq, type, at, step, attempt, data)
SELECT * FROM unnest($1::text[], $2::integer[], $3::text[], $4::float8[], $5::text[],
                     $6::integer[], $7::text[])
"""


@dataclass(frozen=True, slots=True)
class Ceilings:
    """Each ceiling at each connection count measured; a Run counts commits, writes or rows."""

    single_row: dict[int, Measurement]
    group_commit: dict[int, Measurement]
    append_unnest: dict[int, Measurement]
    append_copy: dict[int, Measurement]

    @property
    def ok(self) -> bool:
        kinds = (self.single_row, self.group_commit, self.append_unnest, self.append_copy)
        return all(m.ok for kind in kinds for m in kind.values())

    def single_row_rate(self, connections: int) -> float:
        return self.single_row[connections].median

    def group_sagas_rate(self) -> float:
        """The best sagas/s the store-shaped group commit reached at any connection count."""
        return _best(self.group_commit) / WRITES_PER_SAGA

    def group_best_connections(self) -> int:
        return max(self.group_commit, key=lambda c: self.group_commit[c].median)

    def unnest_sagas_rate(self) -> float:
        """The best sagas/s whose records one ``unnest`` INSERT at a time appends."""
        return _best(self.append_unnest) / RECORDS_PER_SAGA

    def copy_sagas_rate(self) -> float:
        """The best sagas/s whose records one ``COPY`` at a time appends."""
        return _best(self.append_copy) / RECORDS_PER_SAGA


def _best(by_connections: dict[int, Measurement]) -> float:
    return max(m.median for m in by_connections.values())


async def measure_ceilings(
    url: str, connections: tuple[int, ...], seconds: float, repetitions: int
) -> Ceilings:
    """Both ceilings from each number of connections, in a fresh schema dropped afterwards."""
    template = await _saga_records()
    async with fresh_schema(url, "bench_ceiling") as schema:
        store = await sagakit.open_store(with_query(url, schema=schema))  # the log's tables
        await store.close()
        setup = await connect(url, schema)
        try:
            await setup.execute(
                "CREATE TABLE ceiling_rows (id bigserial PRIMARY KEY, at float8 NOT NULL)"
            )
            await setup.execute("CREATE TABLE ceiling_sagas (LIKE sagas INCLUDING ALL)")
            await setup.execute("CREATE TABLE ceiling_log (LIKE saga_log INCLUDING ALL)")
        finally:
            await setup.close()
        loops = (
            (SINGLE_ROW, _single_rows, "ceiling_rows"),
            (GROUP_COMMIT, _group_commits(template), "ceiling_log"),
            (APPEND_UNNEST, _appends(template, _unnest_rows), "ceiling_log"),
            (APPEND_COPY, _appends(template, _copy_rows), "ceiling_log"),
        )
        found: list[dict[int, Measurement]] = [{} for _ in loops]
        for count in connections:  # the kinds interleaved, so each sees the same machine
            for (name, loop, table), measured in zip(loops, found, strict=True):
                measured[count] = await _measure(
                    f"{name}, {count} conn.",
                    url,
                    schema,
                    count,
                    seconds,
                    repetitions,
                    loop,
                    f"SELECT count(*) FROM {table}",
                )
    return Ceilings(*found)


Loop = Callable[[Connection, int, float], Awaitable[tuple[int, int]]]
"""Commit until the deadline: (units counted, rows the table should have gained)."""


async def _measure(
    name: str,
    url: str,
    schema: str,
    count: int,
    seconds: float,
    repetitions: int,
    loop: Loop,
    rows_sql: str,
) -> Measurement:
    """A short warm-up, then timed runs; ``logged`` says whether every row is in the table."""
    conns = [await connect(url, schema) for _ in range(count)]
    try:
        before = int(await conns[0].fetchval(rows_sql))
        expected = 0
        runs = []
        for duration in (min(seconds, 0.3), *([seconds] * repetitions)):
            run, rows = await _timed(conns, loop, duration)
            runs.append(run)
            expected += rows
        found = int(await conns[0].fetchval(rows_sql)) - before
    finally:
        for conn in conns:
            await conn.close()
    warmup, timed = runs[0], tuple(runs[1:])
    total = warmup.sagas + sum(run.sagas for run in timed)
    return Measurement(name, Mode.CONCURRENT, warmup, timed, total if found == expected else 0)


async def _timed(conns: list[Connection], loop: Loop, seconds: float) -> tuple[Run, int]:
    gc.collect()
    start = time.perf_counter()
    deadline = start + seconds
    results = await asyncio.gather(*(loop(conn, i, deadline) for i, conn in enumerate(conns)))
    elapsed = time.perf_counter() - start
    units = sum(r[0] for r in results)
    return Run(units, units, elapsed, len(conns)), sum(r[1] for r in results)


async def _single_rows(conn: Connection, _: int, deadline: float) -> tuple[int, int]:
    """One row per statement, autocommit: one transaction and one WAL flush wait each."""
    commits = 0
    while time.perf_counter() < deadline:
        await conn.execute("INSERT INTO ceiling_rows (at) VALUES ($1)", time.time())
        commits += 1
    return commits, commits


def _group_commits(template: list[Record]) -> Loop:
    async def loop(conn: Connection, _: int, deadline: float) -> tuple[int, int]:
        """Full batches of store-shaped writes; a saga moves one stage per batch."""
        writes = rows = 0
        stages: list[list[str]] = []  # ids of the sagas at each stage, newest first
        while time.perf_counter() < deadline:
            generation = next(_GENERATIONS)
            stages.insert(0, [f"{generation:08d}-{i:03d}" for i in range(SAGAS_PER_STAGE)])
            del stages[WRITES_PER_SAGA:]
            args, logged = _batch(stages, template)
            await conn.execute(_GROUP_SQL, *args)
            writes += sum(len(ids) for ids in stages)
            rows += logged
        return writes, rows

    return loop


Append = Callable[[Connection, list[tuple[Any, ...]]], Awaitable[None]]


def _appends(template: list[Record], append: Append) -> Loop:
    async def loop(conn: Connection, _: int, deadline: float) -> tuple[int, int]:
        """The whole records of :data:`APPEND_SAGAS` new sagas per statement."""
        rows = 0
        while time.perf_counter() < deadline:
            generation = next(_GENERATIONS)
            now = time.time()
            log = [
                (f"{generation:08d}-{i:03d}", r.seq, r.type.value, now, r.step, r.attempt, r.data)
                for i in range(APPEND_SAGAS)
                for r in template
            ]
            await append(conn, log)
            rows += len(log)
        return rows, rows

    return loop


async def _unnest_rows(conn: Connection, log: list[tuple[Any, ...]]) -> None:
    await conn.execute(_APPEND_SQL, *zip(*log, strict=True))


async def _copy_rows(conn: Connection, log: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table("ceiling_log", records=log)


def _batch(stages: list[list[str]], template: list[Record]) -> tuple[list[Any], int]:
    """The statement's arguments for one batch, and how many log rows it inserts."""
    now = time.time()
    moved_ids: list[str] = []
    moved_status: list[str] = []
    log: list[tuple[Any, ...]] = []
    for stage, ids in enumerate(stages):
        if stage in MOVES:
            moved_ids += ids
            moved_status += [STATUSES[stage]] * len(ids)
        records = [template[seq] for seq in STAGES[stage]]
        for saga_id in ids:
            log += [(saga_id, r.seq, r.type.value, now, r.step, r.attempt, r.data) for r in records]
    columns = list(zip(*log, strict=True))
    return [stages[0], moved_ids, moved_status, now, *columns], len(log)


async def _saga_records() -> list[Record]:
    """The eight records of one real run of the benchmark saga, as the log would hold them."""
    store = MemoryStore()
    saga = build_saga()
    result = await Engine(store, [saga]).run(saga, SUCCESS_ORDER)
    stored = await store.load(result.saga_id)
    if result.status is not SagaStatus.COMPLETED or stored is None:
        raise RuntimeError("the benchmark saga did not complete on MemoryStore")
    return stored.records
