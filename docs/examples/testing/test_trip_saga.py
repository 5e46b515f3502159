"""Unit tests of the trip saga on MemoryStore with fake services: the happy path, a failure
at each step (compensations in reverse), a flaky e-mail after the pivot, and a refund
that cannot be made."""

from __future__ import annotations

import pytest
from sagakit import (
    CompensationImpossible,
    Engine,
    MemoryStore,
    RecordType,
    SagaStatus,
    StepStatus,
    idempotency_key,
)

from trip_saga import FAST_RETRY, FORWARD, TRIP, SupplierError, TripServices, build_trip_saga


# --8<-- [start:happy]
@pytest.mark.asyncio
async def test_a_trip_completes_with_every_step_result() -> None:
    services = TripServices()
    result = await Engine(MemoryStore()).run(build_trip_saga(services), TRIP, saga_id="t-1")

    assert result.status is SagaStatus.COMPLETED
    assert result.reason is None
    assert dict(result.results) == {
        "reserve_flight": {"pnr": "PNR-t-1"},
        "book_hotel": {"booking": "H-t-1"},
        "charge_card": {"charge": "ch-t-1-84000"},
        "issue_tickets": "TKT-PNR-t-1",
        "email_itinerary": None,
    }
    assert services.cards.calls == [("charge", idempotency_key("t-1", "charge_card"))]
    assert services.mail.applied("send") == ["ada@example.com"]


# --8<-- [end:happy]


# --8<-- [start:each_step]
@pytest.mark.asyncio
@pytest.mark.parametrize("failing", FORWARD)
async def test_a_failure_undoes_every_earlier_step_in_reverse(failing: str) -> None:
    services = TripServices()
    saga = build_trip_saga(services)
    service, operation = {
        "reserve_flight": (services.airline, "reserve"),
        "book_hotel": (services.hotel, "book"),
        "charge_card": (services.cards, "charge"),
        "issue_tickets": (services.airline, "ticket"),
    }[failing]
    service.fail(operation, SupplierError(f"{failing} is down"))
    store = MemoryStore()

    result = await Engine(store).run(saga, TRIP, saga_id="t-2")

    assert result.status is SagaStatus.COMPENSATED
    assert result.reason is not None and f"{failing} is down" in result.reason
    done = FORWARD[: FORWARD.index(failing)]
    state = await Engine(store).status("t-2")
    undone = [r.step for r in state.records if r.type is RecordType.COMPENSATION_SUCCEEDED]
    assert undone == list(reversed(done))  # last done, first undone
    statuses = {step.name: step.status for step in state.steps}
    assert statuses[failing] is StepStatus.FAILED
    assert all(statuses[name] is StepStatus.COMPENSATED for name in done)
    assert statuses["email_itinerary"] is StepStatus.SKIPPED
    assert services.mail.calls == []  # nothing after the pivot ran


# --8<-- [end:each_step]


# --8<-- [start:after_pivot]
@pytest.mark.asyncio
async def test_a_flaky_mail_server_is_retried_and_sends_once() -> None:
    services = TripServices()
    for _ in range(2):
        services.mail.fail("send", SupplierError("smtp timeout"))
    saga = build_trip_saga(services, email_retry=FAST_RETRY)  # no waits between attempts
    result = await Engine(MemoryStore()).run(saga, TRIP, saga_id="t-3")

    assert result.status is SagaStatus.COMPLETED
    key = idempotency_key("t-3", "email_itinerary")
    assert services.mail.calls == [("send", key)] * 3  # the same key on every attempt
    assert services.mail.applied("send") == ["ada@example.com"]


@pytest.mark.asyncio
async def test_a_refund_that_cannot_be_made_needs_a_person() -> None:
    services = TripServices()
    services.airline.fail("ticket", SupplierError("fare expired"))
    services.cards.fail("refund", CompensationImpossible("card account closed"))
    result = await Engine(MemoryStore()).run(build_trip_saga(services), TRIP, saga_id="t-4")

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert result.failed_compensations == ("charge_card",)
    refund_key = idempotency_key("t-4", "charge_card", "compensation")
    charge_key = idempotency_key("t-4", "charge_card")
    # the refund was tried once: an impossible undo is not retried
    assert services.cards.calls == [("charge", charge_key), ("refund", refund_key)]
    # the other undos still ran: each is independent of the one that failed
    assert services.hotel.applied("cancel") == ["H-t-4"]
    assert services.airline.applied("cancel") == ["PNR-t-4"]


# --8<-- [end:after_pivot]

if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
