"""The outbox and its relay: nothing is lost while the broker is away, and each saga's
events leave in the order they were committed.

The seat service commits five events of two bookings while its broker is unusable (closed
here: every publish fails at once, as an unreachable broker's do after their retries). The
relay's pass fails and the events stay in the outbox. A relay on a working broker then
publishes them all, each booking's in its own order.
"""

from __future__ import annotations

import asyncio

from sagakit import Event, MemoryBroker, Relay
from sagakit.bus import Delivery

from ticket_sale import STREAM, fresh, seat_service

COMMITTED = [
    ("B-3001", "SeatHeld"),
    ("B-3002", "SeatHeld"),
    ("B-3001", "SeatMoved"),
    ("B-3002", "SeatReleased"),
    ("B-3001", "SeatReleased"),
]


# --8<-- [start:outbox]
async def main() -> None:
    fresh("seats.db")
    down = MemoryBroker()
    await down.close()  # every publish to it now fails
    seats = seat_service(down)
    for booking_id, event_type in COMMITTED:  # each in its own local transaction
        await seats.publish(event_type, {"booking_id": booking_id}, correlation_id=booking_id)

    failed = await seats.relay.publish_pending()  # what one pass of Relay.run does
    assert failed.error is not None and failed.sent == 0
    assert failed.failed is not None and failed.failed.event.type == "SeatHeld"
    assert await seats.db.backlog() == 5  # still in the outbox, nothing lost

    live = MemoryBroker()
    heard: list[Event] = []
    all_heard = asyncio.Event()

    async def audit(delivery: Delivery) -> None:
        heard.append(delivery.event)
        if len(heard) == len(COMMITTED):
            all_heard.set()

    await live.subscribe(STREAM, "audit", audit)  # subscribe first: groups hear later events
    relay = Relay(seats.db, live)  # the service's own relay, once its broker is back
    done = await relay.publish_pending()
    assert (done.error, done.sent) == (None, 5)
    await asyncio.wait_for(all_heard.wait(), timeout=10)

    assert await seats.db.backlog() == 0
    for booking_id in ("B-3001", "B-3002"):
        wanted = [kind for saga, kind in COMMITTED if saga == booking_id]
        assert [e.type for e in heard if e.correlation_id == booking_id] == wanted
    await live.close()
    await seats.close()
    print("5 events kept while the broker was down, then published in order per booking")


# --8<-- [end:outbox]

if __name__ == "__main__":
    asyncio.run(main())
