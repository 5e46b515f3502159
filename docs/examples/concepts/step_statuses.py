"""Saga and step statuses as the log tells them, for four instances of one definition."""

import asyncio

from sagakit import (
    Client,
    CompensationContext,
    CompensationImpossible,
    Engine,
    Saga,
    SagaState,
    SagaStatus,
    StepContext,
    StepStatus,
    Store,
    open_store,
)

order = Saga("place_order", version=1)


async def refund(ctx: CompensationContext) -> None:
    if ctx.input.get("refund_impossible"):
        raise CompensationImpossible("the card was closed: refund by bank transfer")


@order.step(compensate=refund)
async def charge_card(ctx: StepContext) -> None:
    pass


async def release(ctx: CompensationContext) -> None:
    pass


@order.step(compensate=release)
async def reserve_stock(ctx: StepContext) -> None:
    if ctx.input.get("out_of_stock"):
        raise RuntimeError("out of stock")


@order.pivot()
async def ship(ctx: StepContext) -> None:
    pass


# --8<-- [start:statuses]
async def statuses(store: Store, saga_id: str) -> tuple[SagaStatus, list[StepStatus]]:
    stored = await store.load(saga_id)
    assert stored is not None
    state = SagaState.from_records(saga_id, stored.records)  # the state is a fold of the log
    return state.status, [step.status for step in state.steps]


# --8<-- [end:statuses]


async def main() -> None:
    store = await open_store("memory://")
    engine = Engine(store, [order])
    await engine.run(order, {}, saga_id="completes")
    await engine.run(order, {"out_of_stock": True}, saga_id="compensates")
    await engine.run(order, {"out_of_stock": True, "refund_impossible": True}, saga_id="stuck")
    await Client(store).start(order, {}, saga_id="queued")  # recorded; no worker ran it yet
    expected = {
        "completes": (SagaStatus.COMPLETED, ["succeeded", "succeeded", "succeeded"]),
        "compensates": (SagaStatus.COMPENSATED, ["compensated", "failed", "skipped"]),
        "stuck": (SagaStatus.NEEDS_ATTENTION, ["compensation_failed", "failed", "skipped"]),
        "queued": (SagaStatus.PENDING, ["pending", "pending", "pending"]),
    }
    header = " ".join(f"{step.name:<20}" for step in order.steps)
    print(f"{'saga':<12} {'status':<16} {header}".rstrip())
    for saga_id, (status, steps) in expected.items():
        found_status, found_steps = await statuses(store, saga_id)
        assert (found_status, found_steps) == (status, steps), (saga_id, found_status, found_steps)
        cells = " ".join(f"{step.value:<20}" for step in found_steps)
        print(f"{saga_id:<12} {found_status.value:<16} {cells}".rstrip())
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
