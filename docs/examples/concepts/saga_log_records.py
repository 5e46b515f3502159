"""The saga log: what one completed and one compensated saga wrote, record by record."""

import asyncio

from sagakit import (
    CompensationContext,
    Engine,
    RecordType,
    Saga,
    SagaStatus,
    StepContext,
    Store,
    open_store,
)

order = Saga("place_order", version=1)


async def refund(ctx: CompensationContext) -> None:
    pass


@order.step(compensate=refund)
async def charge_card(ctx: StepContext) -> dict[str, str]:
    return {"payment_id": "pay-1"}


async def release(ctx: CompensationContext) -> None:
    pass


@order.step(compensate=release)
async def reserve_stock(ctx: StepContext) -> None:
    if ctx.input["quantity"] > 2:
        raise RuntimeError("only 2 in stock")


@order.pivot()
async def ship(ctx: StepContext) -> None:
    pass


# --8<-- [start:records]
async def record_types(store: Store, saga_id: str) -> list[RecordType]:
    stored = await store.load(saga_id)  # the instance's row and its whole log, in order
    assert stored is not None
    for record in stored.records:
        print(f"  {record.seq:>2} {record.type.value:<24} {record.step or ''}".rstrip())
    return [record.type for record in stored.records]


# --8<-- [end:records]


async def main() -> None:
    store = await open_store("sqlite:///saga_log.db")
    engine = Engine(store, [order])
    for saga_id, quantity in (("order-1", 1), ("order-2", 3)):
        result = await engine.run(order, {"quantity": quantity}, saga_id=saga_id)
        print(saga_id, result.status.value)
        types = await record_types(store, saga_id)
        assert types[0] is RecordType.SAGA_STARTED
        if result.status is SagaStatus.COMPLETED:
            assert types[-1] is RecordType.SAGA_COMPLETED
        else:
            assert result.status is SagaStatus.COMPENSATED
            assert types[-1] is RecordType.SAGA_COMPENSATED
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
