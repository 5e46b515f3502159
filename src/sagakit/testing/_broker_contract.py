"""The contract every :class:`~sagakit.bus.Broker` must keep, against a real server.

Subclass :class:`BrokerContract` and provide a ``broker_factory`` fixture: an async callable
returning a new broker connected to the same server (as another process would be), with a
short ``redeliver_after`` (about a second) so redelivery tests are quick. The fixture closes
what it made and deletes what the test created: every test uses one fresh stream, named by
the ``stream`` fixture, and only the groups in :data:`GROUPS`::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        async def broker_factory(self, stream: str) -> AsyncIterator[BrokerFactory]:
            made: list[MyBroker] = []

            async def make() -> Broker:
                made.append(await MyBroker.open(URL, redeliver_after=1.0))
                return made[-1]

            yield make
            for broker in made:
                await broker.close()
            await delete_everything_named(stream)

        async def publish_raw(self, broker: Broker, stream: str, data: bytes) -> None:
            ...  # put bytes on the stream with the driver, as a foreign producer would

Tests never sleep to wait: they await a condition with a deadline (:data:`WAIT`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from sagakit.bus import Broker, Delivery, Event
from sagakit.errors import BrokerError, BrokerNameError, MalformedEventError

BrokerFactory = Callable[[], Awaitable[Broker]]

WAIT = 15.0
"""Seconds any awaited condition may take before the test fails."""

GROUPS = ("alpha", "beta")
"""The only group names the contract uses, so a backend's cleanup can find their state."""


class Recorder:
    """A handler that records deliveries; tests await conditions on what it saw."""

    def __init__(self, fail_until: int = 0, fail_type: str | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self._fail_until = fail_until
        self._fail_type = fail_type
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self._changed.set()
        failing = self._fail_type in (None, delivery.event.type)
        if failing and delivery.attempt <= self._fail_until:
            raise ValueError(f"boom on attempt {delivery.attempt}")

    def ids(self, type: str | None = None) -> list[str]:
        """Ids of the events delivered, in delivery order (repeats included)."""
        return [d.event.id for d in self.deliveries if type in (None, d.event.type)]

    def attempts(self, type: str | None = None) -> list[int]:
        """Attempt numbers of the deliveries, in order."""
        return [d.attempt for d in self.deliveries if type in (None, d.event.type)]

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Return once ``condition()`` holds; fail the test after :data:`WAIT` seconds."""
        try:
            async with asyncio.timeout(WAIT):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"after {WAIT}s, still waiting for {what}; saw {self.summary()}")

    def summary(self) -> list[tuple[str, int]]:
        """(type, attempt) of every delivery, for failure messages."""
        return [(d.event.type, d.attempt) for d in self.deliveries]


def events(count: int, type: str = "Happened") -> list[Event]:
    """``count`` events of one saga, each caused by the one before."""
    made = [Event.new(type, {"n": 0}, source="contract")]
    for n in range(1, count):
        made.append(Event.new(type, {"n": n}, source="contract", caused_by=made[-1]))
    return made


class BrokerContract:
    """Behaviour choreographed services rely on; subclasses supply ``broker_factory``."""

    @pytest.fixture
    def stream(self) -> str:
        """A stream name no other test run uses."""
        return f"t{uuid.uuid4().hex[:20]}"

    @pytest.fixture
    async def broker(self, broker_factory: BrokerFactory) -> Broker:
        return await broker_factory()

    async def publish_raw(self, broker: Broker, stream: str, data: bytes) -> None:
        """Put ``data`` on ``stream`` directly with the driver; subclasses implement it."""
        raise NotImplementedError

    async def kill(self, broker: Broker) -> None:
        """Make ``broker`` drop its connection without settling anything, as a crash would."""
        await broker.abort()

    async def test_round_trip_keeps_every_envelope_field(self, broker: Broker, stream: str) -> None:
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        cause = Event.new("OrderCreated", {"order": 7}, source="orders")
        payload = {"amount": 12.5, "items": ["ünï", "✓"], "ok": True, "none": None, "n": -3}
        event = Event.new("PaymentCompleted", payload, source="payments", caused_by=cause)
        await broker.publish(stream, event)
        await seen.wait_for(lambda: len(seen.deliveries) >= 1, "the event")
        delivery = seen.deliveries[0]
        assert delivery.event == event
        assert (delivery.event.causation_id, delivery.event.correlation_id) == (cause.id, cause.id)
        assert (delivery.attempt, delivery.stream, delivery.group) == (1, stream, "alpha")
        assert Event.parse(delivery.raw) == event

    async def test_a_group_gets_what_was_published_while_it_was_offline(
        self, broker: Broker, stream: str
    ) -> None:
        first = await broker.subscribe(stream, "alpha", Recorder())
        await first.close()
        sent = events(3)
        for event in sent:
            await broker.publish(stream, event)
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        await seen.wait_for(lambda: len(seen.deliveries) >= 3, "three events")
        assert seen.ids() == [e.id for e in sent]

    async def test_a_handler_that_raises_gets_the_event_again(
        self, broker: Broker, stream: str
    ) -> None:
        seen = Recorder(fail_until=2)
        await broker.subscribe(stream, "alpha", seen, max_attempts=5)
        (event,) = events(1)
        await broker.publish(stream, event)
        await seen.wait_for(lambda: 3 in seen.attempts(), "attempt 3")
        assert seen.attempts() == [1, 2, 3]
        assert set(seen.ids()) == {event.id}
        assert await broker.dead_letters(stream) == []

    async def test_competing_consumers_in_a_group_split_the_events(
        self, broker: Broker, broker_factory: BrokerFactory, stream: str
    ) -> None:
        other = await broker_factory()
        by_consumer: dict[str, list[str]] = {"one": [], "two": []}
        both_busy = asyncio.Event()
        seen = Recorder()

        def consumer(name: str) -> Callable[[Delivery], Awaitable[None]]:
            async def handle(delivery: Delivery) -> None:
                by_consumer[name].append(delivery.event.id)
                if all(by_consumer.values()):
                    both_busy.set()
                async with asyncio.timeout(WAIT):
                    await both_busy.wait()  # hold the first event until the other has one
                await seen(delivery)

            return handle

        await broker.subscribe(stream, "alpha", consumer("one"), prefetch=1)
        await other.subscribe(stream, "alpha", consumer("two"), prefetch=1)
        sent = events(12)
        for event in sent:
            await broker.publish(stream, event)
        await seen.wait_for(lambda: len(set(seen.ids())) == len(sent), "every event")
        assert sorted(seen.ids()) == sorted(e.id for e in sent), "an event was handled twice"
        assert by_consumer["one"] and by_consumer["two"]

    async def test_every_group_gets_every_event(self, broker: Broker, stream: str) -> None:
        alpha, beta = Recorder(), Recorder()
        await broker.subscribe(stream, "alpha", alpha)
        await broker.subscribe(stream, "beta", beta)
        sent = events(5)
        for event in sent:
            await broker.publish(stream, event)
        await alpha.wait_for(lambda: len(alpha.deliveries) >= 5, "alpha's events")
        await beta.wait_for(lambda: len(beta.deliveries) >= 5, "beta's events")
        assert alpha.ids() == beta.ids() == [e.id for e in sent]

    async def test_one_consumer_gets_a_stream_in_publish_order(
        self, broker: Broker, stream: str
    ) -> None:
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        sent = events(30)
        for event in sent:
            await broker.publish(stream, event)
        await seen.wait_for(lambda: len(seen.deliveries) >= 30, "thirty events")
        assert seen.ids() == [e.id for e in sent]
        assert set(seen.attempts()) == {1}

    async def test_after_max_attempts_the_event_is_dead_lettered_with_its_error(
        self, broker: Broker, stream: str
    ) -> None:
        seen = Recorder(fail_until=99, fail_type="Poison")
        await broker.subscribe(stream, "alpha", seen, max_attempts=3)
        (poison,) = events(1, "Poison")
        await broker.publish(stream, poison)
        await seen.wait_for(lambda: 3 in seen.attempts("Poison"), "the last attempt")
        (marker,) = events(1, "Marker")  # handled after the poison was settled for good
        await broker.publish(stream, marker)
        await seen.wait_for(lambda: marker.id in seen.ids(), "the marker")
        assert seen.attempts("Poison") == [1, 2, 3]
        (letter,) = await broker.dead_letters(stream)
        assert letter.event == poison
        assert (letter.stream, letter.group, letter.attempts) == (stream, "alpha", 3)
        assert "ValueError: boom on attempt 3" in letter.error
        assert letter.raw == poison.to_json()

    async def test_malformed_messages_are_dead_lettered_at_once(
        self, broker: Broker, stream: str
    ) -> None:
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        (good,) = events(1)
        bad = [b"not json", b'{"specversion": "1.0", "id": "x"}', b"\xff\xfe"]
        for data in bad:
            await self.publish_raw(broker, stream, data)
        await broker.publish(stream, good)
        await seen.wait_for(lambda: good.id in seen.ids(), "the good event")
        assert seen.ids() == [good.id]
        letters = await broker.dead_letters(stream)
        assert sorted(letter.raw for letter in letters) == sorted(bad)
        by_raw = {letter.raw: letter for letter in letters}
        assert "not JSON" in by_raw[b"not json"].error
        assert "missing required attribute(s) 'source'" in by_raw[bad[1]].error
        assert "UTF-8" in by_raw[b"\xff\xfe"].error
        assert all(letter.event is None and letter.attempts == 1 for letter in letters)

    async def test_a_malformed_message_near_the_limit_is_dead_lettered_with_its_start(
        self, broker: Broker, stream: str
    ) -> None:
        """In base64 a dead letter is a third bigger than its message: one of nearly the
        broker's size could never be stored whole, so it keeps an excerpt and the reason
        (before, it was redelivered for ever)."""
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        (good,) = events(1)
        huge = b"not json " + b"x" * (broker.max_event_bytes * 9 // 10)
        await self.publish_raw(broker, stream, huge)
        await broker.publish(stream, good)
        await seen.wait_for(lambda: good.id in seen.ids(), "the event after it")
        (letter,) = await broker.dead_letters(stream)
        assert letter.cut_from == len(huge) and huge.startswith(letter.raw)
        assert len(letter.raw) > len(huge) // 2 and "not JSON" in letter.error
        assert f"of {len(huge):,} bytes)" in letter.error

    async def test_another_cloudevents_specversion_is_dead_lettered_saying_which_is_read(
        self, broker: Broker, stream: str
    ) -> None:
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        (good,) = events(1)
        other = good.to_json().replace(b'"specversion":"1.0"', b'"specversion":"2.0"', 1)
        await self.publish_raw(broker, stream, other)
        await broker.publish(stream, good)
        await seen.wait_for(lambda: good.id in seen.ids(), "the good event")
        assert seen.ids() == [good.id]
        (letter,) = await broker.dead_letters(stream)
        assert letter.raw == other and letter.event is None and letter.attempts == 1
        assert "specversion '2.0' is not supported" in letter.error
        assert "reads specversion '1.0'" in letter.error

    async def test_an_unknown_extension_attribute_is_delivered_not_dead_lettered(
        self, broker: Broker, stream: str
    ) -> None:
        """A foreign producer's extensions reach the handler, kept in ``event.extensions``."""
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        (good,) = events(1)
        foreign = good.to_json().replace(
            b',"data":', b',"comexampletenant":"acme","comexamplerank":3,"data":', 1
        )
        await self.publish_raw(broker, stream, foreign)
        await seen.wait_for(lambda: good.id in seen.ids(), "the event with extensions")
        (delivery,) = seen.deliveries
        assert delivery.raw == foreign
        assert dict(delivery.event.extensions) == {"comexampletenant": "acme", "comexamplerank": 3}
        assert delivery.event.to_json() == foreign  # written back as it came
        assert await broker.dead_letters(stream) == []

    async def test_an_event_held_by_a_dead_consumer_goes_to_another(
        self, broker: Broker, broker_factory: BrokerFactory, stream: str
    ) -> None:
        doomed = await broker_factory()
        started, never = asyncio.Event(), asyncio.Event()

        async def stuck(delivery: Delivery) -> None:
            started.set()
            await never.wait()

        await doomed.subscribe(stream, "alpha", stuck, prefetch=1)
        (event,) = events(1)
        await broker.publish(stream, event)
        async with asyncio.timeout(WAIT):
            await started.wait()
        await self.kill(doomed)
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        await seen.wait_for(lambda: len(seen.deliveries) >= 1, "the redelivery")
        # A redelivery, so it counts toward max_attempts. At least 2 rather than exactly 2:
        # JetStream counts a delivery to a pull request the dead client left behind.
        assert seen.ids() == [event.id]
        assert seen.attempts()[0] >= 2, seen.summary()

    async def test_close_lets_the_running_handler_finish(self, broker: Broker, stream: str) -> None:
        started, release = asyncio.Event(), asyncio.Event()
        handler: list[str] = []  # how the handler ended: "finished" or "cancelled"

        async def slow(delivery: Delivery) -> None:
            started.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                handler.append("cancelled")
                raise
            handler.append("finished")

        subscription = await broker.subscribe(stream, "alpha", slow)
        await broker.publish(stream, events(1)[0])
        async with asyncio.timeout(WAIT):
            await started.wait()
        closing = asyncio.create_task(broker.close())
        # Recorded at the very moment close() returns, however long it took to get there.
        when_closed: list[tuple[list[str], bool]] = []
        closing.add_done_callback(
            lambda _: when_closed.append((list(handler), subscription.running))
        )
        await asyncio.sleep(0)  # one turn of the loop, in which close() begins
        with pytest.raises(BrokerError, match="closed"):
            await broker.publish(stream, events(1)[0])  # close() has begun...
        assert not closing.done(), "close() returned while a handler was still running"
        release.set()  # ...and the handler is still held: close() must wait for it
        async with asyncio.timeout(WAIT):
            await closing
        assert when_closed == [(["finished"], False)], (
            "close() must return only after the running handler finished (not cancelled) "
            f"and its subscription stopped; it returned with {when_closed}"
        )
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sagakit")]
        with pytest.raises(BrokerError, match="closed"):
            await broker.publish(stream, events(1)[0])
        await broker.close()

    async def test_a_stream_without_dead_letters_lists_none(
        self, broker: Broker, stream: str
    ) -> None:
        assert await broker.dead_letters(stream) == []

    async def test_names_some_broker_would_refuse_are_refused(self, broker: Broker) -> None:
        with pytest.raises(BrokerNameError, match=r"stream name 'a\.b'"):
            await broker.publish("a.b", events(1)[0])
        with pytest.raises(BrokerNameError, match="group name"):
            await broker.subscribe("ok", "two words", Recorder())

    async def test_a_payload_that_is_not_json_is_refused_before_publishing(
        self, broker: Broker, stream: str
    ) -> None:
        with pytest.raises(MalformedEventError, match="data is not JSON"):
            await broker.publish(stream, Event.new("Odd", {1, 2}, source="contract"))
