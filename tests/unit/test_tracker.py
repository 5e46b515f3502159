"""The tracker: choreographed sagas rebuilt into the saga log, as ``sagakit show`` reads it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pytest
from choreography_fakes import eventually, running

from sagakit import MemoryStore, SagaState, SagaStatus, StepStatus
from sagakit.bus import Event, MemoryBroker
from sagakit.choreography import Choreography, ChoreographyStep, Tracker
from sagakit.choreography._tracker import LEASE_OWNER
from sagakit.errors import ConcurrentUpdateError, SagaDefinitionError
from sagakit.log import Record, RecordType
from sagakit.log._codec import decode
from sagakit.store import StoreWrapper

FLOW = Choreography(
    "order_flow",
    version=2,
    steps=[
        ChoreographyStep("create_order", succeeded="OrderCreated", compensated="OrderCancelled"),
        ChoreographyStep(
            "charge_payment",
            succeeded="PaymentCompleted",
            failed="PaymentDeclined",
            compensated="PaymentRefunded",
        ),
        ChoreographyStep("reserve_stock", succeeded="StockReserved", failed="StockFailed"),
        ChoreographyStep("ship", succeeded="Shipped", kind="pivot"),
    ],
    starts="OrderCreated",
    completes="Shipped",
    fails=("PaymentDeclined", "StockFailed"),
    compensated="OrderCancelled",
    max_gap=30.0,
)


class Chain:
    """Builds one saga's events, each caused by the one before, as the services would."""

    def __init__(self, saga: str = "o-1", at: float | None = None) -> None:
        self.saga = saga
        self.last: Event | None = None
        self.at = time.time() if at is None else at

    def next(self, kind: str, source: str, **payload: Any) -> Event:
        event = Event.new(
            kind,
            {"order_id": self.saga, **payload},
            source=source,
            correlation_id=None if self.last else self.saga,
            caused_by=self.last,
        )
        self.at += 0.01
        self.last = dataclasses.replace(event, time=self.at)
        return self.last


async def state_of(store: MemoryStore, saga_id: str) -> SagaState:
    stored = await store.load(saga_id)
    assert stored is not None
    return SagaState.from_records(saga_id, stored.records)


def statuses(state: SagaState) -> dict[str, StepStatus]:
    return {step.name: step.status for step in state.steps}


def tracker(store: MemoryStore, broker: MemoryBroker | None = None) -> Tracker:
    return Tracker(store, broker or MemoryBroker(), [FLOW])


async def test_a_happy_flow_ends_completed_with_every_step_succeeded() -> None:
    store = MemoryStore()
    chain = Chain()
    events = [
        chain.next("OrderCreated", "orders", total=10),
        chain.next("PaymentCompleted", "payments"),
        chain.next("StockReserved", "inventory"),
        chain.next("Shipped", "shipping"),
    ]
    follow = tracker(store)
    for one in events:
        assert await follow.track(one)

    state = await state_of(store, "o-1")
    assert (state.name, state.version, state.status) == ("order_flow", 2, SagaStatus.COMPLETED)
    assert state.input == {"order_id": "o-1", "total": 10}
    assert set(statuses(state).values()) == {StepStatus.SUCCEEDED}
    result = decode(state.raw_results["charge_payment"])
    assert result["event"] == "PaymentCompleted" and result["source"] == "payments"
    assert result["event_id"] == events[1].id and result["causation_id"] == events[0].id
    assert state.records[-1].type is RecordType.SAGA_COMPLETED
    assert state.records[-1].at == events[-1].time  # the timeline keeps the events' own times


async def test_a_failure_and_its_compensations_end_compensated() -> None:
    store = MemoryStore()
    chain = Chain()
    follow = tracker(store)
    for kind, source, extra in [
        ("OrderCreated", "orders", {}),
        ("PaymentCompleted", "payments", {}),
        ("StockFailed", "inventory", {"reason": "short of 1 GLOBE"}),
        ("PaymentRefunded", "payments", {}),
        ("OrderCancelled", "orders", {}),
    ]:
        await follow.track(chain.next(kind, source, **extra))

    state = await state_of(store, "o-1")
    assert state.status is SagaStatus.COMPENSATED
    assert state.reason == "StockFailed from inventory: short of 1 GLOBE"
    assert statuses(state) == {
        "create_order": StepStatus.COMPENSATED,
        "charge_payment": StepStatus.COMPENSATED,
        "reserve_stock": StepStatus.FAILED,
        "ship": StepStatus.SKIPPED,
    }
    failed = state.by_name["reserve_stock"]
    assert failed.error == {"type": "StockFailed", "message": "short of 1 GLOBE"}
    kinds = [r.type for r in state.records]
    assert kinds.count(RecordType.SAGA_COMPENSATING) == 1
    assert kinds[-1] is RecordType.SAGA_COMPENSATED


async def test_a_redelivered_event_appends_nothing() -> None:
    store = MemoryStore()
    chain = Chain()
    created, paid = chain.next("OrderCreated", "orders"), chain.next("PaymentCompleted", "pay")
    follow = tracker(store)
    assert await follow.track(created) and await follow.track(paid)
    before = len((await state_of(store, "o-1")).records)

    assert not await follow.track(paid)
    assert not await tracker(store).track(created)  # a fresh tracker reads the ids from the log
    assert len((await state_of(store, "o-1")).records) == before


async def test_events_out_of_order_still_end_right() -> None:
    store = MemoryStore()
    chain = Chain()
    created = chain.next("OrderCreated", "orders", total=5)
    paid = chain.next("PaymentCompleted", "payments")
    reserved = chain.next("StockReserved", "inventory")
    shipped = chain.next("Shipped", "shipping")
    follow = tracker(store)
    for one in (paid, shipped, created, reserved):
        assert await follow.track(one)

    state = await state_of(store, "o-1")
    assert state.status is SagaStatus.COMPLETED
    assert set(statuses(state).values()) == {StepStatus.SUCCEEDED}
    assert state.input is None  # heard of through a later event: its input is unknown
    ids = [decode(r.data).get("event_id") for r in state.records if r.data and "event_id" in r.data]
    assert sorted(ids) == sorted(e.id for e in (created, paid, reserved, shipped))


async def test_a_second_writer_is_detected_and_the_event_recorded_once() -> None:
    store = MemoryStore()
    chain = Chain()
    created, paid = chain.next("OrderCreated", "orders"), chain.next("PaymentCompleted", "p")
    reserved = chain.next("StockReserved", "inventory")
    first, second = tracker(store), tracker(store)
    await first.track(created)
    await second.track(paid)  # ``first``'s cached state is now stale
    assert await first.track(reserved)
    state = await state_of(store, "o-1")
    assert [s.status for s in state.steps][:3] == [StepStatus.SUCCEEDED] * 3
    assert len(state.records) == 1 + 3 * 2


async def test_a_silent_saga_is_reported_stuck_and_an_event_later_still_ends_it() -> None:
    store = MemoryStore()
    chain = Chain(at=time.time() - 100)
    follow = tracker(store)
    await follow.track(chain.next("OrderCreated", "orders"))
    await follow.track(chain.next("PaymentCompleted", "payments"))

    assert await follow.check_stuck(time.time() - 90) == []  # within max_gap then
    assert await follow.check_stuck() == ["o-1"]
    assert await follow.check_stuck() == []  # once
    state = await state_of(store, "o-1")
    assert state.status is SagaStatus.NEEDS_ATTENTION
    assert state.reason is not None and "stuck: no event for 10" in state.reason
    assert "last heard: PaymentCompleted" in state.reason
    assert "waiting for StockFailed or StockReserved" in state.reason

    await follow.track(chain.next("StockReserved", "inventory"))
    await follow.track(chain.next("Shipped", "shipping"))
    assert (await state_of(store, "o-1")).status is SagaStatus.COMPLETED


async def test_a_stuck_compensation_names_what_is_left_to_undo() -> None:
    store = MemoryStore()
    chain = Chain(at=time.time() - 100)
    follow = tracker(store)
    for kind in ("OrderCreated", "PaymentCompleted", "StockFailed"):
        await follow.track(chain.next(kind, "svc"))
    await follow.check_stuck()
    state = await state_of(store, "o-1")
    assert state.failed_compensations == ["create_order", "charge_payment"]
    assert state.reason is not None and "waiting for PaymentRefunded" in state.reason


async def test_tracked_sagas_are_never_claimed_by_workers() -> None:
    store = MemoryStore()
    await tracker(store).track(Chain().next("OrderCreated", "orders"))
    (instance,) = await store.unfinished()
    assert instance.lease_owner == LEASE_OWNER
    assert await store.claim("worker-1", 10, 30.0, due_only=False) == []


async def test_events_of_no_choreography_are_ignored() -> None:
    store = MemoryStore()
    assert not await tracker(store).track(Event.new("Unrelated", source="x"))
    assert await store.instances() == []


async def test_the_tracker_follows_a_stream_and_checks_for_stuck_sagas() -> None:
    store = MemoryStore()
    broker = MemoryBroker()
    flow = Choreography(
        "tiny",
        steps=[ChoreographyStep("a", succeeded="A"), ChoreographyStep("b", succeeded="B")],
        starts="A",
        completes="B",
        max_gap=0.2,
    )
    follow = Tracker(store, broker.sibling(), [flow], streams=["s"], check_every=0.05)
    async with running(follow.run):
        await eventually(follow.ready.is_set, "the subscription")
        started = Event.new("A", source="x", correlation_id="t-1")
        await broker.publish("s", started)
        await broker.publish("s", Event.new("B", source="x", caused_by=started))
        await broker.publish("s", Event.new("A", source="x", correlation_id="t-2"))

        async def status(saga_id: str) -> SagaStatus | None:
            stored = await store.load(saga_id)
            return None if stored is None else stored.instance.status

        done: dict[str, SagaStatus | None] = {}

        async def poll() -> bool:
            for saga_id in ("t-1", "t-2"):
                done[saga_id] = await status(saga_id)
            return done == {"t-1": SagaStatus.COMPLETED, "t-2": SagaStatus.NEEDS_ATTENTION}

        async with store.watch("t-2") as change:
            for _ in range(200):
                if await poll():
                    break
                await change.wait(0.05)
        assert done == {"t-1": SagaStatus.COMPLETED, "t-2": SagaStatus.NEEDS_ATTENTION}


def test_an_event_in_two_choreographies_is_refused() -> None:
    other = Choreography(
        "other", steps=[ChoreographyStep("x", succeeded="OrderCreated")], starts="OrderCreated",
        completes="OrderCreated",
    )  # fmt: skip
    with pytest.raises(SagaDefinitionError, match="also belongs to order_flow@2"):
        Tracker(MemoryStore(), MemoryBroker(), [FLOW, other])


class _AlwaysTaken(StoreWrapper):
    """Every append finds its log position written by someone else, once ``taken`` is set."""

    taken = False

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        if self.taken:
            raise ConcurrentUpdateError(saga_id, records[0].seq)
        await super().append(saga_id, records, status)


async def test_conflicts_that_never_end_are_raised_for_the_broker_to_retry() -> None:
    store = _AlwaysTaken(MemoryStore())
    follow = Tracker(store, MemoryBroker(), [FLOW])
    chain = Chain()
    await follow.track(chain.next("OrderCreated", "orders"))

    store.taken = True
    with pytest.raises(ConcurrentUpdateError):
        await follow.track(chain.next("PaymentCompleted", "payments"))
