"""Results and inputs must be JSON. A step that returns anything else fails at once (no
retry can mend it) and the saga compensates; an input that is not JSON is refused before
anything is recorded."""

import asyncio
import datetime
import json

from sagakit import (
    CompensationContext,
    Engine,
    RecordType,
    Retry,
    Saga,
    SagaStatus,
    SerializationError,
    StepContext,
    open_store,
)

calls: list[str] = []

# --8<-- [start:saga]
renewal = Saga("renew_membership", version=1)


async def cancel_renewal(ctx: CompensationContext) -> None:
    calls.append("cancel_renewal")


@renewal.step(compensate=cancel_renewal)
async def extend_membership(ctx: StepContext) -> dict[str, str]:
    calls.append("extend_membership")
    expires = datetime.date(2026, 1, 31)
    return {"expires": expires.isoformat()}  # right: a str the log can keep


async def uncharge(ctx: CompensationContext) -> None:
    calls.append("uncharge")


@renewal.step(compensate=uncharge, retry=Retry(attempts=3, backoff=0.01))
async def charge_fee(ctx: StepContext) -> dict[str, object]:
    calls.append(f"charge_fee {ctx.attempt}")
    return {"charged_at": datetime.datetime(2025, 1, 31, 9, 0)}  # wrong: not JSON


@renewal.pivot()
async def send_card(ctx: StepContext) -> None:
    pass


# --8<-- [end:saga]


async def main() -> None:
    calls.clear()
    store = await open_store("memory://")
    engine = Engine(store, [renewal])
    result = await engine.run(renewal, {"member": 9}, saga_id="m-9")
    assert result.status is SagaStatus.COMPENSATED
    # one attempt in spite of the retry policy; the failed step itself is not undone
    assert calls == ["extend_membership", "charge_fee 1", "cancel_renewal"]
    stored = await store.load("m-9")
    assert stored is not None
    [failed] = [r for r in stored.records if r.type is RecordType.STEP_FAILED]
    error = json.loads(failed.data or "{}")
    assert error["error"]["type"] == "sagakit.errors.SerializationError"
    assert error["retry_at"] is None
    print("m-9", result.status.value, "--", result.reason)

    bad_input = {"member": 10, "since": datetime.date(2020, 5, 1)}
    try:
        await engine.run(renewal, bad_input, saga_id="m-10")
    except SerializationError as refused:
        print("m-10 refused --", refused)
    else:
        raise AssertionError("a saga started with an input that is not JSON")
    assert await store.load("m-10") is None  # nothing was recorded
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
