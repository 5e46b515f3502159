"""A step timeout: the first call hangs, is cancelled after 0.2 s and retried; the retry
answers. A call that always hangs fails the step, and the saga compensates."""

import asyncio
import json

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

cancelled: list[int] = []  # the attempts whose call the timeout cancelled

# --8<-- [start:saga]
quote = Saga("quote_shipping", version=1)


async def drop_quote(ctx: CompensationContext) -> None:
    pass


@quote.step(compensate=drop_quote, timeout=0.2, retry=Retry(attempts=2, backoff=0.01))
async def ask_carrier(ctx: StepContext) -> dict[str, int]:
    try:
        if ctx.input["carrier"] == "hangs" or ctx.attempt == 1:
            await asyncio.Event().wait()  # a call that never answers
    except asyncio.CancelledError:
        cancelled.append(ctx.attempt)  # an async call is cancelled at its timeout
        raise
    return {"price_cents": 1250}


@quote.pivot()
async def accept_quote(ctx: StepContext) -> None:
    pass


# --8<-- [end:saga]


async def main() -> None:
    cancelled.clear()
    store = await open_store("memory://")
    engine = Engine(store, [quote])
    answered = await engine.run(quote, {"carrier": "slow-once"}, saga_id="q-1")
    assert answered.status is SagaStatus.COMPLETED and cancelled == [1]
    stored = await store.load("q-1")
    assert stored is not None
    [failed] = [r for r in stored.records if r.type is RecordType.STEP_FAILED]
    error = json.loads(failed.data or "{}")["error"]
    assert error["type"] == "sagakit.errors.StepTimeoutError"

    cancelled.clear()
    hung = await engine.run(quote, {"carrier": "hangs"}, saga_id="q-2")
    assert hung.status is SagaStatus.COMPENSATED and cancelled == [1, 2]
    await store.close()
    print("q-1", answered.status.value, "after a", error["type"], "on attempt 1")
    print("q-2", hung.status.value, "--", hung.reason)


if __name__ == "__main__":
    asyncio.run(main())
