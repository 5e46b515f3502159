"""The tracker and forward events heard after a saga began compensating.

A producer that re-publishes an event outside an outbox gives it a new id, so nothing
de-duplicates it; for a saga already compensating or compensated, the tracker must flag it
for a person rather than append the steps it reports as if the saga had gone forward.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import pytest

from sagakit import Client, MemoryStore, SagaState, SagaStatus, StepStatus
from sagakit.bus import Event, MemoryBroker
from sagakit.choreography import Choreography, ChoreographyStep, Tracker
from sagakit.log import RecordType
from sagakit.log._codec import decode

FLOW = Choreography(
    "late_flow",
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
)
SAGA = "o-late"


class Events:
    """One saga's events, each caused by the one named, with increasing times."""

    def __init__(self) -> None:
        self.at = time.time()
        self.made: dict[str, Event] = {}

    def make(self, kind: str, source: str, cause: str | None = None, **data: Any) -> Event:
        event = Event.new(
            kind,
            {"order_id": SAGA, **data},
            source=source,
            correlation_id=None if cause else SAGA,
            caused_by=self.made[cause] if cause else None,
        )
        self.at += 0.01
        self.made[kind] = dataclasses.replace(event, time=self.at)
        return self.made[kind]

    def again(self, kind: str) -> Event:
        """``kind`` published once more by a producer retrying outside an outbox: a new
        id and time, the same saga and cause."""
        original = self.made[kind]
        self.at += 0.01
        fresh = Event.new(kind, original.data, source=original.source, correlation_id=SAGA)
        return dataclasses.replace(fresh, causation_id=original.causation_id, time=self.at)


def tracker(store: MemoryStore) -> Tracker:
    return Tracker(store, MemoryBroker(), [FLOW])


async def state_of(store: MemoryStore) -> SagaState:
    stored = await store.load(SAGA)
    assert stored is not None
    return SagaState.from_records(SAGA, stored.records)


async def compensated(store: MemoryStore) -> Events:
    """A saga whose stock ran short, refunded and cancelled, as the tracker recorded it."""
    events = Events()
    follow = tracker(store)
    await follow.track(events.make("OrderCreated", "orders", total=10))
    await follow.track(events.make("PaymentCompleted", "payments", "OrderCreated"))
    await follow.track(events.make("StockFailed", "inventory", "PaymentCompleted", reason="none"))
    await follow.track(events.make("PaymentRefunded", "payments", "StockFailed"))
    await follow.track(events.make("OrderCancelled", "orders", "PaymentRefunded"))
    assert (await state_of(store)).status is SagaStatus.COMPENSATED
    return events


async def test_a_forward_event_after_compensation_flags_the_saga_and_records_no_step() -> None:
    store = MemoryStore()
    events = await compensated(store)
    before = await state_of(store)
    late = events.again("PaymentCompleted")

    assert await tracker(store).track(late)

    state = await state_of(store)
    assert state.status is SagaStatus.NEEDS_ATTENTION
    assert (
        state.reason
        == f"forward event after compensation: PaymentCompleted {late.id} from payments"
    )
    assert state.before_attention is SagaStatus.COMPENSATED
    assert [s.status for s in state.steps] == [s.status for s in before.steps]
    (flag,) = state.records[len(before.records) :]  # one record, and no step_* among them
    assert flag.type is RecordType.SAGA_NEEDS_ATTENTION and flag.step is None
    assert decode(flag.data or "{}") == {
        "reason": state.reason,
        "failed": [],
        "event": "PaymentCompleted",
        "source": "payments",
        "event_id": late.id,
        "causation_id": late.causation_id,
    }


async def test_the_flag_is_raised_once_and_later_late_events_are_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    events = await compensated(store)
    follow = tracker(store)
    late = events.again("PaymentCompleted")
    assert await follow.track(late)
    flagged = await state_of(store)

    assert not await follow.track(late)  # a redelivery: in the log already
    assert not await tracker(store).track(late)  # a fresh tracker reads its id from the log
    with caplog.at_level(logging.WARNING, logger="sagakit.choreography"):
        assert not await follow.track(events.again("PaymentCompleted"))
        assert not await follow.track(events.make("StockReserved", "inventory", "PaymentCompleted"))
        assert not await follow.track(events.make("Shipped", "shipping", "StockReserved"))

    state = await state_of(store)
    assert state.records == flagged.records and state.reason == flagged.reason
    refused = [r.getMessage() for r in caplog.records if "already needs attention" in r.message]
    assert len(refused) == 3 and "Shipped" in refused[-1] and "not recorded" in refused[-1]


async def test_compensation_events_after_compensation_are_recorded_as_before() -> None:
    store = MemoryStore()
    events = await compensated(store)
    again = events.again("PaymentRefunded")
    failed_again = events.again("StockFailed")

    assert await tracker(store).track(again)
    assert await tracker(store).track(failed_again)

    state = await state_of(store)
    assert state.status is SagaStatus.COMPENSATED
    ids = {decode(r.data).get("event_id") for r in state.records if r.data}
    assert {again.id, failed_again.id} <= ids
    assert RecordType.SAGA_NEEDS_ATTENTION not in {r.type for r in state.records}


async def test_a_saga_flagged_while_compensating_is_not_ended_by_its_compensation() -> None:
    store = MemoryStore()
    events = Events()
    follow = tracker(store)
    await follow.track(events.make("OrderCreated", "orders"))
    await follow.track(events.make("PaymentCompleted", "payments", "OrderCreated"))
    await follow.track(events.make("StockFailed", "inventory", "PaymentCompleted"))
    late = events.again("OrderCreated")

    assert await follow.track(late)
    flagged = await state_of(store)
    assert flagged.status is SagaStatus.NEEDS_ATTENTION
    assert flagged.failed_compensations == ["create_order", "charge_payment"]

    await follow.track(events.make("PaymentRefunded", "payments", "StockFailed"))
    await follow.track(events.make("OrderCancelled", "orders", "PaymentRefunded"))
    state = await state_of(store)
    assert state.status is SagaStatus.NEEDS_ATTENTION  # the flag stays for a person
    assert state.reason == flagged.reason
    assert state.by_name["charge_payment"].status is StepStatus.COMPENSATED
    assert state.by_name["create_order"].status is StepStatus.COMPENSATED
    assert RecordType.SAGA_COMPENSATED not in {r.type for r in state.records}


async def test_an_operator_resolves_a_flagged_saga_back_to_compensated() -> None:
    store = MemoryStore()
    events = await compensated(store)
    follow = tracker(store)
    await follow.track(events.again("PaymentCompleted"))

    await Client(store, operator="ops").resolve(SAGA, note="no stock was reserved")

    state = await state_of(store)
    assert state.status is SagaStatus.COMPENSATED
    assert state.resolution == {"by": "ops", "note": "no stock was reserved"}
    # resolved, a new late event is a new incident: flagged again (the tracker re-reads)
    assert await follow.track(events.make("StockReserved", "inventory", "PaymentCompleted"))
    assert (await state_of(store)).status is SagaStatus.NEEDS_ATTENTION


async def test_an_event_overtaken_by_its_consequences_is_recorded_as_a_step() -> None:
    store = MemoryStore()
    events = Events()
    created = events.make("OrderCreated", "orders")
    paid = events.make("PaymentCompleted", "payments", "OrderCreated")
    short = events.make("StockFailed", "inventory", "PaymentCompleted")
    await tracker(store).track(created)
    await tracker(store).track(short)  # overtook the PaymentCompleted that caused it

    assert await tracker(store).track(paid)  # a fresh tracker: the causes come from the log

    state = await state_of(store)
    assert state.status is SagaStatus.COMPENSATING
    assert state.by_name["charge_payment"].status is StepStatus.SUCCEEDED
