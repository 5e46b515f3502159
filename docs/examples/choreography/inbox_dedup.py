"""The inbox: the same event delivered twice charges the card once.

Brokers deliver at least once, and a relay that crashed between publishing and marking the
row sent publishes again. Here the payment service is handed one ``SeatHeld`` event twice,
as its subscription would hand it a redelivery, without a broker's timing in the way.
"""

from __future__ import annotations

import asyncio

from sagakit import Event, MemoryBroker
from sagakit.bus import Delivery

from ticket_sale import STREAM, fresh, payment_service, rows


# --8<-- [start:dedup]
async def main() -> None:
    fresh("payments.db")
    broker = MemoryBroker()
    payments = payment_service(broker)
    held = Event.new(
        "SeatHeld",
        {"booking_id": "B-2001", "seat": "C3", "card": "tok_visa", "cents": 4800},
        source="seats",
        correlation_id="B-2001",
    )
    for attempt in (1, 2):  # the first delivery, then a redelivery of the same event
        await payments.handle(Delivery(held, attempt, held.to_json(), STREAM, "payments"))

    assert (payments.handled, payments.duplicates) == (1, 1)
    assert rows("payments.db", "SELECT * FROM charges") == [("B-2001", 4800)]
    inbox = rows("payments.db", "SELECT consumer, event_id FROM sagakit_inbox")
    assert inbox == [("payments", held.id)]  # recorded in the charge's own transaction
    outbox = rows("payments.db", "SELECT correlation_id, event FROM sagakit_outbox")
    assert len(outbox) == 1  # one PaymentTaken waits for the relay, not two
    taken = Event.parse(outbox[0][1])
    assert (taken.type, taken.correlation_id, taken.causation_id) == (
        "PaymentTaken",
        "B-2001",
        held.id,
    )
    await payments.close()
    print("handled 1, duplicates 1, charges 1")


# --8<-- [end:dedup]

if __name__ == "__main__":
    asyncio.run(main())
