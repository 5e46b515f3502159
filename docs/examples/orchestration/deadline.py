"""A saga deadline bounds the time from start to the pivot: past it the saga compensates.
Steps after the pivot are not bound by it, since they can only go forward."""

import asyncio

from sagakit import (
    CompensationContext,
    Engine,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)

released: list[int] = []  # the tables given back

# --8<-- [start:saga]
booking = Saga("book_table", version=1, deadline=0.3)  # seconds, from start to the pivot


async def release_table(ctx: CompensationContext) -> None:
    released.append(ctx.result["table"])


@booking.step(compensate=release_table)
async def hold_table(ctx: StepContext) -> dict[str, int]:
    return {"table": 4}


@booking.pivot()
async def take_deposit(ctx: StepContext) -> None:
    if ctx.input["bank"] == "silent":
        await asyncio.Event().wait()  # no timeout of its own: the deadline cuts it off


@booking.retriable(retry=Retry(attempts=None, backoff=0.4))  # its retry waits past the deadline
async def text_confirmation(ctx: StepContext) -> int:
    if ctx.attempt == 1:
        raise ConnectionError("SMS gateway busy")
    return ctx.attempt


# --8<-- [end:saga]


async def main() -> None:
    released.clear()
    store = await open_store("memory://")
    engine = Engine(store, [booking])
    late = await engine.run(booking, {"bank": "silent"}, saga_id="t-1")
    assert late.status is SagaStatus.COMPENSATED and released == [4]
    assert late.reason is not None and "deadline passed before the pivot" in late.reason

    done = await engine.run(booking, {"bank": "answers"}, saga_id="t-2")
    assert done.status is SagaStatus.COMPLETED and done.results["text_confirmation"] == 2
    state = await engine.status("t-2")  # the log's own times say it finished past the deadline
    assert state.deadline_at is not None and state.records[-1].at > state.deadline_at
    await store.close()
    print("t-1", late.status.value, "--", late.reason)
    print("t-2", done.status.value, "after the deadline, on SMS attempt 2")


if __name__ == "__main__":
    asyncio.run(main())
