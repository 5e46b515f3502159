"""One saga definition, ``place_order@1``; two instances of it, each with an id and an input."""

import asyncio

from sagakit import (
    CompensationContext,
    Engine,
    Saga,
    SagaState,
    SagaStatus,
    StepContext,
    open_store,
)

# --8<-- [start:definition]
order = Saga("place_order", version=1)  # the definition: code, known by name@version


async def release_stock(ctx: CompensationContext) -> None:
    pass


@order.step(compensate=release_stock)
async def reserve_stock(ctx: StepContext) -> dict[str, int]:
    return {"reserved": ctx.input["quantity"]}


@order.pivot()
async def ship(ctx: StepContext) -> None:
    pass


# --8<-- [end:definition]


async def main() -> None:
    store = await open_store("memory://")
    engine = Engine(store, [order])
    # --8<-- [start:instances]
    first = await engine.run(order, {"quantity": 1}, saga_id="order-1")  # an id you choose
    second = await engine.run(order, {"quantity": 5})  # or one sagakit makes
    # --8<-- [end:instances]
    assert order.key == "place_order@1"
    assert first.saga_id == "order-1" and second.saga_id != first.saga_id
    inputs = {}
    for result in (first, second):
        stored = await store.load(result.saga_id)
        assert stored is not None
        state = SagaState.from_records(result.saga_id, stored.records)
        assert (state.name, state.version) == ("place_order", 1)  # the log names its definition
        assert state.status is SagaStatus.COMPLETED
        inputs[result.saga_id] = state.input  # and keeps each instance's own input
    assert inputs == {"order-1": {"quantity": 1}, second.saga_id: {"quantity": 5}}
    print(order.key, first.saga_id, first.results["reserve_stock"])
    print(order.key, f"<{len(second.saga_id)} hex digits>", second.results["reserve_stock"])
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
