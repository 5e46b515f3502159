"""The tracker's view of silence: a saga that hears nothing for ``max_gap`` seconds is marked
``needs_attention``, and an event that comes later still moves it on.

``Tracker.track`` is what the tracker's subscription calls for each event, and
``Tracker.check_stuck`` is what it runs every ``check_every`` seconds; calling both directly,
with ``now`` an hour ahead, shows what an hour of silence does without waiting an hour.
"""

from __future__ import annotations

import asyncio
import time

from sagakit import Event, MemoryBroker, MemoryStore, SagaState, SagaStatus, Store, Tracker

from ticket_sale import TICKET_SALE


async def state_of(store: Store, saga_id: str) -> SagaState:
    stored = await store.load(saga_id)
    assert stored is not None
    return SagaState.from_records(saga_id, stored.records)


# --8<-- [start:late]
async def main() -> None:
    store = MemoryStore()  # or the saga log the services' operators read
    tracker = Tracker(store, MemoryBroker(), [TICKET_SALE])
    held = Event.new("SeatHeld", {"booking_id": "B-6001"}, source="seats", correlation_id="B-6001")
    paid = Event.new("PaymentTaken", {"booking_id": "B-6001"}, source="payments", caused_by=held)
    assert await tracker.track(held) and await tracker.track(paid)
    assert not await tracker.track(paid)  # a redelivery: already in the log, nothing added
    assert (await state_of(store, "B-6001")).status is SagaStatus.RUNNING

    assert await tracker.check_stuck() == []  # silent for less than max_gap (60 s)
    an_hour_later = time.time() + 3600
    assert await tracker.check_stuck(now=an_hour_later) == ["B-6001"]
    stuck = await state_of(store, "B-6001")
    assert stuck.status is SagaStatus.NEEDS_ATTENTION
    assert stuck.reason is not None
    assert stuck.reason.startswith("stuck: no event for 3600s (max_gap 60s)")
    assert stuck.reason.endswith("last heard: PaymentTaken; waiting for TicketIssued")

    issued = Event.new("TicketIssued", {"booking_id": "B-6001"}, source="tickets", caused_by=paid)
    assert await tracker.track(issued)  # the ticket service was only slow
    assert (await state_of(store, "B-6001")).status is SagaStatus.COMPLETED
    print("B-6001: running, needs_attention after an hour of silence, completed when it came")


# --8<-- [end:late]

if __name__ == "__main__":
    asyncio.run(main())
