"""A handler that raises: its work is rolled back, the event comes again, and after
``max_attempts`` deliveries it goes to the stream's dead letters."""

from __future__ import annotations

import asyncio

from sagakit import Event, MemoryBroker, Service, Transaction

from ticket_sale import STREAM, fresh, rows


class PrinterJammed(Exception):
    pass


# --8<-- [start:poison]
async def main() -> None:
    fresh("jammed_tickets.db")
    broker = MemoryBroker()
    tickets = Service(
        "tickets",
        "jammed_tickets.db",
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS tickets (booking_id TEXT, seat TEXT);",
        max_attempts=3,  # deliveries before the event is dead-lettered (default 5)
    )
    tries: list[str] = []
    last_try = asyncio.Event()

    @tickets.on("PaymentTaken")
    def issue(event: Event, tx: Transaction) -> None:
        tx.db.execute("INSERT INTO tickets VALUES (?, ?)", ("B-4001", "D1"))  # rolled back
        tries.append(event.id)
        if len(tries) == tickets.max_attempts:
            last_try.set()
        raise PrinterJammed("printer 3 is jammed")

    stop = asyncio.Event()
    running = asyncio.create_task(tickets.run(stop))
    await tickets.ready.wait()
    paid = Event.new("PaymentTaken", {"booking_id": "B-4001"}, source="payments")
    await broker.publish(STREAM, paid)
    await asyncio.wait_for(last_try.wait(), timeout=10)
    stop.set()
    await running  # closing lets the consumer settle the last delivery: it buries it

    assert tries == [paid.id] * 3  # delivered three times, one straight after the other
    assert rows("jammed_tickets.db", "SELECT * FROM tickets") == []  # no effect kept
    assert rows("jammed_tickets.db", "SELECT * FROM sagakit_inbox") == []  # not "handled"
    [letter] = await broker.dead_letters(STREAM)  # left in place for an operator
    assert letter.event == paid
    assert (letter.group, letter.attempts) == ("tickets", 3)
    assert letter.error == "PrinterJammed: printer 3 is jammed"
    await tickets.close()
    await broker.close()
    print(f"dead letter after {letter.attempts} attempts: {letter.error}")


# --8<-- [end:poison]

if __name__ == "__main__":
    asyncio.run(main())
