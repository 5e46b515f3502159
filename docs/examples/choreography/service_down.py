"""A service that is down misses nothing: the events wait in the broker for its group.

The payment service subscribes once, then stops (a deploy, a crash). Bookings are made
meanwhile. When it starts again, under the same name and on the same database, it charges
each of them once, in the order they were made.
"""

from __future__ import annotations

import asyncio

from sagakit import MemoryBroker, Service
from sagakit.bus import Delivery

from ticket_sale import STREAM, fresh, hold_seat, payment_service, rows, seat_service


async def run_until_stopped(service: Service, stop: asyncio.Event) -> asyncio.Task[None]:
    running = asyncio.create_task(service.run(stop))
    await service.ready.wait()
    return running


# --8<-- [start:down]
async def main() -> None:
    fresh("seats.db", "payments.db")
    broker = MemoryBroker()  # one broker server; each process below has its own connection
    seats = seat_service(broker.sibling())

    first_stop = asyncio.Event()
    first = await run_until_stopped(payment_service(broker.sibling()), first_stop)
    first_stop.set()  # the group "payments" exists now, and keeps its place in the stream
    await first

    charged = asyncio.Event()

    async def audit(delivery: Delivery) -> None:  # a group of its own, to know when to stop
        if delivery.event.type == "PaymentTaken" and delivery.event.correlation_id == "B-5002":
            charged.set()

    await broker.subscribe(STREAM, "audit", audit)
    seats_stop = asyncio.Event()
    seats_running = await run_until_stopped(seats, seats_stop)  # its relay publishes
    for n, seat in enumerate(("E1", "E2", "E3")):
        booking = {"booking_id": f"B-500{n}", "seat": seat, "card": "tok_visa", "cents": 3000}
        await hold_seat(seats, booking)

    restarted = payment_service(broker.sibling())  # same name, same payments.db
    stop = asyncio.Event()
    running = await run_until_stopped(restarted, stop)
    await asyncio.wait_for(charged.wait(), timeout=10)
    stop.set()
    seats_stop.set()
    await asyncio.gather(running, seats_running)

    charges = rows("payments.db", "SELECT booking_id FROM charges")
    assert charges == [("B-5000",), ("B-5001",), ("B-5002",)]
    await seats.close()
    await restarted.close()
    await broker.close()
    print("3 bookings made while payments was down, each charged once after its restart")


# --8<-- [end:down]

if __name__ == "__main__":
    asyncio.run(main())
