"""Choreography throughput per broker: events through outbox, broker and inbox, per second.

Two figures per broker, measured in the same run on the same server, so their ratio is the
price of the transactional outbox and the inbox:

- *raw*: the broker alone. ``Broker.publish`` with 100 publishes in flight while one
  subscription consumes them with a handler that does nothing; from the first publish until
  the last event is consumed.
- *end to end*: one service commits the events to its outbox (10 per local transaction),
  its relay publishes them, and another service handles each in a local transaction of its
  own that records it in the inbox and inserts a row; from the first commit until the last
  handler has committed. Both services are in this process, each with its own SQLite file
  (WAL, ``synchronous=FULL``) and broker connection.

Each run uses a fresh stream (deleted afterwards) and checks that every event arrived once.
A broker that cannot be reached is reported as such and skipped.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sagakit import Retry
from sagakit.bus import Broker, Delivery, Event, MemoryBroker, open_broker
from sagakit.choreography import Service, Transaction
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
    unreachable: str | None = None

    @property
    def ok(self) -> bool:
        """Every event of every run arrived once (an unreachable broker is not a failure)."""
        measured = [m for m in (self.raw, self.end_to_end) if m is not None]
        return all(m.ok for m in measured)


Measure = Callable[[Broker, Path, int], Awaitable[Run]]


async def measure_choreography(settings: Settings) -> tuple[BrokerFigures, ...]:
    """Both figures for every broker, one broker after the other."""
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
                _end_to_end, broker, Path(scratch), settings, f"{name} end to end"
            )
    finally:
        await broker.close()
    return BrokerFigures(name, broker.url, raw, end_to_end)


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


async def _end_to_end(broker: Broker, scratch: Path, events: int) -> Run:
    """Outbox, relay, broker, inbox: ``events`` committed by one service, handled by another."""
    stream = _fresh_stream()
    run = uuid.uuid4().hex[:8]
    producer = Service(
        "bench-producer", scratch / f"producer-{run}.db", _connection(broker), stream=stream
    )
    consumer = Service(
        GROUPS[1],
        scratch / f"consumer-{run}.db",
        _connection(broker),
        stream=stream,
        schema="CREATE TABLE IF NOT EXISTS effects (event_id TEXT NOT NULL);",
        prefetch=PREFETCH,
    )
    done = asyncio.Event()

    @consumer.on("Tick")
    def apply(event: Event, tx: Transaction) -> None:
        tx.db.execute("INSERT INTO effects VALUES (?)", (event.id,))
        if consumer.handled + 1 >= events:
            done.set()

    stop = asyncio.Event()
    tasks = [asyncio.get_running_loop().create_task(s.run(stop)) for s in (producer, consumer)]
    try:
        await _within(consumer.ready.wait(), f"the consumer's subscription on {broker.url}")
        started = time.perf_counter()
        for first in range(0, events, PER_COMMIT):
            async with producer.transaction() as tx:
                for n in range(first, min(first + PER_COMMIT, events)):
                    tx.emit("Tick", {"n": n}, correlation_id=f"{run}-{n}")
        await _within(done.wait(), f"end-to-end run of {events} events on {broker.url}")
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await broker.delete_stream(stream, GROUPS)
    delivered = _effects(consumer) if consumer.duplicates == 0 else -consumer.duplicates
    await producer.close()
    await consumer.close()
    return Run(events, delivered, seconds)


def _effects(consumer: Service) -> int:
    """Distinct events the consumer applied, if it applied none twice (-1 otherwise)."""
    db = getattr(consumer.db, "connection")  # noqa: B009 - a SqliteDatabase
    sql = "SELECT count(*), count(DISTINCT event_id) FROM effects"
    total, distinct = db.execute(sql).fetchone()
    return int(distinct) if total == distinct else -1


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
COLUMNS = (
    "Broker",
    "Raw publish+consume, events/s",
    f"Min{DASH}max",
    "Outbox \u2192 broker \u2192 inbox, events/s",
    f"Min{DASH}max",
    "End to end / raw",
    "Events per run (raw, end to end)",
    "Delivered once",
)


def rows(figures: tuple[BrokerFigures, ...]) -> list[tuple[str, ...]]:
    """One row per broker: medians, spreads, their ratio, and whether every event arrived."""
    table: list[tuple[str, ...]] = []
    for found in figures:
        if found.raw is None or found.end_to_end is None:
            table.append((found.broker, "not reachable", "", "", "", "", "", ""))
            continue
        raw, e2e = found.raw, found.end_to_end
        table.append(
            (
                found.broker,
                f"{raw.median:,.0f}",
                f"{raw.low:,.0f}{DASH}{raw.high:,.0f}",
                f"{e2e.median:,.0f}",
                f"{e2e.low:,.0f}{DASH}{e2e.high:,.0f}",
                f"{e2e.median / raw.median:.2f}{TIMES}",
                f"{raw.runs[0].events:,}, {e2e.runs[0].events:,}",
                _delivered(raw, e2e),
            )
        )
    return table


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
    return [
        f"- {f.broker}: `{f.url}`" + (f" (not reachable: {f.unreachable})" if f.unreachable else "")
        for f in figures
    ]


NOTE = f"""*Raw* is the broker alone, through sagakit's `Broker` API: `publish` with
{IN_FLIGHT} publishes in flight (each returns once the broker has the event: Redis `XADD`,
a JetStream ack, a RabbitMQ publisher confirm) while one subscription consumes with a
handler that does nothing, prefetch {PREFETCH}. *Outbox \u2192 broker \u2192 inbox* is the
transactional path of a choreographed service: a producing service commits the events to
its outbox, {PER_COMMIT} per local transaction, its relay publishes them (oldest first,
concurrently across sagas, each marked sent once the broker confirmed it), and a consuming
service handles each in a local transaction of its own that checks and records the event id
in its inbox and inserts one row; both services keep their SQLite files in WAL mode with
`synchronous=FULL`. The clock runs from the first publish (raw) or the first outbox commit
(end to end) until the last event is consumed (raw) or its handler has committed (end to
end). Per event, the end-to-end path pays the consumer's commit (one fsync: see the fsync
ceiling above), a tenth of the producer's and a share of the relay's (it marks each pass's
events sent in one commit), and sagakit's handling on both sides: the price of an effect
applied once however often the broker delivers it. *Delivered once* counts, over every timed
run, the events that arrived exactly once (end to end: rows in the consumer's table, none
duplicated)."""
