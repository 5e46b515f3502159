"""An idempotent start: the same ``saga_id`` twice is one instance, run once. A web handler
that retries after a timeout, or a message delivered twice, starts no second saga."""

import asyncio

from sagakit import Client, Engine, Saga, SagaStatus, StepContext, open_store

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
    again = await handle_checkout(engine, "c-5", 2999)  # a retry, even with another input
    assert first is again is SagaStatus.COMPLETED
    assert charged == [1999]  # the first start's input; the action ran once

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
