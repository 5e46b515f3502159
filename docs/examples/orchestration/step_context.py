"""What an action is handed: the saga's input, the results of the steps before it, and who
and which call it is."""

import asyncio
from typing import Any

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store

seen: dict[str, Any] = {}

# --8<-- [start:saga]
order = Saga("place_order", version=1)


async def refund(ctx: CompensationContext) -> None:
    pass


@order.step(compensate=refund)
async def charge_card(ctx: StepContext) -> dict[str, str]:
    ctx.input["items"].clear()  # this call's own copy: no later step sees the change
    return {"payment_id": "pay-3"}


@order.pivot()
async def ship(ctx: StepContext) -> dict[str, str]:
    seen.update(
        saga_id=ctx.saga_id,  # the instance
        saga_name=ctx.saga_name,  # its definition's name
        step=ctx.step,  # this step's name
        attempt=ctx.attempt,  # 1 on the first call, 2 on the first retry, ...
        idempotency_key=ctx.idempotency_key,  # the same on every attempt, in any process
        input=ctx.input,  # the saga's input, decoded from the log
        results=dict(ctx.results),  # what the steps before this one returned
    )
    return {"tracking": f"trk-{ctx.results['charge_card']['payment_id']}"}


# --8<-- [end:saga]


async def main() -> None:
    seen.clear()
    store = await open_store("memory://")
    result = await Engine(store, [order]).run(order, {"items": ["lamp"]}, saga_id="order-3")
    await store.close()
    assert result.status is SagaStatus.COMPLETED
    assert seen == {
        "saga_id": "order-3",
        "saga_name": "place_order",
        "step": "ship",
        "attempt": 1,
        "idempotency_key": "order-3:ship:action",
        "input": {"items": ["lamp"]},
        "results": {"charge_card": {"payment_id": "pay-3"}},
    }
    assert result.results["ship"] == {"tracking": "trk-pay-3"}
    for name, value in seen.items():
        print(f"ctx.{name:<16} {value!r}")


if __name__ == "__main__":
    asyncio.run(main())
