"""Poison never blocks, on the real Redis, NATS and RabbitMQ servers.

Two kinds of outbox row the broker will never take, each ending as a dead letter of the
outbox while 100 other sagas' events are delivered:

- a *too-big* event: ``tx.emit`` refuses it in the handler's transaction, but a row that
  reached the outbox anyway (written while the limit was higher) is refused by the broker's
  own check at publish;
- a *repeatedly failing* publish, which the server itself refuses each time: a Redis key
  of the wrong type, a JetStream stream whose ``max_msg_size`` is smaller than the event,
  a RabbitMQ queue that is full and rejects publishes (a nack).

Before, the relay took the first for an outage and retried the oldest saga alone, so
nothing else was ever published.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sagakit import Retry
from sagakit.bus import Broker, Delivery, Event, open_broker
from sagakit.choreography import Relay, Service
from sagakit.errors import EventTooLargeError

URLS = {
    "redis": os.environ.get("SAGAKIT_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "nats": os.environ.get("SAGAKIT_NATS_URL", "nats://127.0.0.1:4222"),
    "rabbitmq": os.environ.get("SAGAKIT_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}
WAIT = 60.0
ORDERS = 100


async def _redis_wrong_type(broker: Broker, stream: str) -> Callable[[], Awaitable[None]]:
    """The stream's key holds a string: every XADD to it is refused with WRONGTYPE."""
    from redis.asyncio import Redis

    from sagakit.bus.redis_streams import stream_key

    client = Redis.from_url(URLS["redis"])
    await client.set(stream_key(stream), "not a stream")

    async def undo() -> None:
        await client.delete(stream_key(stream))
        await client.aclose()

    return undo


async def _nats_small_stream(broker: Broker, stream: str) -> Callable[[], Awaitable[None]]:
    """The stream's JetStream stream takes 200 bytes at most: the server refuses the event."""
    import nats

    from sagakit.bus.nats_jetstream import jetstream_names, subject

    connection = await nats.connect(URLS["nats"])
    name = jetstream_names(stream)[0]
    await connection.jetstream().add_stream(name=name, subjects=[subject(stream)], max_msg_size=200)

    async def undo() -> None:
        await connection.jetstream().delete_stream(name)
        await connection.close()

    return undo


async def _rabbitmq_full_queue(broker: Broker, stream: str) -> Callable[[], Awaitable[None]]:
    """A queue on the stream's exchange that is full and rejects publishes: a nack each."""
    import aio_pika

    from sagakit.bus.rabbitmq import exchange_name

    connection = await aio_pika.connect(URLS["rabbitmq"])
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        exchange_name(stream), aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(
        f"full-{stream}",
        durable=True,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    await queue.bind(exchange)

    async def undo() -> None:
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        await connection.close()

    return undo


SABOTAGE = {
    "redis": _redis_wrong_type,
    "nats": _nats_small_stream,
    "rabbitmq": _rabbitmq_full_queue,
}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=getattr(pytest.mark, k)) for k in URLS])
async def test_poison_ends_as_dead_letters_while_other_sagas_go_on(
    kind: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:10]
    stream, broken = f"poison{run}", f"broken{run}"
    broker = await open_broker(URLS[kind])
    received: list[str] = []
    everything = asyncio.Event()

    async def record(delivery: Delivery) -> None:
        received.append(delivery.event.correlation_id)
        if len(received) == ORDERS:
            everything.set()

    orders = Service("orders", tmp_path / "orders.db", broker, stream=stream)
    relay = Relay(orders.db, broker, max_refusals=3, poll=0.05, retry=Retry(None, 0.01))
    undo = await SABOTAGE[kind](broker, broken)
    try:
        await broker.subscribe(stream, "audit", record)
        huge = {"blob": "x" * (broker.max_event_bytes + 1)}
        with pytest.raises(EventTooLargeError):
            await orders.publish("Huge", huge, correlation_id="too-big")
        assert await orders.db.backlog() == 0  # refused in the transaction: nothing written
        async with orders.db.transaction() as tx:  # as a release with a higher limit wrote it
            await tx.enqueue(
                stream, Event.new("Huge", huge, source="orders", correlation_id="too-big")
            )
            await tx.enqueue(
                stream, Event.new("After", {}, source="orders", correlation_id="too-big")
            )
        await orders.publish("Audited", {"note": "y" * 300}, correlation_id="fails", stream=broken)
        for n in range(ORDERS):
            await orders.publish("OrderCreated", {"n": n}, correlation_id=f"order-{n}")

        async with asyncio.timeout(WAIT):  # what Relay.run does, pass by pass
            passes = [await relay.publish_pending()]
            while len(await orders.db.dead_letters()) < 2:
                passes.append(await relay.publish_pending())
            await everything.wait()

        assert passes[0].sent == ORDERS and passes[0].refused == 2
        assert all(p.error is None for p in passes), [p.error for p in passes]
        assert sorted(received) == sorted(f"order-{n}" for n in range(ORDERS))
        dead = {letter.correlation_id: letter for letter in await orders.db.dead_letters()}
        assert set(dead) == {"too-big", "fails"}
        assert "over the" in dead["too-big"].error and dead["too-big"].refusals == 3
        assert dead["fails"].refusals == 3 and dead["fails"].stream == broken
        assert await orders.db.backlog() == 1  # "After" waits behind its dead letter
    finally:
        await undo()
        await orders.close()
        await broker.delete_stream(stream, ["audit"])
        await broker.close()
