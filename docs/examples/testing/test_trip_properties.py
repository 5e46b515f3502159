"""A property test: whatever fails, and wherever the process crashes, the trip saga ends in
the status its failures imply, applies each effect at most once, and leaves nothing booked
that it did not keep.

Hypothesis runs the test on many plans of failures and shrinks a failing one to the
smallest it can find. The test is a plain function that runs the saga with
``asyncio.run``, so it needs no asyncio plugin.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sagakit import Engine, MemoryStore, SagaResult, SagaStatus

from trip_saga import (
    FAST_RETRY,
    FORWARD,
    TRIP,
    FakeService,
    SupplierError,
    TripServices,
    build_trip_saga,
)


class Crash(BaseException):
    """The process dies here."""


OPERATIONS = [
    ("airline", "reserve"),
    ("hotel", "book"),
    ("cards", "charge"),
    ("airline", "ticket"),
    ("mail", "send"),
    ("airline", "cancel"),
    ("hotel", "cancel"),
    ("cards", "refund"),
]
"""Every call the saga makes, forward and back; the first four are the FORWARD steps'."""


@dataclass(frozen=True)
class Plan:
    fail_at: str | None  # the forward step that fails for good, if any
    mail_failures: int  # failed attempts of the e-mail before it is sent
    crash: tuple[str, str, bool] | None  # (service, operation, after its effect) or None


# --8<-- [start:property]
def crash_in(call: tuple[str, str], after_effect: bool) -> tuple[str, str, bool]:
    return (*call, after_effect)


plans = st.builds(
    Plan,
    fail_at=st.none() | st.sampled_from(FORWARD),
    mail_failures=st.integers(0, 6),
    crash=st.none() | st.builds(crash_in, st.sampled_from(OPERATIONS), st.booleans()),
)


def service(services: TripServices, name: str) -> FakeService:
    found: FakeService = getattr(services, name)
    return found


async def run(plan: Plan, services: TripServices) -> SagaResult:
    saga = build_trip_saga(services, email_retry=FAST_RETRY)
    if plan.crash is not None:
        name, operation, after_effect = plan.crash
        service(services, name).fail(operation, Crash(), after_effect=after_effect)
    if plan.fail_at is not None:
        name, operation = OPERATIONS[FORWARD.index(plan.fail_at)]
        service(services, name).fail(operation, SupplierError("no"))
    for _ in range(plan.mail_failures):
        services.mail.fail("send", SupplierError("smtp down"))
    store = MemoryStore()
    try:
        return await Engine(store, [saga]).run(saga, TRIP, saga_id="p")
    except Crash:
        [result] = await Engine(store, [saga]).resume()  # another engine, after a restart
        return result


@settings(max_examples=150, deadline=None)
@given(plan=plans)
def test_any_failures_and_any_crash_end_consistently(plan: Plan) -> None:
    if plan.crash is not None and plan.fail_at is not None:
        assume(plan.crash[:2] != OPERATIONS[FORWARD.index(plan.fail_at)])
    services = TripServices()
    result = asyncio.run(run(plan, services))

    if plan.fail_at is not None:
        expected = SagaStatus.COMPENSATED
    elif plan.mail_failures >= (FAST_RETRY.attempts or 0):
        expected = SagaStatus.NEEDS_ATTENTION  # after the pivot: retried, then a person
    else:
        expected = SagaStatus.COMPLETED
    assert result.status is expected
    for fake in (services.airline, services.hotel, services.cards, services.mail):
        for operation in {op for op, _ in fake.calls}:
            assert len(fake.applied(operation)) <= 1, (fake.name, operation)  # one key each
    pairs = [(services.airline, "reserve"), (services.hotel, "book"), (services.cards, "charge")]
    for fake, forward in pairs:
        undo = "refund" if forward == "charge" else "cancel"
        if expected is SagaStatus.COMPENSATED:  # whatever was done was undone
            assert len(fake.applied(undo)) == len(fake.applied(forward))
        else:  # nothing kept was undone
            assert fake.applied(undo) == []


# --8<-- [end:property]

if __name__ == "__main__":
    # hypothesis is a pytest plugin too, imported above before pytest started: say nothing
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *quiet]))
