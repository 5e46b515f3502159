"""What docs/wire-format.md promises a service in another language, checked.

Its JSON examples are what sagakit writes and reads; its names and defaults are the code's;
and, against the machine's Redis, NATS and RabbitMQ, a consumer that follows only the page
(the driver, the page's names, nothing of sagakit) reads what sagakit publishes, finds
sagakit's dead letters where the page says, and makes groups sagakit's services can join.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from doc_examples import EXAMPLES, ROOT
from sagakit.bus import Broker, DeadLetter, Delivery, Event, event_schema, open_broker
from sagakit.bus.nats_jetstream import EVENTS_MAX_AGE
from sagakit.choreography._tracker import TRACKER_GROUP
from sagakit.errors import MalformedEventError
from servers import AMQP, NATS, REDIS

PAGE = (ROOT / "docs" / "wire-format.md").read_text()
WIRE = EXAMPLES / "wire"
WAIT = 15.0


def example(name: str) -> Any:
    return json.loads((WIRE / name).read_text())


def schema_errors(event: Any) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(event_schema()).iter_errors(event)]


# ------------------------------------------------------------------ the examples


def test_the_event_example_is_what_sagakit_writes_for_it() -> None:
    written = example("event.json")
    event = Event.parse(json.dumps(written))
    again = json.loads(event.to_json())
    assert list(again.items()) == list(written.items())  # the same attributes, in order
    assert schema_errors(written) == []


def test_the_reply_example_follows_the_rules_it_illustrates() -> None:
    cause, reply = Event.parse(json.dumps(example("event.json"))), example("reply.json")
    event = Event.parse(json.dumps(reply))
    assert (event.correlation_id, event.causation_id) == (cause.correlation_id, cause.id)
    assert "datacontenttype" not in reply and not reply["time"].endswith("Z")
    assert event.time - cause.time == pytest.approx(0.126544)  # its +01:00 read as UTC
    assert dict(event.extensions) == {"subject": "A-1001", "tenant": "acme"}
    assert schema_errors(reply) == []


def test_the_dead_letter_example_is_what_a_consumer_writes_for_its_message() -> None:
    shown = example("dead_letter.json")
    letter = DeadLetter.from_json(json.dumps(shown))
    assert list(shown) == ["stream", "group", "error", "attempts", "time", "raw"]
    assert (letter.stream, letter.group, letter.attempts) == ("orders", "payments", 1)
    assert letter.raw == base64.b64decode(shown["raw"]) and letter.event is None
    with pytest.raises(MalformedEventError) as refused:
        Event.parse(letter.raw)
    assert letter.error == f"malformed event: {refused.value}"
    assert json.loads(letter.to_json()) == shown


def test_the_attribute_table_is_in_the_order_sagakit_writes() -> None:
    table = PAGE.split("## One event", 1)[1].split("sagakit writes the attributes", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert listed == list(example("event.json"))
    required = re.findall(r"^\| `(\w+)` \| yes", table, flags=re.MULTILINE)
    assert required == event_schema()["required"]


def test_the_pages_names_and_defaults_are_the_codes() -> None:
    subscribe = inspect.signature(Broker.subscribe).parameters
    assert subscribe["max_attempts"].default == 5 and "(5 by" in PAGE
    assert inspect.signature(Broker).parameters["redeliver_after"].default == 30.0
    assert "(30 by default" in PAGE
    assert f"`{TRACKER_GROUP}`" in PAGE
    assert EVENTS_MAX_AGE == 7 * 24 * 3600 and "max age 7 days" in PAGE
    assert "`sagakit/bus/event.schema.json`" in PAGE and "`sagakit.bus.event_schema()`" in PAGE


# ------------------------------------------------------------------ on the real brokers


@pytest.fixture
def stream() -> str:
    return f"w{uuid.uuid4().hex[:16]}"


def order_event() -> Event:
    return Event.new("OrderCreated", {"order_id": "A-1"}, source="orders")


async def bury_one(broker: Broker, stream: str) -> Event:
    """A sagakit consumer (group ``alpha``) dead-letters a poison event; returns the poison.

    The marker published after it is handled only once the poison is settled for good.
    """
    marker_seen = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        if delivery.event.type == "Poison":
            raise ValueError("boom")
        marker_seen.set()

    await broker.subscribe(stream, "alpha", handle, max_attempts=1)
    poison = Event.new("Poison", None, source="test")
    await broker.publish(stream, poison)
    await broker.publish(stream, Event.new("Marker", None, source="test"))
    async with asyncio.timeout(WAIT):
        await marker_seen.wait()
    return poison


def assert_is_the_dead_letter_of(data: bytes, poison: Event, stream: str) -> None:
    letter = json.loads(data)
    assert list(letter) == list(example("dead_letter.json"))
    assert (letter["stream"], letter["group"], letter["attempts"]) == (stream, "alpha", 1)
    assert letter["error"] == "ValueError: boom"
    assert base64.b64decode(letter["raw"]) == poison.to_json()


@pytest.mark.redis
async def test_redis_streams_as_the_page_says(stream: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS)
    broker = await open_broker(REDIS)
    key = f"sagakit:{stream}"
    try:
        await client.xgroup_create(key, "payments", id="$", mkstream=True)
        event = order_event()
        await broker.publish(stream, event)
        reply: Any = await client.xreadgroup("payments", "node-1", {key: ">"}, count=10)
        [(_, [(entry_id, fields)])] = reply
        assert fields == {b"event": event.to_json()}
        assert await client.xack(key, "payments", entry_id) == 1
        poison = await bury_one(broker, stream)
        dead_letters: Any = await client.xrange(f"sagakit:{stream}.dead")
        [(_, dead)] = dead_letters
        assert list(dead) == [b"dead"]
        assert_is_the_dead_letter_of(dead[b"dead"], poison, stream)
    finally:
        await broker.close()
        await client.delete(key, f"sagakit:{stream}.dead")
        await client.aclose()


@pytest.fixture
async def nats_client() -> AsyncIterator[Any]:
    import nats

    client = await nats.connect(NATS)
    yield client
    await client.close()


@pytest.mark.nats
async def test_nats_jetstream_as_the_page_says(stream: str, nats_client: Any) -> None:
    from nats.js.api import (
        AckPolicy,
        ConsumerConfig,
        DeliverPolicy,
        RetentionPolicy,
        StorageType,
    )

    js = nats_client.jetstream()
    events, subject = f"sagakit-events-{stream}", f"sagakit.{stream}"
    broker = await open_broker(NATS)
    try:
        await js.add_stream(
            name=events,
            subjects=[subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * 24 * 3600,
        )
        await js.add_consumer(
            events,
            ConsumerConfig(
                durable_name="payments",
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                max_deliver=-1,
                filter_subject=subject,
                max_ack_pending=1000,
            ),
        )
        event = order_event()
        await broker.publish(stream, event)
        pull = await js.pull_subscribe_bind(durable="payments", stream=events)
        [message] = await pull.fetch(batch=10, timeout=WAIT)
        assert (message.subject, message.data) == (subject, event.to_json())
        assert message.headers == {"Nats-Msg-Id": event.id, "Nats-Expected-Stream": events}
        assert message.metadata.num_delivered == 1
        await message.ack()
        poison = await bury_one(broker, stream)
        dead = await js.get_msg(f"sagakit-dead-{stream}", 1)
        assert dead.subject == f"sagakit.{stream}.dead"
        assert dead.headers == {"Nats-Expected-Stream": f"sagakit-dead-{stream}"}
        assert_is_the_dead_letter_of(dead.data, poison, stream)
    finally:
        await broker.delete_stream(stream)
        await broker.close()


@pytest.mark.rabbitmq
async def test_rabbitmq_as_the_page_says(stream: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP)
    broker = await open_broker(AMQP)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            f"sagakit.{stream}", aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(
            f"sagakit.{stream}.group.payments",
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"sagakit.{stream}.dead",
            },
        )
        await queue.bind(exchange)
        event = order_event()
        await broker.publish(stream, event)
        message = await queue.get(timeout=WAIT)
        assert (message.body, message.message_id) == (event.to_json(), event.id)
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        await message.ack()
        joined = asyncio.Event()

        async def payments(delivery: Delivery) -> None:
            joined.set()

        await broker.subscribe(stream, "payments", payments)  # the same queue, as declared
        await broker.publish(stream, order_event())
        async with asyncio.timeout(WAIT):
            await joined.wait()
        poison = await bury_one(broker, stream)
        dead_queue = await channel.declare_queue(f"sagakit.{stream}.dead", passive=True)
        dead = await dead_queue.get(timeout=WAIT)
        assert dead.headers == {"x-sagakit-dead-letter": 1}
        assert_is_the_dead_letter_of(dead.body, poison, stream)
        await dead.ack()
    finally:
        await broker.delete_stream(stream, ["payments", "alpha"])
        await broker.close()
        await connection.close()
