"""The outbox, the inbox and the relay, over SQLite files and the in-memory broker.

The promises under test: an event written with a change is published even if the process
dies between the commit and the publish; a row is marked sent only once the broker has it;
one saga's events leave in order; a broker that is down costs a bounded number of tries.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from choreography_fakes import WAIT, FlakyBroker, eventually, running

from sagakit import Retry
from sagakit.bus import Delivery, Event, MemoryBroker
from sagakit.choreography import Relay, SqliteDatabase
from sagakit.errors import BrokerNameError, LocalDatabaseError

FAST = Retry(attempts=None, backoff=0.0375, max_backoff=0.0375, jitter=1 / 3)
"""Waits of 0.025 to 0.05 s between the relay's passes."""


def event(kind: str, saga: str) -> Event:
    return Event.new(kind, {"saga": saga}, source="test", correlation_id=saga)


async def enqueue(db: SqliteDatabase, *events: Event, stream: str = "s") -> None:
    async with db.transaction() as tx:
        tx.connection.execute("INSERT INTO things (note) VALUES ('changed')")
        for one in events:
            await tx.enqueue(stream, one)


def database(tmp_path: Path) -> SqliteDatabase:
    return SqliteDatabase(tmp_path / "service.db", "CREATE TABLE IF NOT EXISTS things (note TEXT);")


class Seen:
    """Records what a subscription received."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.events.append(delivery.event)

    def ids(self) -> list[str]:
        return [e.id for e in self.events]


async def test_an_event_committed_before_a_crash_is_published_after_the_restart(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    seen = Seen()
    await broker.subscribe("s", "g", seen)
    db = database(tmp_path)
    created = event("OrderCreated", "o-1")
    await enqueue(db, created)
    await db.close()  # the process dies: the relay never ran

    reopened = database(tmp_path)
    assert await reopened.backlog() == 1
    relay = Relay(reopened, broker)
    outcome = await relay.publish_pending()

    assert (outcome.read, outcome.sent, outcome.error) == (1, 1, None)
    await eventually(lambda: seen.ids() == [created.id], "the event")
    assert await reopened.backlog() == 0
    assert (await relay.publish_pending()).read == 0  # sent once, not again
    await reopened.close()
    await broker.close()


async def test_a_rolled_back_transaction_leaves_nothing_to_publish(tmp_path: Path) -> None:
    db = database(tmp_path)

    async def fail_midway() -> None:
        async with db.transaction() as tx:
            await tx.enqueue("s", event("OrderCreated", "o-1"))
            assert await tx.first_delivery("svc", "e-1")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_midway()
    assert await db.backlog() == 0
    async with db.transaction() as tx:
        assert await tx.first_delivery("svc", "e-1")  # the inbox row was rolled back too
        assert not await tx.first_delivery("svc", "e-1")
        assert await tx.first_delivery("other-consumer", "e-1")
    await db.close()


async def test_a_publish_whose_confirmation_is_lost_is_repeated_with_the_same_id(
    tmp_path: Path,
) -> None:
    inner = MemoryBroker()
    seen = Seen()
    await inner.subscribe("s", "g", seen)
    broker = FlakyBroker(inner)
    db = database(tmp_path)
    created = event("OrderCreated", "o-1")
    await enqueue(db, created)
    relay = Relay(db, broker)

    broker.lose_acks = True
    assert (await relay.publish_pending()).error is not None
    assert await db.backlog() == 1  # not marked: the relay could not know it arrived
    broker.lose_acks = False
    assert (await relay.publish_pending()).sent == 1

    await eventually(lambda: len(seen.events) == 2, "both copies")
    assert seen.ids() == [created.id, created.id]  # a consumer's inbox drops the second
    await db.close()
    await inner.close()


async def test_a_saga_s_events_never_overtake_an_unsent_earlier_one(tmp_path: Path) -> None:
    inner = MemoryBroker()
    seen = Seen()
    await inner.subscribe("s", "g", seen)
    broker = FlakyBroker(inner)
    db = database(tmp_path)
    first, second = event("First", "slow"), event("Second", "slow")
    other = event("Other", "fast")
    await enqueue(db, first, second, other)
    relay = Relay(db, broker)

    broker.refuse = lambda e: e.id == first.id
    outcome = await relay.publish_pending()
    assert (outcome.read, outcome.sent) == (3, 1) and outcome.error is not None
    await eventually(lambda: seen.ids() == [other.id], "the other saga's event")

    broker.refuse = lambda e: False
    assert (await relay.publish_pending()).sent == 2
    await eventually(lambda: len(seen.events) == 3, "every event")
    assert seen.ids() == [other.id, first.id, second.id]
    await db.close()
    await inner.close()


async def test_the_relay_backs_off_while_the_broker_is_down_and_resumes_after(
    tmp_path: Path,
) -> None:
    inner = MemoryBroker()
    seen = Seen()
    await inner.subscribe("s", "g", seen)
    broker = FlakyBroker(inner)
    broker.down = True
    db = database(tmp_path)
    relay = Relay(db, broker, poll=0.01, retry=FAST)
    created = event("OrderCreated", "o-1")
    await enqueue(db, created)

    async with running(relay.run):
        await eventually(lambda: len(broker.attempts) >= 2, "a retry after the back-off")
        assert await db.backlog() == 1  # kept meanwhile
        broker.down = False
        await eventually(lambda: seen.ids() == [created.id], "the event after the outage")
    assert await db.backlog() == 0
    await db.close()
    await inner.close()


async def _turns(count: int) -> None:
    """Let the loop run ``count`` times (a woken relay reaches the broker in about 6)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_commits_during_an_outage_do_not_cut_the_back_off_short(tmp_path: Path) -> None:
    """No spinning: however often a service wakes the relay, a failed pass is followed by
    the back-off's whole wait (an hour here), so the broker is tried once, not again."""
    inner = MemoryBroker()
    broker = FlakyBroker(inner)
    broker.down = True
    db = database(tmp_path)
    relay = Relay(db, broker, poll=0.01, retry=Retry(None, 3600.0, max_backoff=3600.0, jitter=0))
    await enqueue(db, event("OrderCreated", "o-1"))

    async with running(relay.run):
        await eventually(lambda: len(broker.attempts) == 1, "the first, failing pass")
        for _ in range(100):
            relay.wake()
            await _turns(20)  # in which a relay whose back-off a wake cut short would publish
        # Then ten polls on the loop's own clock, with a wake still set. The loop fires timers
        # in deadline order however slow the machine, so a relay that waits its poll (or a
        # wake) rather than the back-off has been resumed, and tried again, before this ends:
        # an observation window for something that must not happen, not a wait.
        relay.wake()
        await asyncio.sleep(10 * relay.poll)
        await _turns(20)
        assert len(broker.attempts) == 1
        assert await db.backlog() == 1
    await db.close()
    await inner.close()


async def test_a_wake_publishes_at_once_despite_a_long_poll(tmp_path: Path) -> None:
    broker = MemoryBroker()
    seen = Seen()
    await broker.subscribe("s", "g", seen)
    db = database(tmp_path)
    relay = Relay(db, broker, poll=3600)
    async with running(relay.run):
        await eventually(lambda: relay.published == 0, "the first (empty) pass")
        created = event("OrderCreated", "o-1")
        await enqueue(db, created)
        relay.wake()
        await eventually(lambda: seen.ids() == [created.id], "the woken publish", within=WAIT)
    await db.close()
    await broker.close()


async def test_many_sagas_are_published_in_batches_in_order(tmp_path: Path) -> None:
    broker = MemoryBroker()
    seen = Seen()
    await broker.subscribe("s", "g", seen, prefetch=100)
    db = database(tmp_path)
    events = [event(f"Step{i}", f"saga-{n}") for i in range(3) for n in range(40)]
    await enqueue(db, *events)
    relay = Relay(db, broker, batch=7)
    async with running(relay.run):
        await eventually(lambda: len(seen.events) == len(events), "every event")
    for n in range(40):
        steps = [e.type for e in seen.events if e.correlation_id == f"saga-{n}"]
        assert steps == ["Step0", "Step1", "Step2"]
    assert relay.published == len(events)
    await db.close()
    await broker.close()


async def test_sent_rows_can_be_pruned(tmp_path: Path) -> None:
    broker = MemoryBroker()
    db = database(tmp_path)
    await enqueue(db, event("A", "1"), event("B", "2"))
    await Relay(db, broker).publish_pending()
    await enqueue(db, event("C", "3"))
    assert await db.prune(time.time() + 1) == 2
    assert await db.backlog() == 1
    await db.close()


async def test_a_bad_stream_name_is_refused_when_enqueued(tmp_path: Path) -> None:
    db = database(tmp_path)
    with pytest.raises(BrokerNameError):
        async with db.transaction() as tx:
            await tx.enqueue("no.dots", event("A", "1"))
    await db.close()


def test_an_unusable_database_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(LocalDatabaseError, match=r"service\.db"):
        SqliteDatabase(tmp_path / "service.db", "CREATE TABLE broken (")


async def test_after_a_failed_pass_one_saga_probes_the_broker_before_the_rest(
    tmp_path: Path,
) -> None:
    inner = MemoryBroker()
    broker = FlakyBroker(inner)
    db = database(tmp_path)
    await enqueue(db, *(event("OrderCreated", f"o-{n}") for n in range(5)))
    relay = Relay(db, broker)
    broker.down = True
    assert (await relay.publish_pending()).sent == 0
    assert len(broker.attempts) == 5  # the first failure: every saga tried once

    broker.attempts.clear()
    assert (await relay.publish_pending()).sent == 0
    assert len(broker.attempts) == 1  # still down: only the probe

    broker.down = False
    assert (await relay.publish_pending()).sent == 5
    await db.close()
    await inner.close()


async def test_an_event_the_broker_refuses_holds_back_only_its_own_saga(tmp_path: Path) -> None:
    inner = MemoryBroker()
    seen = Seen()
    await inner.subscribe("s", "g", seen)
    broker = FlakyBroker(inner)
    db = database(tmp_path)
    poison, after = event("Huge", "o-poison"), event("Later", "o-poison")
    others = [event("OrderCreated", f"o-{n}") for n in range(20)]
    await enqueue(db, poison, after, *others)
    broker.too_big = lambda e: e.id == poison.id
    relay = Relay(db, broker, retry=Retry(None, 3600.0, max_backoff=3600.0, jitter=0))

    first = await relay.publish_pending()
    assert (first.sent, first.refused, first.error) == (20, 1, None)

    broker.attempts.clear()
    late = [event("OrderCreated", f"late-{n}") for n in range(5)]
    await enqueue(db, *late)
    second = await relay.publish_pending()  # the refused saga waits out its back-off
    assert (second.chains, second.sent, second.refused) == (5, 5, 0)
    assert poison not in broker.attempts and after not in broker.attempts
    await eventually(lambda: len(seen.events) == 25, "every other saga's event")
    assert sorted(seen.ids()) == sorted(e.id for e in others + late)
    assert await db.backlog() == 2
    await db.close()
    await broker.close()


async def test_an_event_refused_max_refusals_times_is_a_dead_letter_its_saga_waiting_behind(
    tmp_path: Path,
) -> None:
    inner = MemoryBroker()
    seen = Seen()
    await inner.subscribe("s", "g", seen)
    broker = FlakyBroker(inner)
    db = database(tmp_path)
    poison, after = event("Huge", "o-poison"), event("Later", "o-poison")
    await enqueue(db, poison, after, event("OrderCreated", "o-1"))
    broker.too_big = lambda e: e.id == poison.id
    relay = Relay(db, broker, max_refusals=3, retry=Retry(None, 0.0, jitter=0))

    passes = [await relay.publish_pending() for _ in range(4)]
    assert [(p.refused, p.dead) for p in passes] == [(1, 0), (1, 0), (1, 1), (0, 0)]
    assert passes[-1].chains == 0  # the dead head keeps its chain back
    [dead] = await db.dead_letters()
    assert (dead.id, dead.correlation_id, dead.refusals) == (1, "o-poison", 3)
    assert "payload too large" in dead.error and Event.parse(dead.event) == poison
    assert await db.backlog() == 1  # the later event waits; the dead one is not counted

    broker.too_big = lambda e: False  # say the broker's limit was raised
    assert await db.resend([dead.id, 99]) == 1
    resent = await relay.publish_pending()
    assert (resent.chains, resent.sent) == (1, 2)
    await eventually(lambda: len(seen.events) == 3, "the re-sent saga, in order")
    assert [e.id for e in seen.events if e.correlation_id == "o-poison"] == [poison.id, after.id]
    assert (await db.dead_letters(), await db.backlog()) == ([], 0)
    await db.close()
    await broker.close()


async def test_an_outbox_row_that_cannot_be_read_is_a_dead_letter_at_once(tmp_path: Path) -> None:
    broker = MemoryBroker()
    seen = Seen()
    await broker.subscribe("s", "g", seen)
    db = database(tmp_path)
    good = event("OrderCreated", "o-1")
    await enqueue(db, event("Old", "o-legacy"), event("Later", "o-legacy"), good)
    db.connection.execute("UPDATE sagakit_outbox SET event = '{\"v\": 0}' WHERE id = 1")

    outcome = await Relay(db, broker).publish_pending()
    assert (outcome.chains, outcome.sent) == (1, 1)
    [dead] = await db.dead_letters()
    assert dead.id == 1 and dead.refusals == 0 and "cannot be read" in dead.error
    await eventually(lambda: len(seen.events) == 1, "the readable saga's event")
    assert seen.ids() == [good.id]
    await db.close()
    await broker.close()
