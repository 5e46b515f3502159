"""What the in-memory store costs the rest of the process while it holds many sagas."""

from __future__ import annotations

import gc

from sagakit import Engine, MemoryStore, Saga, SagaStatus, StepContext


def _order_saga() -> Saga:
    saga = Saga("order")

    @saga.step(compensate=lambda ctx: None)
    async def charge(ctx: StepContext) -> dict[str, str]:
        return {"payment_id": f"pay-{ctx.input['id']}"}

    @saga.step(compensate=lambda ctx: None)
    async def ship(ctx: StepContext) -> dict[str, str]:
        return {"shipment_id": f"ship-{ctx.input['id']}"}

    return saga


async def test_a_stored_saga_leaves_one_object_for_the_garbage_collector() -> None:
    """Every full collection walks what the collector tracks: a saga's records kept as
    objects it tracks (ten or more a saga) made that walk a quarter of a long run's time."""
    saga = _order_saga()
    engine = Engine(MemoryStore(), [saga])
    await engine.run(saga, {"id": 0})  # what a first run makes once (caches, timers)
    gc.collect()
    before = len(gc.get_objects())
    for n in range(1, 1_001):
        result = await engine.run(saga, {"id": n})
        assert result.status is SagaStatus.COMPLETED
    del result
    gc.collect()
    tracked = len(gc.get_objects()) - before
    assert tracked <= 1_100, f"{tracked} tracked objects for 1,000 stored sagas"
    stored = await engine.store.load((await engine.store.instances())[0].id)
    assert stored is not None and len(stored.records) == 6
