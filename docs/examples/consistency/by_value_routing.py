"""Countermeasure: by value. How much isolation an order gets depends on what is at stake:
an order of 1,000 or more takes the path with a semantic lock, so nothing else can touch it
while it is in flight; a small one runs as a plain saga, faster, and its anomalies are
accepted as the cost of business."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, StepContext, open_store

HIGH_VALUE = 1_000


@dataclass
class FakeOrders:
    history: dict[str, list[str]] = field(default_factory=dict)  # every state, in order

    def write(self, order_id: str, state: str) -> None:
        self.history.setdefault(order_id, []).append(state)


def build_sagas(orders: FakeOrders) -> tuple[Saga, Saga]:
    async def charge(ctx: StepContext) -> dict[str, Any]:
        return {"payment_id": f"pay-{ctx.input['order_id']}"}

    async def refund(ctx: CompensationContext) -> None:
        pass  # the payment service refunds ctx.result["payment_id"]

    def writes(state: str) -> Callable[[StepContext | CompensationContext], Awaitable[Any]]:
        async def write_order(ctx: StepContext | CompensationContext) -> dict[str, Any]:
            orders.write(ctx.input["order_id"], state)
            return {}

        return write_order

    plain = (
        Saga("order_plain")
        .add(charge, compensate=refund)
        .add(writes("CONFIRMED"), name="confirm_order", kind="pivot")
    )
    locked = (
        Saga("order_locked")
        .add(writes("APPROVAL_PENDING"), name="create_order", compensate=writes("REJECTED"))
        .add(charge, compensate=refund)
        .add(writes("APPROVED"), name="approve_order", kind="pivot")
    )
    return plain, locked


# --8<-- [start:route]
def saga_for(order: dict[str, Any], plain: Saga, locked: Saga) -> Saga:
    """The business decides, per request, what isolation is worth paying for."""
    return locked if order["total"] >= HIGH_VALUE else plain


# --8<-- [end:route]


async def main() -> None:
    store = await open_store("memory://")
    orders = FakeOrders()
    plain, locked = build_sagas(orders)
    engine = Engine(store, [plain, locked])

    # --8<-- [start:story]
    for order in ({"order_id": "o-lamp", "total": 30}, {"order_id": "o-piano", "total": 2500}):
        done = await engine.run(saga_for(order, plain, locked), order)
        print(order["order_id"], done.name, done.status.value)
    assert orders.history == {
        "o-lamp": ["CONFIRMED"],  # one write, at the end: no lock to take or clear
        "o-piano": ["APPROVAL_PENDING", "APPROVED"],  # locked while the saga runs
    }
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
