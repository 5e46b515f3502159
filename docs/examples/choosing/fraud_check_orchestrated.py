"""Adding a fraud check to the orchestrated order saga: one more step, in a new version.

Version 2 screens the card after the order is created and before it is charged. A
flagged card fails the screening, so the saga cancels the order with nothing charged.
Version 1 stays registered beside it: sagas that started on it finish on it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sagakit import CompensationContext, Engine, MemoryStore, Saga, SagaStatus, StepContext, Store

from side_by_side_orchestrated import ORDERS, Ledger, Shop, ledger, order_saga

FLAGGED_CARDS = {"tok_stolen"}
SUSPICIOUS: dict[str, Any] = {**ORDERS[0], "order_id": "order-3", "card": "tok_stolen"}


class FraudSuspected(Exception):
    """The fraud desk will not let the order through."""


# --8<-- [start:step]
def order_saga_v2(shop: Shop, screenings: dict[str, str]) -> Saga:
    """``place_order@2``: version 1's steps with a screening before the charge."""
    v1 = order_saga(shop)
    saga = Saga("place_order", version=2)
    saga.add_step(v1.get("create_order"))

    async def nothing_to_undo(ctx: CompensationContext) -> None:
        """A screening changes nothing that must be undone; sagakit asks you to say so."""

    @saga.step(compensate=nothing_to_undo)
    async def screen_for_fraud(ctx: StepContext) -> None:
        verdict = "flagged" if ctx.input["card"] in FLAGGED_CARDS else "cleared"
        screenings[ctx.input["order_id"]] = verdict
        if verdict == "flagged":
            raise FraudSuspected(f"card {ctx.input['card']} is flagged")

    for name in ("charge_payment", "reserve_stock", "create_shipment", "complete_order"):
        saga.add_step(v1.get(name))
    return saga


# --8<-- [end:step]


async def place_orders_v2(store: Store) -> tuple[Ledger, dict[str, str]]:
    """A good order and a flagged one on version 2; the ledger and the screenings."""
    shop = Shop()
    screenings: dict[str, str] = {}
    v1, v2 = order_saga(shop), order_saga_v2(shop, screenings)
    engine = Engine(store, [v1, v2])  # both versions served side by side
    for order in (ORDERS[0], SUSPICIOUS):
        await engine.run(v2, order, saga_id=order["order_id"])
    return ledger(shop), screenings


async def main() -> None:
    store = MemoryStore()
    found, screenings = await place_orders_v2(store)
    statuses = {}
    for saga_id in ("order-1", "order-3"):
        stored = await store.load(saga_id)
        assert stored is not None and stored.instance.version == 2
        statuses[saga_id] = stored.instance.status
    assert statuses == {"order-1": SagaStatus.COMPLETED, "order-3": SagaStatus.COMPENSATED}
    assert screenings == {"order-1": "cleared", "order-3": "flagged"}
    assert found.orders == {"order-1": "completed", "order-3": "cancelled"}
    assert found.charged == {"order-1"}, "the flagged card was never charged"
    assert found.shipped == {"order-1"}
    for saga_id, status in statuses.items():
        print(saga_id, status.value)


if __name__ == "__main__":
    asyncio.run(main())
