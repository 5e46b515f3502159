"""Retries: a flaky call succeeds on its third attempt; an error the policy does not name
is not retried at all."""

import asyncio

from sagakit import (
    CompensationContext,
    Engine,
    RecordType,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)

attempts: list[int] = []  # ctx.attempt of every call
keys: list[str] = []  # ctx.idempotency_key of every call

# --8<-- [start:saga]
reserve = Saga("reserve_seat", version=1)


async def release_seat(ctx: CompensationContext) -> None:
    pass


@reserve.step(
    compensate=release_seat,
    retry=Retry(
        attempts=3,  # in all, the first call included
        backoff=0.01,  # seconds before the first retry
        multiplier=2.0,  # each later wait doubles: 0.01, 0.02, ...
        max_backoff=1.0,  # no wait longer than this
        jitter=0.1,  # each wait scattered by up to 10% either way
        retry_on=(ConnectionError, TimeoutError),  # anything else fails the step at once
    ),
)
async def hold_seat(ctx: StepContext) -> dict[str, str]:
    attempts.append(ctx.attempt)
    keys.append(ctx.idempotency_key)
    if ctx.input["seat"] == "13A":
        raise ValueError("no seat 13A on this aircraft")  # not in retry_on: no retry
    if ctx.attempt < 3:
        raise ConnectionError("seat map service unavailable")
    return {"seat": ctx.input["seat"], "hold": f"hold-{ctx.attempt}"}


@reserve.pivot()
async def issue_boarding_pass(ctx: StepContext) -> None:
    pass


# --8<-- [end:saga]


async def main() -> None:
    attempts.clear()
    keys.clear()
    store = await open_store("memory://")
    engine = Engine(store, [reserve])
    done = await engine.run(reserve, {"seat": "12C"}, saga_id="flight-1")
    assert done.status is SagaStatus.COMPLETED
    assert attempts == [1, 2, 3] and keys == ["flight-1:hold_seat:action"] * 3
    assert done.results["hold_seat"] == {"seat": "12C", "hold": "hold-3"}
    stored = await store.load("flight-1")
    assert stored is not None
    failures = [r for r in stored.records if r.type is RecordType.STEP_FAILED]
    assert [r.attempt for r in failures] == [1, 2]  # each failure is in the log, with its due time

    first = list(attempts)
    attempts.clear()
    refused = await engine.run(reserve, {"seat": "13A"}, saga_id="flight-2")
    assert refused.status is SagaStatus.COMPENSATED and attempts == [1]
    await store.close()
    print("flight-1", done.status.value, "after attempts", first)
    print("flight-2", refused.status.value, "--", refused.reason)


if __name__ == "__main__":
    asyncio.run(main())
