"""Two replicas of a service relay one PostgreSQL outbox to Redis: each event once, in order.

Each replica has its own :class:`PostgresDatabase` pool on the same schema and its own
:class:`Relay` and broker connection, as two processes would. While both relays run,
concurrent transactions on both replicas write 5,000 events of 500 sagas, each saga's
events one transaction after another. The audit reads what the relays say they published
and the raw Redis stream itself (no consumer, no de-duplication in between): every event
is on the stream exactly once, and each saga's events are there in the order written.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from sagakit.bus import Event, open_broker
from sagakit.bus.redis_streams import EVENT_FIELD, dead_key, stream_key
from sagakit.choreography import Relay
from sagakit.choreography.postgres import PostgresDatabase
from servers import POSTGRES, REDIS, drop_schema

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SAGAS = 500
STEPS = 10
WRITERS = 50
"""Concurrent writers, each taking SAGAS / WRITERS sagas through every step, one
transaction a step (holding one event of each of its sagas)."""
WAIT = 120.0
"""Seconds the relays may take to publish everything: far more than a loaded CI needs."""


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"replicas_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_schema(name)


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    name = f"replicas{uuid.uuid4().hex[:12]}"
    yield name
    client = Redis.from_url(REDIS)
    try:
        await client.delete(stream_key(name), dead_key(name))
    finally:
        await client.aclose()


async def write_sagas(db: PostgresDatabase, stream: str, sagas: list[str]) -> None:
    """Every step of ``sagas``: one transaction a step, the next only after it committed."""
    for step in range(STEPS):
        async with db.transaction() as tx:
            for saga in sagas:
                data = {"saga": saga, "step": step}
                await tx.enqueue(
                    stream, Event.new("Stepped", data, source="t", correlation_id=saga)
                )


async def read_stream(stream: str, count: int) -> list[Event]:
    """The stream's first ``count`` entries as Redis holds them, waiting in Redis's own
    blocking read for those not there yet; fail after :data:`WAIT`."""
    client = Redis.from_url(REDIS)
    key = stream_key(stream)
    found: list[Event] = []
    last = "0-0"
    try:
        async with asyncio.timeout(WAIT):
            while len(found) < count:
                reply: Any = await client.xread({key: last}, count=1000, block=1000)
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        found.append(Event.parse(fields[EVENT_FIELD]))
                        last = entry_id
    except TimeoutError:
        pytest.fail(f"after {WAIT}s, {len(found)} of {count} events on the stream")
    finally:
        await client.aclose()
    return found


async def stream_length(stream: str) -> int:
    client = Redis.from_url(REDIS)
    try:
        return int(await client.xlen(stream_key(stream)))
    finally:
        await client.aclose()


@pytest.mark.timeout(300)
async def test_two_replicas_publish_every_event_once_in_order(schema: str, stream: str) -> None:
    url = f"{POSTGRES}?schema={schema}&pool=6"
    replicas = [await PostgresDatabase.open(url) for _ in range(2)]
    brokers = [await open_broker(REDIS) for _ in replicas]
    relays = [
        Relay(db, broker, name=f"replica-{n}", batch=50, poll=0.05)
        for n, (db, broker) in enumerate(zip(replicas, brokers, strict=True))
    ]
    stop = asyncio.Event()
    running = [asyncio.create_task(relay.run(stop)) for relay in relays]
    sagas = [f"saga-{n:03d}" for n in range(SAGAS)]
    share = SAGAS // WRITERS
    try:
        await asyncio.gather(
            *(
                write_sagas(replicas[w % 2], stream, sagas[w * share : (w + 1) * share])
                for w in range(WRITERS)
            )
        )
        on_stream = await read_stream(stream, SAGAS * STEPS)
    finally:
        stop.set()
        await asyncio.gather(*running)  # each relay ends its pass, marks included, first

    try:
        assert [await db.backlog() for db in replicas] == [0, 0]
        assert await replicas[0].dead_letters() == []
        published = [relay.published for relay in relays]
        assert sum(published) == SAGAS * STEPS, published  # no row marked sent twice
        assert all(published), published  # both replicas took part
        assert await stream_length(stream) == SAGAS * STEPS  # no event published twice
        assert len({event.id for event in on_stream}) == SAGAS * STEPS
        steps: dict[str, list[int]] = {}
        for event in on_stream:
            steps.setdefault(event.correlation_id, []).append(event.data["step"])
        assert steps == {saga: list(range(STEPS)) for saga in sagas}
    finally:
        for db, broker in zip(replicas, brokers, strict=True):
            await db.close()
            await broker.close()
