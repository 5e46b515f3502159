"""Countermeasure: a version file. A booking request is slow on the network, the saga gives
up on it and cancels, and the cancel overtakes the booking. The hotel service records every
operation on an order as it arrives, so the late booking finds its cancel already there."""

import asyncio
from dataclasses import dataclass, field

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store


# --8<-- [start:service]
@dataclass
class FakeHotel:
    keeps_version_file: bool = True
    version_file: dict[str, list[str]] = field(default_factory=dict)  # order -> operations
    rooms: dict[str, str] = field(default_factory=dict)  # order -> the room booked for it

    def receive(self, order_id: str, operation: str) -> None:
        seen = self.version_file.setdefault(order_id, [])
        seen.append(operation)  # recorded in arrival order, even if it is then ignored
        if operation == "cancel":
            self.rooms.pop(order_id, None)
        elif operation == "book" and not (self.keeps_version_file and "cancel" in seen):
            self.rooms[order_id] = f"room-for-{order_id}"


# --8<-- [end:service]


def build_saga(hotel: FakeHotel, in_transit: list[tuple[str, str]]) -> Saga:
    trip = Saga("book_trip")

    # --8<-- [start:saga]
    async def cancel_room(ctx: CompensationContext) -> None:
        hotel.receive(ctx.input["order_id"], "cancel")  # this one arrives at once

    @trip.step(compensate=cancel_room, compensate_on_failure=True)
    async def book_room(ctx: StepContext) -> None:
        in_transit.append((ctx.input["order_id"], "book"))  # slow on the network...
        raise TimeoutError("no answer from the hotel")  # ... so the call gives up on it

    # --8<-- [end:saga]
    return trip


async def book_and_deliver_late(hotel: FakeHotel) -> SagaStatus:
    store = await open_store("memory://")
    in_transit: list[tuple[str, str]] = []
    trip = build_saga(hotel, in_transit)
    outcome = await Engine(store, [trip]).run(trip, {"order_id": "o-1"})
    for order_id, operation in in_transit:  # the booking arrives after its cancel
        hotel.receive(order_id, operation)
    await store.close()
    return outcome.status


async def main() -> None:
    # --8<-- [start:story]
    hotel = FakeHotel()
    assert await book_and_deliver_late(hotel) is SagaStatus.COMPENSATED
    assert hotel.version_file == {"o-1": ["cancel", "book"]} and hotel.rooms == {}

    forgetful = FakeHotel(keeps_version_file=False)
    assert await book_and_deliver_late(forgetful) is SagaStatus.COMPENSATED
    assert forgetful.rooms == {"o-1": "room-for-o-1"}  # booked after its cancel: leaked
    # --8<-- [end:story]


if __name__ == "__main__":
    asyncio.run(main())
