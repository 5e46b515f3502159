"""Handler transactions per second on a service's PostgreSQL database: which driver, at what cost.

A choreographed handler's local transaction is: the inbox insert (is this a first delivery?),
the service's own row, the outbox row, commit. This measures that transaction, 16 at a time,
each on a connection of its own, on the same server in the same run:

- **asyncpg**: ``BEGIN``, three statements, ``COMMIT``, each a round trip (prepared once
  per connection, as asyncpg does by itself);
- **psycopg 3**: the same statements through psycopg's async connection (prepared after
  a few uses, as psycopg does by itself);
- **psycopg 3, pipelined**: the same, with the statements that need no answer sent without
  waiting (one wait for the inbox's answer, one for the commit): the least psycopg can do;
- **asyncpg, pool**: asyncpg with its pool, a connection taken and given back each time;
- **PostgresDatabase**: sagakit's backend itself (asyncpg, a pool of 16), through
  ``transaction()``, ``first_delivery`` and ``enqueue``;

and variants that price two of the backend's choices: without the ``NOTIFY`` each
transaction sends (PostgreSQL commits notifying transactions one at a time), raw and as
``PostgresDatabase.open(..., notify=False)``; and the event in a ``jsonb`` column rather
than ``text``. Throughput on a small machine swings with the disk's flush times, so every
scenario runs once a round, over several rounds, and CPU per transaction (this process's
and the server's) is shown beside it: it says what each driver costs more steadily.

Run it with ``.venv/bin/python -m benchmarks.local_database [--quick]``; every measurement
gets a schema of its own, dropped afterwards, and checks that every transaction committed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import psycopg

from benchmarks.pg_db import (
    Connection,
    connect,
    cpu_between,
    cpu_sample,
    drop_schema,
    server_url,
    with_query,
)
from sagakit.bus import Event
from sagakit.choreography.postgres import TABLES, PostgresDatabase

CONCURRENCY = 16
OWN_TABLE = "CREATE TABLE IF NOT EXISTS bench_own (id bigint GENERATED ALWAYS AS IDENTITY"
OWN_TABLE += " PRIMARY KEY, order_id text NOT NULL, amount integer NOT NULL);"
INBOX = """INSERT INTO sagakit_inbox (consumer, event_id, processed_at)
VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"""
OWN = "INSERT INTO bench_own (order_id, amount) VALUES ($1, $2)"
OUTBOX = """INSERT INTO sagakit_outbox (stream, correlation_id, event, created_at)
VALUES ($1, $2, $3, $4)"""
NOTIFYING = f"WITH added AS ({OUTBOX} RETURNING id) SELECT pg_notify($5, '') FROM added"


@dataclass(frozen=True, slots=True)
class Size:
    warmup: int
    transactions: int
    runs: int


FULL = Size(warmup=300, transactions=3000, runs=7)
QUICK = Size(warmup=50, transactions=300, runs=1)


@dataclass(frozen=True, slots=True)
class Work:
    """What one handler transaction writes."""

    event_id: str
    order_id: str
    emitted: Event

    @property
    def event(self) -> str:
        return self.emitted.to_json().decode()

    @classmethod
    def new(cls) -> Work:
        order = f"order-{uuid.uuid4().hex[:12]}"
        emitted = Event.new(
            "PaymentCompleted",
            {"order_id": order, "amount_cents": 4200, "card": "**** 4242", "items": 3},
            source="payments",
            correlation_id=order,
        )
        return cls(uuid.uuid4().hex, order, emitted)


Handler = Callable[[Work], Awaitable[None]]
"""One handler transaction on a worker's own connection."""


def _psycopg(sql: str) -> str:
    """asyncpg's ``$n`` placeholders as psycopg's ``%s`` (each used once, in order)."""
    for n in range(9, 0, -1):
        sql = sql.replace(f"${n}", "%s")
    return sql


async def asyncpg_workers(
    server: str, schema: str, notify: bool = True
) -> tuple[list[Handler], Closer]:
    conns = [await connect(server, schema) for _ in range(CONCURRENCY)]
    channel = f"sagakit_outbox_{schema}"

    def handler(conn: Connection) -> Handler:
        async def handle(work: Work) -> None:
            async with conn.transaction():
                await conn.execute(INBOX, "payments", work.event_id, time.time())
                await conn.execute(OWN, work.order_id, 4200)
                row = ("orders", work.order_id, work.event, time.time())
                if not notify:
                    await conn.execute(OUTBOX, *row)
                else:
                    await conn.execute(NOTIFYING, *row, channel)

        return handle

    async def close() -> None:
        await asyncio.gather(*(conn.close() for conn in conns))

    return [handler(conn) for conn in conns], close


async def asyncpg_pool_workers(server: str, schema: str) -> tuple[list[Handler], Closer]:
    """asyncpg's own pool: a connection taken and given back per transaction."""
    pool = await asyncpg.create_pool(
        server,
        min_size=CONCURRENCY,
        max_size=CONCURRENCY,
        server_settings={"search_path": f'"{schema}"'},
        reset=_nothing,
    )
    channel = f"sagakit_outbox_{schema}"

    async def handle(work: Work) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(INBOX, "payments", work.event_id, time.time())
            await conn.execute(OWN, work.order_id, 4200)
            await conn.execute(NOTIFYING, "orders", work.order_id, work.event, time.time(), channel)

    return [handle] * CONCURRENCY, pool.close


async def _nothing(conn: object) -> None:
    """A pool reset that sends nothing, as sagakit's (a transaction leaves no state)."""


async def psycopg_workers(
    server: str, schema: str, pipelined: bool = False
) -> tuple[list[Handler], Closer]:
    options = f"-c search_path={schema}"
    conns = [
        await psycopg.AsyncConnection.connect(server, options=options) for _ in range(CONCURRENCY)
    ]
    channel = f"sagakit_outbox_{schema}"
    inbox, own, notifying = _psycopg(INBOX), _psycopg(OWN), _psycopg(NOTIFYING)

    def handler(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> Handler:
        async def handle(work: Work) -> None:
            async with conn.transaction():
                cur = await conn.execute(inbox, ("payments", work.event_id, time.time()))
                assert cur.rowcount == 1
                await conn.execute(own, (work.order_id, 4200))
                row = ("orders", work.order_id, work.event, time.time(), channel)
                await conn.execute(notifying, row)

        async def handle_pipelined(work: Work) -> None:
            async with conn.pipeline() as pipeline, conn.transaction():
                cur = await conn.execute(inbox, ("payments", work.event_id, time.time()))
                await pipeline.sync()  # the handler needs this answer before it goes on
                assert cur.rowcount == 1
                await conn.execute(own, (work.order_id, 4200))
                row = ("orders", work.order_id, work.event, time.time(), channel)
                await conn.execute(notifying, row)

        return handle_pipelined if pipelined else handle

    async def close() -> None:
        await asyncio.gather(*(conn.close() for conn in conns))

    return [handler(conn) for conn in conns], close


async def sagakit_workers(
    server: str, schema: str, notify: bool = True
) -> tuple[list[Handler], Closer]:
    url = with_query(server, schema=schema, pool=str(CONCURRENCY))
    db = await PostgresDatabase.open(url, tables=OWN_TABLE, notify=notify)

    async def handle(work: Work) -> None:
        async with db.transaction() as tx:
            assert await tx.first_delivery("payments", work.event_id)
            await tx.connection.execute(OWN, work.order_id, 4200)
            await tx.enqueue("orders", work.emitted)

    return [handle] * CONCURRENCY, db.close


Closer = Callable[[], Awaitable[None]]


async def drive(handlers: Sequence[Handler], works: list[Work]) -> float:
    """Run ``works`` through the handlers, each taking the next when done; seconds taken."""
    queue = iter(works)

    async def worker(handle: Handler) -> None:
        for work in queue:
            await handle(work)

    start = time.perf_counter()
    await asyncio.gather(*(worker(handle) for handle in handlers))
    return time.perf_counter() - start


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed batch: transactions/s, and CPU microseconds per transaction spent by this
    process (the driver, the event loop, sagakit) and by the server's processes."""

    rate: float
    client_us: float
    server_us: float


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    samples: list[Sample]

    @property
    def median(self) -> float:
        return statistics.median(s.rate for s in self.samples)

    @property
    def client_us(self) -> float:
        return statistics.median(s.client_us for s in self.samples)

    @property
    def server_us(self) -> float:
        return statistics.median(s.server_us for s in self.samples)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    open_workers: Opener
    jsonb: bool = False
    """The outbox's event column is ``jsonb`` instead of ``text``."""


async def one_run(scenario: Scenario, server: str, schema: str, size: Size) -> Sample:
    """Open the scenario's connections, warm them up, time one batch."""
    handlers, close = await scenario.open_workers(server, schema)
    try:
        await drive(handlers, [Work.new() for _ in range(size.warmup)])
        works = [Work.new() for _ in range(size.transactions)]
        gc.collect()
        before = cpu_sample()
        seconds = await drive(handlers, works)
        used = cpu_between(before, cpu_sample())
    finally:
        await close()
    per_tx = 1e6 / size.transactions
    return Sample(size.transactions / seconds, used.bench * per_tx, used.server * per_tx)


async def measure_all(scenarios: Sequence[Scenario], size: Size) -> list[Figure]:
    """Every scenario once a round, ``size.runs`` rounds, so that whatever else the machine
    does drifts over all of them alike; each has a schema of its own, checked at the end
    for every row it should hold, then dropped."""
    server = server_url()
    schemas = [f"bench_outbox_{uuid.uuid4().hex[:12]}" for _ in scenarios]
    samples: list[list[Sample]] = [[] for _ in scenarios]
    try:
        for scenario, schema in zip(scenarios, schemas, strict=True):
            await _create_tables(server, schema, scenario.jsonb)
        for _ in range(size.runs):
            for n, (scenario, schema) in enumerate(zip(scenarios, schemas, strict=True)):
                samples[n].append(await one_run(scenario, server, schema, size))
                print(f"  {scenario.name}: {samples[n][-1]}", file=sys.stderr)
        for schema in schemas:
            await _check_rows(server, schema, size.runs * (size.warmup + size.transactions))
    finally:
        for schema in schemas:
            await drop_schema(server, schema)
    return [Figure(s.name, found) for s, found in zip(scenarios, samples, strict=True)]


Opener = Callable[[str, str], Awaitable[tuple[list[Handler], Closer]]]
"""Opens the workers of one driver on (server URL, schema)."""


async def _create_tables(server: str, schema: str, jsonb: bool) -> None:
    tables = TABLES.replace("event text", "event jsonb") if jsonb else TABLES
    conn = await connect(server)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}";')
        await conn.execute(tables + OWN_TABLE)
    finally:
        await conn.close()


async def _check_rows(server: str, schema: str, expected: int) -> None:
    conn = await connect(server, schema)
    try:
        for table in ("sagakit_inbox", "bench_own", "sagakit_outbox"):
            found = await conn.fetchval(f"SELECT count(*) FROM {table}")
            if found != expected:
                raise AssertionError(f"{table}: {found} rows, {expected} expected")
    finally:
        await conn.close()


async def _asyncpg_without_notify(server: str, schema: str) -> tuple[list[Handler], Closer]:
    return await asyncpg_workers(server, schema, notify=False)


async def _sagakit_without_notify(server: str, schema: str) -> tuple[list[Handler], Closer]:
    return await sagakit_workers(server, schema, notify=False)


async def _psycopg_pipelined(server: str, schema: str) -> tuple[list[Handler], Closer]:
    return await psycopg_workers(server, schema, pipelined=True)


SCENARIOS = (
    Scenario("asyncpg", asyncpg_workers),
    Scenario("psycopg 3", psycopg_workers),
    Scenario("psycopg 3, pipelined", _psycopg_pipelined),
    Scenario("asyncpg, pool", asyncpg_pool_workers),
    Scenario("PostgresDatabase (asyncpg pool)", sagakit_workers),
    Scenario("asyncpg, no NOTIFY", _asyncpg_without_notify),
    Scenario("PostgresDatabase, notify=False", _sagakit_without_notify),
    Scenario("asyncpg, event as jsonb", asyncpg_workers, jsonb=True),
)


def markdown(figures: list[Figure]) -> str:
    base = figures[0].median
    lines = [
        f"Handler transactions/s, {CONCURRENCY} at once (inbox + own row + outbox + commit),",
        "median of the runs; CPU per transaction of this process and of the server:",
        "",
        "| Driver | tx/s | runs | vs asyncpg | client CPU/tx | server CPU/tx |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for f in figures:
        runs = ", ".join(f"{s.rate:,.0f}" for s in f.samples)
        lines.append(
            f"| {f.name} | {f.median:,.0f} | {runs} | {f.median / base:.2f}"
            f" | {f.client_us:,.0f} µs | {f.server_us:,.0f} µs |"
        )
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.local_database")
    parser.add_argument("--quick", action="store_true", help="a short run, to see it works")
    args = parser.parse_args(argv)
    print(markdown(asyncio.run(measure_all(SCENARIOS, QUICK if args.quick else FULL))))
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
