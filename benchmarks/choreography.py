"""Choreography throughput per broker: events through outbox, broker and inbox, per second.

Three figures per broker, measured in the same run on the same server, so their ratios are
the price of the transactional outbox and the inbox:

- *raw*: the broker alone. ``Broker.publish`` with 100 publishes in flight while one
  subscription consumes them with a handler that does nothing; from the first publish until
  the last event is consumed.
- *end to end*: one service commits the events to its outbox (10 per local transaction),
  its relay publishes them, and another service handles each in a local transaction of its
  own that records it in the inbox and inserts a row; from the first commit until the last
  handler has committed. Both services are in this process, each with its own SQLite file
  (WAL, ``synchronous=FULL``) and broker connection.
- *end to end on PostgreSQL*: the same, with each service's outbox and inbox in a fresh
  schema of its own on the PostgreSQL server of the other PostgreSQL benchmarks
  (:func:`benchmarks.pg_db.server_url`), dropped after the run; the consumer handles
  :data:`PG_CONCURRENCY` events side by side, as PostgreSQL commits them side by side.

Each run uses a fresh stream (deleted afterwards) and checks that every event arrived once.
A broker or a PostgreSQL server that cannot be reached is reported as such and skipped.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from benchmarks.pg_db import connect, fresh_schema, server_url, with_query
from sagakit import Retry
from sagakit.bus import Broker, Delivery, Event, MemoryBroker, open_broker
from sagakit.choreography import LocalDatabase, Service, Transaction
from sagakit.choreography.postgres import PostgresDatabase
from sagakit.errors import BrokerError

if TYPE_CHECKING:
    from benchmarks.suite import Settings

BROKERS = (
    ("memory", "memory://"),
    ("redis", os.environ.get("SAGAKIT_REDIS_URL", "redis://127.0.0.1:6379/0")),
    ("nats", os.environ.get("SAGAKIT_NATS_URL", "nats://127.0.0.1:4222")),
    ("rabbitmq", os.environ.get("SAGAKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")),
)
IN_FLIGHT = 32
"""Publishes in flight at once in the raw measurement: as many as a relay has."""
PER_COMMIT = 10
"""Events the producing service commits to its outbox per local transaction."""
PREFETCH = 100
WARMUP = 400
"""Events in the warm-up at full scale; its rate sizes the timed runs."""
RUN_TIMEOUT = 120.0
"""Seconds one run may take before the benchmark gives up on it (a stuck broker)."""
GROUPS = ("bench-raw", "bench-consumer")
EFFECTS = "CREATE TABLE IF NOT EXISTS effects (event_id text NOT NULL);"
"""The consumer's own table: one row per handled event, no key, so a duplicate would show."""
EFFECTS_COUNT = "SELECT count(*), count(DISTINCT event_id) FROM effects"
PG_POOL = 10
"""Connections in each PostgreSQL service's pool (sagakit's default)."""
PG_CONCURRENCY = 4
"""Events the PostgreSQL consumer handles side by side (1 measured slower, see the NOTE)."""


@dataclass(frozen=True, slots=True)
class Run:
    """One timed batch: how many events were sent, how many arrived (once each), how long."""

    events: int
    delivered: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True, slots=True)
class Rates:
    """A measurement's timed runs."""

    runs: tuple[Run, ...]

    @property
    def median(self) -> float:
        return statistics.median(run.rate for run in self.runs)

    @property
    def low(self) -> float:
        return min(run.rate for run in self.runs)

    @property
    def high(self) -> float:
        return max(run.rate for run in self.runs)

    @property
    def ok(self) -> bool:
        return all(run.delivered == run.events for run in self.runs)


@dataclass(frozen=True, slots=True)
class BrokerFigures:
    """Both measurements on one broker, or why there are none."""

    broker: str
    url: str
    raw: Rates | None = None
    end_to_end: Rates | None = None
    postgres: Rates | None = None
    """End to end with both services on PostgreSQL."""
    unreachable: str | None = None
    postgres_unreachable: str | None = None

    @property
    def ok(self) -> bool:
        """Every event of every run arrived once (an unreachable server is not a failure)."""
        measured = [m for m in (self.raw, self.end_to_end, self.postgres) if m is not None]
        return all(m.ok for m in measured)


Measure = Callable[[Broker, Path, int], Awaitable[Run]]


async def measure_choreography(settings: Settings) -> tuple[BrokerFigures, ...]:
    """The three figures for every broker, one broker after the other."""
    return tuple([await _measure_broker(name, url, settings) for name, url in BROKERS])


async def _measure_broker(name: str, url: str, settings: Settings) -> BrokerFigures:
    try:
        broker = await open_broker(url, retry=Retry(attempts=2, backoff=0.075, jitter=1 / 3))
    except BrokerError as error:
        _progress(f"choreography, {name}: skipped ({error})")
        return BrokerFigures(name, url, unreachable=str(error))
    try:
        with tempfile.TemporaryDirectory(prefix="sagakit-bench-") as scratch:
            raw = await _rates(_raw, broker, Path(scratch), settings, f"{name} raw")
            end_to_end = await _rates(
                _end_to_end, broker, Path(scratch), settings, f"{name} end to end, SQLite"
            )
        postgres, down = await _on_postgres(broker, settings, name)
    finally:
        await broker.close()
    return BrokerFigures(name, broker.url, raw, end_to_end, postgres, postgres_unreachable=down)


async def _on_postgres(
    broker: Broker, settings: Settings, name: str
) -> tuple[Rates | None, str | None]:
    """End to end on PostgreSQL, or why the server cannot be used."""
    down = await _postgres_down(server_url())
    if down is not None:
        _progress(f"choreography, {name} end to end, PostgreSQL: skipped ({down})")
        return None, down
    what = f"{name} end to end, PostgreSQL"
    return await _rates(_end_to_end_pg, broker, Path(), settings, what), None


async def _postgres_down(url: str) -> str | None:
    """Why ``url`` cannot be connected to, or None if the server answers."""
    try:
        conn = await connect(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"{type(error).__name__}: {error}"
    await conn.close()
    return None


async def _rates(
    measure: Measure, broker: Broker, scratch: Path, settings: Settings, what: str
) -> Rates:
    warm = await measure(broker, scratch, settings.warmup(WARMUP))
    events = _sized(warm, settings.target_seconds, floor=20)
    _progress(f"choreography, {what}: {settings.repetitions} x {events:,} events")
    runs = [await measure(broker, scratch, events) for _ in range(settings.repetitions)]
    return Rates(tuple(runs))


def _sized(warmup: Run, target_seconds: float, floor: int) -> int:
    """Events for a run of about ``target_seconds``, rounded to two digits."""
    return max(floor, int(float(f"{warmup.rate * target_seconds:.2g}")))


async def _raw(broker: Broker, scratch: Path, events: int) -> Run:
    """The broker alone: publish ``events`` (100 in flight) and consume them once each."""
    stream = _fresh_stream()
    seen: set[str] = set()
    done = asyncio.Event()

    async def consume(delivery: Delivery) -> None:
        seen.add(delivery.event.id)
        if len(seen) >= events:
            done.set()

    consumer = broker.sibling() if isinstance(broker, MemoryBroker) else broker
    subscription = await consumer.subscribe(stream, GROUPS[0], consume, prefetch=PREFETCH)
    batch = [Event.new("Tick", {"n": n}, source="bench") for n in range(events)]
    try:
        started = time.perf_counter()
        await _publish_all(broker, stream, batch)
        await _within(done.wait(), f"raw run of {events} events on {broker.url}")
        seconds = time.perf_counter() - started
    finally:
        await subscription.close()
        await broker.delete_stream(stream, GROUPS)
    return Run(events, len(seen & {e.id for e in batch}), seconds)


async def _publish_all(broker: Broker, stream: str, batch: list[Event]) -> None:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(event: Event) -> None:
        async with slots:
            await broker.publish(stream, event)

    await asyncio.gather(*(one(event) for event in batch))


class _Consumer(Service):
    """The consuming service, which sets ``done`` once it has committed ``events`` events."""

    def __init__(
        self, db: LocalDatabase | Path, broker: Broker, stream: str, events: int, concurrency: int
    ) -> None:
        super().__init__(
            GROUPS[1],
            db,
            broker,
            stream=stream,
            schema=EFFECTS,
            prefetch=PREFETCH,
            concurrency=concurrency,
        )
        self.events = events
        self.done = asyncio.Event()

    async def handle(self, delivery: Delivery) -> None:
        await super().handle(delivery)  # returns once the handler's transaction has committed
        if self.handled >= self.events:
            self.done.set()


async def _end_to_end(broker: Broker, scratch: Path, events: int) -> Run:
    """Outbox, relay, broker, inbox: ``events`` committed by one service, handled by another,
    each with a SQLite file of its own in ``scratch``."""
    run, stream = uuid.uuid4().hex[:8], _fresh_stream()
    producer = Service(
        "bench-producer", scratch / f"producer-{run}.db", _connection(broker), stream=stream
    )
    consumer = _Consumer(
        scratch / f"consumer-{run}.db", _connection(broker), stream, events, concurrency=1
    )

    @consumer.on("Tick")
    def apply(event: Event, tx: Transaction) -> None:
        tx.db.execute("INSERT INTO effects VALUES (?)", (event.id,))

    try:
        seconds = await _through(broker, producer, consumer, run)
        total, distinct = _sqlite_effects(consumer)
    finally:
        await producer.close()
        await consumer.close()
    return Run(events, _once(consumer, total, distinct), seconds)


async def _end_to_end_pg(broker: Broker, scratch: Path, events: int) -> Run:
    """The same path with each service in a fresh PostgreSQL schema (``scratch`` unused)."""
    url = server_url()
    async with AsyncExitStack() as stack:
        producer_db = await _pg_database(stack, url, tables="")
        consumer_db = await _pg_database(stack, url, tables=EFFECTS)
        return await _between_pg(broker, producer_db, consumer_db, events)


async def _pg_database(stack: AsyncExitStack, url: str, tables: str) -> PostgresDatabase:
    """A service database in a schema of its own, closed and dropped as ``stack`` closes."""
    schema = await stack.enter_async_context(fresh_schema(url, "bench_choreo"))
    service_url = with_query(url, schema=schema, pool=str(PG_POOL))
    db = await PostgresDatabase.open(service_url, tables=tables)  # NOTIFY on, the default
    stack.push_async_callback(db.close)
    return db


async def _between_pg(
    broker: Broker, producer_db: PostgresDatabase, consumer_db: PostgresDatabase, events: int
) -> Run:
    run, stream = uuid.uuid4().hex[:8], _fresh_stream()
    producer = Service("bench-producer", producer_db, _connection(broker), stream=stream)
    consumer = _Consumer(consumer_db, _connection(broker), stream, events, PG_CONCURRENCY)

    @consumer.on("Tick")
    async def apply(event: Event, tx: Transaction) -> None:
        await tx.db.execute("INSERT INTO effects VALUES ($1)", event.id)

    seconds = await _through(broker, producer, consumer, run)
    async with consumer_db.transaction() as tx:
        counted = await tx.connection.fetchrow(EFFECTS_COUNT)
    total, distinct = counted if counted is not None else (0, 0)
    return Run(events, _once(consumer, int(total), int(distinct)), seconds)


async def _through(broker: Broker, producer: Service, consumer: _Consumer, run: str) -> float:
    """Seconds from the first outbox commit until the consumer has committed every event."""
    events = consumer.events
    stop = asyncio.Event()
    tasks = [asyncio.get_running_loop().create_task(s.run(stop)) for s in (producer, consumer)]
    try:
        await _within(consumer.ready.wait(), f"the consumer's subscription on {broker.url}")
        started = time.perf_counter()
        for first in range(0, events, PER_COMMIT):
            async with producer.transaction() as tx:
                for n in range(first, min(first + PER_COMMIT, events)):
                    tx.emit("Tick", {"n": n}, correlation_id=f"{run}-{n}")
        await _within(consumer.done.wait(), f"end-to-end run of {events} events on {broker.url}")
        return time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await broker.delete_stream(producer.stream, GROUPS)


def _sqlite_effects(consumer: Service) -> tuple[int, int]:
    """Rows in the consumer's table, and distinct events among them."""
    db = getattr(consumer.db, "connection")  # noqa: B009 - a SqliteDatabase
    total, distinct = db.execute(EFFECTS_COUNT).fetchone()
    return int(total), int(distinct)


def _once(consumer: Service, total: int, distinct: int) -> int:
    """Events applied once: the distinct effects if none was applied twice and the inbox
    caught no duplicate, else minus the duplicates (-1 if only the effects say so)."""
    if consumer.duplicates:
        return -consumer.duplicates
    return distinct if total == distinct else -1


def _connection(broker: Broker) -> Broker:
    """Another connection to the same in-memory server; real brokers share one client."""
    return broker.sibling() if isinstance(broker, MemoryBroker) else broker


def _fresh_stream() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}"


async def _within(waiting: Awaitable[object], what: str) -> None:
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            await waiting
    except TimeoutError:
        raise RuntimeError(f"{what}: not done within {RUN_TIMEOUT:g}s") from None


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- report

TIMES = "\u00d7"
DASH = "\u2013"
ARROWS = "Outbox \u2192 broker \u2192 inbox"
COLUMNS = (
    "Broker",
    "Raw publish+consume, events/s",
    f"Min{DASH}max",
    f"{ARROWS}, SQLite services, events/s",
    f"Min{DASH}max",
    "SQLite / raw",
    f"{ARROWS}, PostgreSQL services, events/s",
    f"Min{DASH}max",
    "PostgreSQL / raw",
    "Events per run (raw, SQLite, PostgreSQL)",
    "Delivered once",
)


def rows(figures: tuple[BrokerFigures, ...]) -> list[tuple[str, ...]]:
    """One row per broker: medians, spreads, ratios to raw, and whether every event arrived."""
    table: list[tuple[str, ...]] = []
    for found in figures:
        if found.raw is None or found.end_to_end is None:
            table.append((found.broker, "not reachable", *[""] * (len(COLUMNS) - 2)))
            continue
        raw, e2e, pg = found.raw, found.end_to_end, found.postgres
        table.append(
            (
                found.broker,
                *_figure(raw),
                *_figure(e2e, raw),
                *(_figure(pg, raw) if pg is not None else ("not reachable", "", "")),
                ", ".join(f"{m.runs[0].events:,}" if m else "\u2014" for m in (raw, e2e, pg)),
                _delivered(*[m for m in (raw, e2e, pg) if m is not None]),
            )
        )
    return table


def _figure(rates: Rates, raw: Rates | None = None) -> tuple[str, ...]:
    """Median, spread and (beside ``raw``) the ratio of the medians."""
    cells = (f"{rates.median:,.0f}", f"{rates.low:,.0f}{DASH}{rates.high:,.0f}")
    return cells if raw is None else (*cells, f"{rates.median / raw.median:.2f}{TIMES}")


def _delivered(*measured: Rates) -> str:
    runs = [run for rates in measured for run in rates.runs]
    arrived = sum(max(run.delivered, 0) for run in runs)
    return f"{arrived:,}/{sum(run.events for run in runs):,}"


def markdown(figures: tuple[BrokerFigures, ...]) -> str:
    """The report's choreography section (empty if nothing was measured)."""
    if not figures:
        return ""
    lines = [
        "## Choreography: events per second, per broker",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(figures)]
    lines += ["", *_urls(figures), "", NOTE]
    return "\n".join(lines)


def _urls(figures: tuple[BrokerFigures, ...]) -> list[str]:
    urls = [
        f"- {f.broker}: `{f.url}`" + (f" (not reachable: {f.unreachable})" if f.unreachable else "")
        for f in figures
    ]
    down = next((f.postgres_unreachable for f in figures if f.postgres_unreachable), None)
    pg = f"- PostgreSQL services: `{server_url()}`, a fresh schema per service and run"
    return [*urls, pg + (f" (not reachable: {down})" if down else "")]


NOTE = f"""*Raw* is the broker alone, through sagakit's `Broker` API: `publish` with
{IN_FLIGHT} publishes in flight (each returns once the broker has the event: Redis `XADD`,
a JetStream ack, a RabbitMQ publisher confirm) while one subscription consumes with a
handler that does nothing, prefetch {PREFETCH}. *{ARROWS}* is the
transactional path of a choreographed service: a producing service commits the events to
its outbox, {PER_COMMIT} per local transaction, its relay publishes them (oldest first,
concurrently across sagas, each marked sent once the broker confirmed it), and a consuming
service handles each in a local transaction of its own that checks and records the event id
in its inbox and inserts one row. With *SQLite services* both keep their SQLite files in WAL
mode with `synchronous=FULL`, and the consumer handles one event at a time (SQLite commits
one transaction at a time anyway). With *PostgreSQL services* each service is a
`PostgresDatabase` in a fresh schema of its own on the server of the PostgreSQL section
below (`synchronous_commit` as shown there), with a pool of {PG_POOL} connections and
`NOTIFY` on (the default: each producer transaction sends one notice at commit, which wakes
its relay; the consumer's transactions write no outbox rows, so send none); the consumer
runs {PG_CONCURRENCY} competing subscriptions (`concurrency={PG_CONCURRENCY}`, prefetch
{PREFETCH} each), so {PG_CONCURRENCY} handler transactions commit side by side, and its
handler is `async`, inserting its row with `await tx.db.execute(...)`. Concurrency
{PG_CONCURRENCY} was chosen over 1 by a quick comparison on this machine (3 runs per broker,
twice): 1.5 to 3.5{TIMES} the events/s of 1 on every broker. The schemas are dropped after
each run. The clock runs from the first publish (raw) or the first outbox commit (end to
end) until the last event is consumed (raw) or its handler's transaction has committed (end
to end). Per event, the end-to-end path pays the consumer's commit (on SQLite one fsync: see
the fsync ceiling above; on PostgreSQL a WAL flush, shared by commits that meet), a tenth of
the producer's and a share of the relay's (it marks each pass's events sent in one commit),
and sagakit's handling on both sides: the price of an effect applied once however often the
broker delivers it. On PostgreSQL every statement is also a round trip to the server (the
consumer's: begin, the inbox row, the effect row, commit), where SQLite's are calls in this
process. *Delivered once* counts, over every timed run, the events that arrived exactly once
(end to end: rows in the consumer's table, none duplicated, and no duplicate caught by the
inbox)."""
