"""A wait that times out: ``ctx.wait_for(..., timeout=)`` raises ``SignalTimeoutError``, a
failure like any other, so the saga compensates what it had done."""

import asyncio
import json

from sagakit import (
    CompensationContext,
    Engine,
    RecordType,
    Saga,
    SagaStatus,
    SignalTimeoutError,
    StepContext,
    open_store,
)

undone: list[str] = []

# --8<-- [start:saga]
signup = Saga("verify_email", version=1)


async def delete_account(ctx: CompensationContext) -> None:
    undone.append(ctx.result["account"])


@signup.step(compensate=delete_account)
async def create_account(ctx: StepContext) -> dict[str, str]:
    return {"account": f"acct-{ctx.input['email']}"}


@signup.pivot()
async def await_click(ctx: StepContext) -> None:
    # no message within 0.1 s (counted from the first wait, across restarts): it raises
    # SignalTimeoutError; catch it to go on another way, or let it fail the step
    await ctx.wait_for("link_clicked", timeout=0.1)


# --8<-- [end:saga]


async def main() -> None:
    undone.clear()
    store = await open_store("memory://")
    result = await Engine(store, [signup]).run(signup, {"email": "ada@example.org"}, saga_id="v-1")
    stored = await store.load("v-1")
    await store.close()
    assert stored is not None
    [failed] = [r for r in stored.records if r.type is RecordType.STEP_FAILED]
    error = json.loads(failed.data or "{}")["error"]
    assert error["type"] == f"{SignalTimeoutError.__module__}.{SignalTimeoutError.__name__}"
    assert result.status is SagaStatus.COMPENSATED
    assert undone == ["acct-ada@example.org"]
    print(result.status.value, "--", result.reason)


if __name__ == "__main__":
    asyncio.run(main())
