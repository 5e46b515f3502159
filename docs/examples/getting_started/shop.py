"""The getting-started order saga: charge the card, reserve stock, ship; each step undoable.

Every effect is a line in effects.log, standing in for a call to a payment, stock or courier
service, so you can see what ran, what was undone and that nothing ran twice. Run it as
`python shop.py ORDER_ID QUANTITY`; with SHOP_CRASH=reserve the process kills itself in the
middle of the reserve step, as a power cut would.
"""

import asyncio
import os
import signal
import sys

from sagakit import CompensationContext, Engine, Retry, Saga, StepContext, open_store

DB = os.environ.get("SAGAKIT_DB", "sqlite:///shop.db")
order = Saga("order", version=1)


def record(effect: str, ctx: StepContext | CompensationContext) -> None:
    with open("effects.log", "a") as effects:
        print(f"{effect} key={ctx.idempotency_key}", file=effects)


# --8<-- [start:steps]
async def refund(ctx: CompensationContext) -> None:
    record(f"refund {ctx.result['payment_id']}", ctx)


@order.step(compensate=refund, retry=Retry(attempts=3))
async def charge(ctx: StepContext) -> dict[str, str]:
    record(f"charge order-{ctx.input['order_id']}", ctx)
    return {"payment_id": f"pay-{ctx.input['order_id']}"}


async def release(ctx: CompensationContext) -> None:
    record(f"release {ctx.result['reservation_id']}", ctx)


@order.step(compensate=release)
async def reserve(ctx: StepContext) -> dict[str, str]:
    if os.environ.get("SHOP_CRASH") == "reserve":
        os.kill(os.getpid(), signal.SIGKILL)  # dies after the log says "reserve started"
    if ctx.input["quantity"] > 2:
        raise RuntimeError("only 2 in stock")
    record(f"reserve order-{ctx.input['order_id']}", ctx)
    return {"reservation_id": f"res-{ctx.input['order_id']}"}


@order.pivot()  # once the parcel is booked the saga only goes forward
async def ship(ctx: StepContext) -> dict[str, str]:
    record(f"ship order-{ctx.input['order_id']}", ctx)
    return {"shipment_id": f"ship-{ctx.input['order_id']}"}


# --8<-- [end:steps]


async def main(order_id: str, quantity: int) -> None:
    store = await open_store(DB)
    try:
        # lease: how long the sagas of a process that died wait for another to take them over
        engine = Engine(store, [order], lease=5)
        outcome = await engine.run(
            order, {"order_id": order_id, "quantity": quantity}, saga_id=f"order-{order_id}"
        )
        print(outcome.saga_id, outcome.status.value)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
