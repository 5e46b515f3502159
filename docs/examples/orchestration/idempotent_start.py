"""An idempotent start: the same ``saga_id`` twice is one instance, run once. A web handler
that retries after a timeout, or a message delivered twice, starts no second saga; the same
id with another input is refused, since it is another request."""

import asyncio

from sagakit import (
    Client,
    Engine,
    Saga,
    SagaIdConflictError,
    SagaStatus,
    StepContext,
    open_store,
)

charged: list[int] = []

# --8<-- [start:saga]
checkout = Saga("checkout", version=1)


@checkout.pivot()
async def charge(ctx: StepContext) -> dict[str, int]:
    charged.append(ctx.input["cents"])
    return {"cents": ctx.input["cents"]}


async def handle_checkout(engine: Engine, cart_id: str, cents: int) -> SagaStatus:
    result = await engine.run(checkout, {"cents": cents}, saga_id=f"checkout-{cart_id}")
    return result.status


# --8<-- [end:saga]


async def main() -> None:
    charged.clear()
    store = await open_store("memory://")
    engine = Engine(store, [checkout])
    first = await handle_checkout(engine, "c-5", 1999)
    again = await handle_checkout(engine, "c-5", 1999)  # a retry of the same request
    assert first is again is SagaStatus.COMPLETED
    assert charged == [1999]  # the action ran once
    # --8<-- [start:conflict]
    try:
        await handle_checkout(engine, "c-5", 2999)  # the same id for another request
    except SagaIdConflictError as refused:
        print(refused)  # saga id 'checkout-c-5' is already an instance of 'checkout' ...
    # --8<-- [end:conflict]
    assert charged == [1999]

    # --8<-- [start:client]
    client = Client(store)
    one = await client.start(checkout, {"cents": 500}, saga_id="checkout-c-6")
    two = await client.start(checkout, {"cents": 500}, saga_id="checkout-c-6")
    # --8<-- [end:client]
    assert one == two == "checkout-c-6"
    assert [row.id for row in await store.unfinished()] == ["checkout-c-6"]  # one instance
    await store.close()
    print("checkout-c-5 charged", charged, "for two starts;", "checkout-c-6 recorded once")


if __name__ == "__main__":
    asyncio.run(main())
