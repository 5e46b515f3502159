"""Idempotency under crashes: a new engine resumes a saga from its log alone, calls the
interrupted step again with the same key, and the service applies the effect once.

A crash is an exception that is not an ``Exception``: the engine records an ``Exception``
as the step's failure, but lets a ``BaseException`` through as if the process had died, so
the log is left as a killed process leaves it.
"""

from __future__ import annotations

import pytest
from sagakit import Engine, MemoryStore, RecordType, SagaStatus, StepStatus, idempotency_key

from trip_saga import TRIP, SupplierError, TripServices, build_trip_saga


class Crash(BaseException):
    """The process dies here."""


# --8<-- [start:crash]
@pytest.mark.asyncio
@pytest.mark.parametrize("after_effect", [False, True], ids=["before", "after"])
async def test_a_step_interrupted_by_a_crash_is_called_again_with_its_key(
    after_effect: bool,
) -> None:
    services = TripServices()
    saga = build_trip_saga(services)
    store = MemoryStore()  # what survives the crash: the log (and the services)
    services.cards.fail("charge", Crash(), after_effect=after_effect)

    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, TRIP, saga_id="t-10")

    stored = await store.load("t-10")
    assert stored is not None and stored.instance.status is SagaStatus.RUNNING
    last = stored.records[-1]  # started, with no outcome: nobody knows if it happened
    assert (last.type, last.step, last.attempt) == (RecordType.STEP_STARTED, "charge_card", 1)
    assert [row.id for row in await store.unfinished()] == ["t-10"]

    [result] = await Engine(store, [saga]).resume()  # a new engine, as after a restart

    assert result.status is SagaStatus.COMPLETED
    key = idempotency_key("t-10", "charge_card")
    assert services.cards.calls == [("charge", key), ("charge", key)]
    assert services.cards.applied("charge") == ["ch-t-10-84000"]  # one effect, not two
    assert services.airline.applied("reserve") == ["PNR-t-10"]  # done before: not redone
    assert len(services.airline.calls) == 2  # the reserve, then the ticket


# --8<-- [end:crash]


@pytest.mark.asyncio
async def test_a_crash_while_compensating_resumes_the_undo() -> None:
    services = TripServices()
    saga = build_trip_saga(services)
    store = MemoryStore()
    services.airline.fail("ticket", SupplierError("fare expired"))
    services.hotel.fail("cancel", Crash(), after_effect=True)

    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, TRIP, saga_id="t-11")

    stored = await store.load("t-11")
    assert stored is not None and stored.instance.status is SagaStatus.COMPENSATING
    last = stored.records[-1]
    assert (last.type, last.step) == (RecordType.COMPENSATION_STARTED, "book_hotel")

    result = await Engine(store, [saga]).resume_saga("t-11")  # one saga, by its id

    assert result.status is SagaStatus.COMPENSATED
    key = idempotency_key("t-11", "book_hotel", "compensation")
    assert services.hotel.calls.count(("cancel", key)) == 2
    assert services.hotel.applied("cancel") == ["H-t-11"]
    assert services.cards.applied("refund") == ["ch-t-11-84000"]  # undone before the crash
    assert services.airline.applied("cancel") == ["PNR-t-11"]  # undone after the resume
    state = await Engine(store).status("t-11")
    assert [s.status for s in state.steps][:3] == [StepStatus.COMPENSATED] * 3


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
