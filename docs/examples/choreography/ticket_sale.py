"""A concert ticket sold by three services that only hear and emit events.

seats holds a seat (``SeatHeld``); payments charges the card (``PaymentTaken``, or
``PaymentFailed`` for a declined card); tickets issues the ticket (``TicketIssued``); a failed
payment makes seats release the hold (``SeatReleased``). Each service keeps its own SQLite
file in the current directory, with its tables, its inbox and its outbox. A ``Tracker``
writes every booking into the saga log ``tickets.db``, so ``sagakit list`` and ``sagakit show``
show them. The other examples in this directory import the services from here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from sagakit import (
    Broker,
    Choreography,
    ChoreographyStep,
    Event,
    SagaState,
    SagaStatus,
    Service,
    Store,
    Tracker,
    Transaction,
    open_broker,
    open_store,
)

STREAM = "box-office"
SAGA_LOG = "sqlite:///tickets.db"
FILES = ("seats.db", "payments.db", "tickets_issued.db", "tickets.db")
DECLINED = {"tok_stolen"}
"""Cards the (fake) card processor refuses."""
BOOKINGS = [
    {"booking_id": "B-1001", "seat": "A7", "card": "tok_visa", "cents": 6500},
    {"booking_id": "B-1002", "seat": "A8", "card": "tok_stolen", "cents": 6500},
]


# --8<-- [start:services]
def seat_service(broker: Broker, db: str = "seats.db") -> Service:
    seats = Service(
        "seats",
        db,  # a SQLite file: the service's tables, its inbox and its outbox
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS holds (booking_id TEXT PRIMARY KEY, seat TEXT);",
    )

    @seats.on("PaymentFailed")
    def release(event: Event, tx: Transaction) -> None:  # the compensation of a hold
        booking_id = event.data["booking_id"]
        tx.db.execute("DELETE FROM holds WHERE booking_id = ?", (booking_id,))
        tx.emit("SeatReleased", {"booking_id": booking_id})

    return seats


async def hold_seat(seats: Service, booking: dict[str, Any]) -> Event:
    """The seat service's intake (an HTTP handler, say): the hold and the event that starts
    the saga commit together, or neither does. The booking id is the saga's id."""
    async with seats.transaction() as tx:
        tx.db.execute("INSERT INTO holds VALUES (?, ?)", (booking["booking_id"], booking["seat"]))
        started = tx.emit("SeatHeld", booking, correlation_id=booking["booking_id"])
    return started


async def authorize(card: str, cents: int, key: str) -> bool:
    """A stand-in for the card processor's API; ``key`` lets it refuse a second charge."""
    return card not in DECLINED


def payment_service(broker: Broker, db: str = "payments.db") -> Service:
    payments = Service(
        "payments",
        db,
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS charges (booking_id TEXT, cents INTEGER);",
    )

    @payments.on("SeatHeld")
    async def charge(event: Event, tx: Transaction) -> None:  # async handlers work too
        booking = event.data
        # A remote call is outside the local transaction: if the commit fails after it, the
        # event comes again and so does the call. The event id is a stable key for it.
        if not await authorize(booking["card"], booking["cents"], key=event.id):
            tx.emit("PaymentFailed", {"booking_id": booking["booking_id"], "reason": "declined"})
            return
        charged = (booking["booking_id"], booking["cents"])
        tx.db.execute("INSERT INTO charges VALUES (?, ?)", charged)
        tx.emit("PaymentTaken", {k: booking[k] for k in ("booking_id", "seat", "cents")})

    return payments


def ticket_service(broker: Broker, db: str = "tickets_issued.db") -> Service:
    tickets = Service(
        "tickets",
        db,
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS tickets (booking_id TEXT, seat TEXT);",
    )

    @tickets.on("PaymentTaken")
    def issue(event: Event, tx: Transaction) -> None:
        booking_id, seat = event.data["booking_id"], event.data["seat"]
        tx.db.execute("INSERT INTO tickets VALUES (?, ?)", (booking_id, seat))
        tx.emit("TicketIssued", {"booking_id": booking_id, "seat": seat})

    return tickets


# --8<-- [end:services]


# --8<-- [start:choreography]
TICKET_SALE = Choreography(  # nothing runs this: it tells the Tracker what each event means
    "ticket_sale",
    version=1,
    steps=[
        ChoreographyStep("hold_seat", succeeded="SeatHeld", compensated="SeatReleased"),
        ChoreographyStep("take_payment", succeeded="PaymentTaken", failed="PaymentFailed"),
        ChoreographyStep("issue_ticket", succeeded="TicketIssued", kind="pivot"),
    ],
    starts="SeatHeld",
    completes="TicketIssued",
    fails="PaymentFailed",  # the saga turns compensating
    compensated="SeatReleased",  # ... and this ends it compensated
    max_gap=60.0,  # silent for longer before it ends: needs_attention
)
# --8<-- [end:choreography]


def rows(db: str, query: str) -> list[tuple[Any, ...]]:
    """Read a service's own database, as an auditor would."""
    with closing(sqlite3.connect(db)) as connection:
        return connection.execute(query).fetchall()


# --8<-- [start:ended]
async def ended(store: Store, saga_ids: Iterable[str], within: float = 30.0) -> list[SagaState]:
    """Each saga's state once the tracker has written its end (only the saga log knows)."""
    states = []
    async with asyncio.timeout(within):
        for saga_id in saga_ids:
            async with store.watch(saga_id) as change:
                while True:
                    stored = await store.load(saga_id)
                    state = SagaState.from_records(saga_id, stored.records if stored else [])
                    if state.status.is_terminal:
                        break
                    await change.wait(1.0)
            states.append(state)
    return states


# --8<-- [end:ended]


def fresh(*names: str) -> None:
    """Start from nothing, so an example can be run again in the same directory."""
    for name in names:
        for suffix in ("", "-wal", "-shm"):
            Path(name + suffix).unlink(missing_ok=True)


# --8<-- [start:main]
async def main() -> None:
    fresh(*FILES)
    store = await open_store(SAGA_LOG)
    broker = await open_broker("memory://")  # or redis://, nats://, amqp://
    services = [seat_service(broker), payment_service(broker), ticket_service(broker)]
    tracker = Tracker(store, broker, [TICKET_SALE], streams=[STREAM])
    parts: list[Tracker | Service] = [tracker, *services]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as running:
        for part in parts:
            running.create_task(part.run(stop))
        try:  # a group hears only what is published after it first subscribed
            await asyncio.gather(*(part.ready.wait() for part in parts))
            seats = services[0]
            for booking in BOOKINGS:
                await hold_seat(seats, booking)
            paid, declined = await ended(store, ["B-1001", "B-1002"])
        finally:
            stop.set()  # each part finishes what it is handling, then returns
    for service in services:
        await service.close()
    await broker.close()
    await store.close()

    assert paid.status is SagaStatus.COMPLETED
    assert [step.status.value for step in paid.steps] == ["succeeded"] * 3
    assert declined.status is SagaStatus.COMPENSATED
    assert declined.reason == "PaymentFailed from payments: declined"
    assert [step.status.value for step in declined.steps] == ["compensated", "failed", "skipped"]
    # the services' own tables agree: one charge and one ticket, and B-1002's hold is gone
    assert rows("payments.db", "SELECT booking_id FROM charges") == [("B-1001",)]
    assert rows("tickets_issued.db", "SELECT * FROM tickets") == [("B-1001", "A7")]
    assert rows("seats.db", "SELECT * FROM holds") == [("B-1001", "A7")]
    print(paid.id, paid.status.value)
    print(declined.id, declined.status.value)


# --8<-- [end:main]

if __name__ == "__main__":
    asyncio.run(main())
