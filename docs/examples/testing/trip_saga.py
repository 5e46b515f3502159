"""A trip booking saga, and fakes of the services it calls, for the tests beside this file.

The saga takes its services as an argument, so a test hands it fakes; each fake applies an
idempotency key's effect once, as the real service must, records every call, and fails
(or crashes) when a test tells it to.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import (
    CompensationContext,
    Engine,
    MemoryStore,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
)

FORWARD = ["reserve_flight", "book_hotel", "charge_card", "issue_tickets"]
"""The steps that can fail the saga: three compensatable ones, then the pivot."""
EMAIL_RETRY = Retry(attempts=8, backoff=1.0, max_backoff=600.0)
"""The e-mail comes after the pivot: it is retried (for about half an hour), never undone."""
FAST_RETRY = Retry(attempts=5, backoff=0, jitter=0)
"""What the tests give the e-mail step instead, so that five attempts take no time."""


class SupplierError(Exception):
    """What a fake service raises when a test says it fails."""


# --8<-- [start:fake]
@dataclass
class FakeService:
    """A remote service as a test wants it: it records every call, applies each idempotency
    key's effect once (a repeated key returns the first answer), and fails when told to."""

    name: str
    calls: list[tuple[str, str]] = field(default_factory=list)
    effects: dict[str, tuple[str, Any]] = field(default_factory=dict)
    script: dict[str, list[tuple[BaseException, bool]]] = field(default_factory=dict)

    def fail(self, operation: str, error: BaseException, *, after_effect: bool = False) -> None:
        """Make the next call of ``operation`` raise ``error``, before its effect or after."""
        self.script.setdefault(operation, []).append((error, after_effect))

    async def call(self, operation: str, key: str, value: Any = None) -> Any:
        self.calls.append((operation, key))
        script = self.script.get(operation)
        error, after_effect = script.pop(0) if script else (None, False)
        if error is not None and not after_effect:
            raise error
        done = self.effects.setdefault(key, (operation, value))[1]
        if error is not None:  # the effect happened, but the caller never hears of it
            raise error
        return done

    def applied(self, operation: str) -> list[Any]:
        """The values of the effects applied by ``operation``, in the order applied."""
        return [value for done, value in self.effects.values() if done == operation]


# --8<-- [end:fake]


@dataclass
class TripServices:
    airline: FakeService = field(default_factory=lambda: FakeService("airline"))
    hotel: FakeService = field(default_factory=lambda: FakeService("hotel"))
    cards: FakeService = field(default_factory=lambda: FakeService("cards"))
    mail: FakeService = field(default_factory=lambda: FakeService("mail"))


# --8<-- [start:saga]
def build_trip_saga(services: TripServices, *, email_retry: Retry = EMAIL_RETRY) -> Saga:
    airline, hotel, cards, mail = services.airline, services.hotel, services.cards, services.mail
    trip = Saga("book_trip", version=1)

    async def cancel_flight(ctx: CompensationContext) -> None:
        await airline.call("cancel", ctx.idempotency_key, ctx.result["pnr"])

    async def cancel_hotel(ctx: CompensationContext) -> None:
        await hotel.call("cancel", ctx.idempotency_key, ctx.result["booking"])

    async def refund(ctx: CompensationContext) -> None:
        await cards.call("refund", ctx.idempotency_key, ctx.result["charge"])

    @trip.step(compensate=cancel_flight)
    async def reserve_flight(ctx: StepContext) -> dict[str, str]:
        pnr = await airline.call("reserve", ctx.idempotency_key, f"PNR-{ctx.saga_id}")
        return {"pnr": pnr}

    @trip.step(compensate=cancel_hotel)
    async def book_hotel(ctx: StepContext) -> dict[str, str]:
        booking = await hotel.call("book", ctx.idempotency_key, f"H-{ctx.saga_id}")
        return {"booking": booking}

    @trip.step(compensate=refund)
    async def charge_card(ctx: StepContext) -> dict[str, str]:
        cents = ctx.input["cents"]
        charge = await cards.call("charge", ctx.idempotency_key, f"ch-{ctx.saga_id}-{cents}")
        return {"charge": charge}

    @trip.pivot()
    async def issue_tickets(ctx: StepContext) -> str:
        pnr = ctx.results["reserve_flight"]["pnr"]  # what an earlier step recorded
        return str(await airline.call("ticket", ctx.idempotency_key, f"TKT-{pnr}"))

    @trip.retriable(retry=email_retry)
    async def email_itinerary(ctx: StepContext) -> None:
        await mail.call("send", ctx.idempotency_key, ctx.input["email"])

    return trip


# --8<-- [end:saga]

TRIP = {"traveller": "ada", "email": "ada@example.com", "cents": 84000}


async def main() -> None:
    services = TripServices()
    saga = build_trip_saga(services)
    result = await Engine(MemoryStore()).run(saga, TRIP, saga_id="trip-1")
    assert result.status is SagaStatus.COMPLETED
    assert services.cards.applied("charge") == ["ch-trip-1-84000"]
    print(result.saga_id, result.status.value)


if __name__ == "__main__":
    asyncio.run(main())
