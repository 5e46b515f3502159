"""Cancel: a saga that has not passed its pivot compensates on request; one past its pivot
refuses, since it can only go forward."""

import asyncio

from sagakit import (
    Client,
    CompensationContext,
    Engine,
    OperatorActionError,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)

undone: list[str] = []
parked: dict[str, asyncio.Event] = {"before": asyncio.Event(), "after": asyncio.Event()}

order = Saga("custom_order", version=1)


async def refund(ctx: CompensationContext) -> None:
    undone.append(f"refund {ctx.result['payment_id']}")


@order.step(compensate=refund)
async def take_payment(ctx: StepContext) -> dict[str, str]:
    return {"payment_id": f"pay-{ctx.saga_id}"}


async def withdraw_request(ctx: CompensationContext) -> None:
    undone.append("withdraw approval request")


@order.step(compensate=withdraw_request)  # never succeeded when cancelled: not undone
async def await_approval(ctx: StepContext) -> None:
    if ctx.input["approve_first"]:
        return
    parked["before"].set()
    await ctx.wait_for("approved")


@order.pivot()
async def start_production(ctx: StepContext) -> None:
    pass


@order.retriable()
async def await_collection(ctx: StepContext) -> None:
    parked["after"].set()
    await ctx.wait_for("collected")


async def main() -> None:
    undone.clear()
    for event in parked.values():
        event.clear()
    store = await open_store("memory://")
    engine, client = Engine(store, [order]), Client(store)
    # --8<-- [start:cancel]
    first = asyncio.create_task(engine.run(order, {"approve_first": False}, saga_id="o-1"))
    await parked["before"].wait()
    compensating_now = await client.cancel(
        "o-1", reason="customer changed their mind", by="support"
    )
    cancelled = await first
    # --8<-- [end:cancel]
    assert compensating_now is False  # this engine holds it: the request went to its inbox
    assert cancelled.status is SagaStatus.COMPENSATED
    assert cancelled.reason == "cancelled by support: customer changed their mind"
    assert undone == ["refund pay-o-1"]
    print("o-1", cancelled.status.value, "--", cancelled.reason, "--", undone)

    second = asyncio.create_task(engine.run(order, {"approve_first": True}, saga_id="o-2"))
    await parked["after"].wait()
    try:
        await client.cancel("o-2")
    except OperatorActionError as refused:
        print("o-2 refused --", refused)
    else:
        raise AssertionError("cancelled a saga past its pivot")
    await client.signal("o-2", "collected")
    assert (await second).status is SagaStatus.COMPLETED
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
