import asyncio

from sagakit import CompensationContext, Engine, Retry, Saga, StepContext, open_store

order = Saga("place_order", version=1)


async def refund(ctx: CompensationContext) -> None:  # gets the step's recorded result
    print("refund", ctx.result["payment_id"])


@order.step(compensate=refund, retry=Retry(attempts=3))
async def charge_payment(ctx: StepContext) -> dict[str, str]:
    # ctx.idempotency_key is the same on every retry: pass it on to the payment service
    return {"payment_id": f"pay-{ctx.input['order_id']}"}


async def release(ctx: CompensationContext) -> None:
    print("release", ctx.result["reservation_id"])


@order.step(compensate=release)
async def reserve_inventory(ctx: StepContext) -> dict[str, str]:
    if ctx.input["quantity"] > 2:
        raise RuntimeError("only 2 in stock")
    return {"reservation_id": "res-1"}


@order.pivot()  # after the pivot the saga only goes forward
async def create_shipment(ctx: StepContext) -> dict[str, str]:
    return {"shipment_id": "ship-1"}


async def main() -> None:
    store = await open_store("sqlite:///orders.db")
    engine = Engine(store, [order])
    done = await engine.run(order, {"order_id": 7, "quantity": 1})
    undone = await engine.run(order, {"order_id": 8, "quantity": 3})
    print(done.status.value, undone.status.value)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
