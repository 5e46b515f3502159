"""The broker layer without a server: URLs, drivers, back-off, and the shared consume loop.

The loop is driven here by a scripted :class:`Receiver` (the backend side of the seam), to
reach cases a real server cannot be made to produce on demand.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable, Sequence

import pytest

from sagakit import Retry
from sagakit._urls import redact
from sagakit.bus import Broker, DeadLetter, Delivery, Event, MemoryBroker, open_broker
from sagakit.bus._broker import BROKER_RETRY, check_name
from sagakit.bus._consumer import Consumer, Incoming, Receiver
from sagakit.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerNameError,
    MissingBrokerDriverError,
    UnsupportedBrokerError,
)

ATTEMPTS = 3
QUICK = Retry(attempts=ATTEMPTS, backoff=0.001, max_backoff=0.002)


async def test_memory_urls_open_an_in_process_broker() -> None:
    broker = await open_broker("memory://")
    assert isinstance(broker, MemoryBroker)
    await broker.close()


async def test_an_unknown_scheme_names_the_supported_ones_without_the_password() -> None:
    with pytest.raises(UnsupportedBrokerError) as info:
        await open_broker("kafka://me:hunter2@host:9092")
    message = str(info.value)
    assert all(f"{s}://" in message for s in ("memory", "redis", "nats", "amqp"))
    assert "hunter2" not in message and "kafka://me:***@host:9092" in message


@pytest.mark.parametrize(
    ("url", "modules", "hint"),
    [
        ("redis://127.0.0.1:6379/0", "redis redis.asyncio", "pip install 'sagakit[redis]'"),
        ("nats://127.0.0.1:4222", "nats", "pip install 'sagakit[nats]'"),
        ("amqp://guest:guest@127.0.0.1:5672/", "aio_pika", "pip install 'sagakit[rabbitmq]'"),
    ],
)
async def test_a_missing_driver_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, modules: str, hint: str
) -> None:
    for module in modules.split():  # None in sys.modules makes an import fail
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(
        MissingBrokerDriverError, match=hint.replace("[", r"\[").replace("]", r"\]")
    ):
        await open_broker(url, retry=QUICK)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@h:5672/vh", "amqp://guest:***@h:5672/vh"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("nats://h:4222", "nats://h:4222"),
        ("memory://", "memory://"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("name", ["orders", "Order_Events-2", "x" * 100])
def test_names_every_broker_accepts(name: str) -> None:
    assert check_name("stream", name) == name


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a*", "a>", "a:b", "x" * 101, "ünï"])
def test_names_some_broker_would_refuse(name: str) -> None:
    with pytest.raises(BrokerNameError, match="letters, digits"):
        check_name("stream", name)


@pytest.mark.parametrize("pick", [min, max, None])
def test_the_bus_waits_double_up_to_a_cap_with_jitter(
    monkeypatch: pytest.MonkeyPatch, pick: Callable[[float, float], float] | None
) -> None:
    if pick is not None:  # the extremes of the jitter, else random draws
        monkeypatch.setattr(random, "uniform", lambda low, high: pick(low, high))
    schedule = [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 3.2), (7, 5.0), (12, 5.0)]
    for failures, ceiling in schedule:
        delay = BROKER_RETRY.delay(failures)
        assert ceiling / 2 <= delay <= ceiling
    assert BROKER_RETRY.attempts == 6


def test_dead_letters_round_trip_and_foreign_entries_are_kept_not_lost() -> None:
    letter = DeadLetter("orders", "billing", "ValueError: no", 3, 1.5, b"\xff raw")
    assert DeadLetter.from_json(letter.to_json()) == letter
    odd = DeadLetter.from_json(b"operator notes")
    assert "not a sagakit dead letter" in odd.error and odd.raw == b"operator notes"
    assert odd.event is None


class FlakyBroker(MemoryBroker):
    """A memory broker whose connection drops ``drops`` times, as a real one's can."""

    def __init__(self, drops: int) -> None:
        super().__init__("memory://", retry=QUICK)
        self.drops = drops

    async def _publish(self, stream: str, data: bytes, key: str) -> None:
        if self.drops:
            self.drops -= 1
            raise ConnectionResetError("connection reset by peer")
        await super()._publish(stream, data, key)

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        return (ConnectionError,)


async def test_publish_retries_a_dropped_connection() -> None:
    broker = FlakyBroker(drops=ATTEMPTS - 1)
    await broker.publish("orders", Event.new("E", source="s"))
    assert len(broker.hub.stream("orders").log) == 1


async def test_publish_gives_up_after_its_attempts_with_a_connection_error() -> None:
    broker = FlakyBroker(drops=ATTEMPTS)
    with pytest.raises(BrokerConnectionError, match="cannot reach the broker at memory://"):
        await broker.publish("orders", Event.new("E", source="s"))


async def test_a_driver_error_that_is_not_about_the_connection_is_a_broker_error() -> None:
    class Refusing(FlakyBroker):
        def _driver_errors(self) -> tuple[type[BaseException], ...]:
            return (LookupError,)

        async def _publish(self, stream: str, data: bytes, key: str) -> None:
            raise KeyError("no such stream")

    with pytest.raises(BrokerError, match="cannot publish to 'orders': KeyError") as info:
        await Refusing(drops=0).publish("orders", Event.new("E", source="s"))
    assert isinstance(info.value.__cause__, KeyError)


class Script:
    """A Receiver that hands out scripted batches (an exception is raised instead)."""

    touch_every: float | None = None

    def __init__(self, *batches: list[Incoming] | Exception) -> None:
        self.batches = list(batches)
        self.settled: list[tuple[str, object]] = []
        self.done = asyncio.Event()

    async def fetch(self, timeout: float) -> Sequence[Incoming]:
        if not self.batches:
            self.done.set()
            await asyncio.Event().wait()
        batch = self.batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return batch

    async def ack(self, message: Incoming) -> None:
        self.settled.append(("ack", message.token))

    async def retry(self, message: Incoming) -> None:
        self.settled.append(("retry", message.token))

    async def bury(self, message: Incoming, letter: DeadLetter) -> None:
        self.settled.append(("bury", letter.error))

    async def touch(self, message: Incoming) -> None:
        self.settled.append(("touch", message.token))

    async def stop(self) -> None:
        self.settled.append(("stop", None))


async def consume(receiver: Receiver, handled: list[Delivery], max_attempts: int = 3) -> None:
    async def handler(delivery: Delivery) -> None:
        handled.append(delivery)

    subscription = Consumer(
        receiver,
        handler,
        stream="s",
        group="g",
        max_attempts=max_attempts,
        poll=0.01,
        backoff=QUICK.delay,
    )
    subscription.start()
    assert isinstance(receiver, Script)
    async with asyncio.timeout(5):
        await receiver.done.wait()
    await subscription.close()


def message(token: int, attempt: int = 1) -> Incoming:
    return Incoming(Event.new("E", {"n": token}, source="s").to_json(), attempt, token)


async def test_the_consumer_outlives_a_broken_connection() -> None:
    lost = BrokerConnectionError("redis://h", "connection reset")
    script = Script(lost, RuntimeError("driver confused"), [message(1)])
    handled: list[Delivery] = []
    await consume(script, handled)
    assert [d.event.data for d in handled] == [{"n": 1}]
    assert script.settled == [("ack", 1), ("stop", None)]


async def test_a_message_delivered_more_often_than_allowed_is_buried_unhandled() -> None:
    script = Script([message(1, attempt=4)])
    handled: list[Delivery] = []
    await consume(script, handled, max_attempts=3)
    assert handled == []
    ((verb, error), _) = script.settled
    assert verb == "bury" and "delivered 4 times" in str(error)


async def test_a_settling_failure_is_logged_and_the_consumer_goes_on() -> None:
    class AckFails(Script):
        async def ack(self, message: Incoming) -> None:
            if message.token == 1:
                raise BrokerConnectionError("nats://h", "gone")
            await super().ack(message)

    script = AckFails([message(1), message(2)])
    handled: list[Delivery] = []
    await consume(script, handled)
    assert len(handled) == 2 and script.settled == [("ack", 2), ("stop", None)]


async def test_a_slow_handler_renews_its_message() -> None:
    class Renewing(Script):
        touch_every = 0.01
        touched = asyncio.Event()

        async def touch(self, message: Incoming) -> None:
            await super().touch(message)
            self.touched.set()

    script = Renewing([message(1)])

    async def slow(delivery: Delivery) -> None:
        async with asyncio.timeout(5):
            await script.touched.wait()  # returns only once the loop renewed the message

    subscription = Consumer(
        script, slow, stream="s", group="g", max_attempts=3, poll=0.01, backoff=QUICK.delay
    )
    subscription.start()
    async with asyncio.timeout(5):
        await script.done.wait()
    await subscription.close()
    assert script.settled[0] == ("touch", 1) and ("ack", 1) in script.settled


async def test_a_broker_used_after_close_says_so() -> None:
    broker: Broker = MemoryBroker()
    await broker.close()
    with pytest.raises(BrokerError, match="closed"):
        await broker.publish("s", Event.new("E", source="s"))


async def test_deleting_a_stream_forgets_its_events_groups_and_dead_letters() -> None:
    async def ignore(delivery: Delivery) -> None:
        return None

    broker = MemoryBroker()
    await broker.subscribe("orders", "billing", ignore)
    await broker.publish("orders", Event.new("E", source="s"))
    broker.hub.stream("orders").dead.append(b"given up")
    await broker.delete_stream("orders", ["billing"])
    assert "orders" not in broker.hub.streams
    assert await broker.dead_letters("orders") == []
    with pytest.raises(BrokerNameError, match="group name"):
        await broker.delete_stream("orders", ["two words"])
    await broker.close()


@pytest.mark.parametrize("size", [10, 700_000, 999_000, 3_000_000])
def test_a_dead_letter_too_big_for_its_broker_keeps_the_start_of_the_message(size: int) -> None:
    raw = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    letter = DeadLetter("s", "g", "malformed event: " + "e" * 10_000, 3, 1.5, raw)
    limit = 1024 * 1024
    fitted = letter.within(limit)
    assert len(fitted.to_json()) <= limit
    if len(letter.to_json()) <= limit:
        assert fitted == letter
        return
    assert fitted.raw == raw[: len(fitted.raw)] and len(fitted.raw) > limit // 2
    assert fitted.cut_from == size
    assert f"of {size:,} bytes)" in fitted.error and len(fitted.error) < 4_200
    assert DeadLetter.from_json(fitted.to_json()) == fitted
