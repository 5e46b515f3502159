"""Countermeasure: a semantic lock. The saga's first step writes the order APPROVAL_PENDING;
other operations on the order check that flag and refuse while it is set. The saga's last
step (APPROVED) or its compensation (REJECTED) clears it."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store

from interleaving_gate import Gate


# --8<-- [start:lock]
@dataclass
class FakeOrders:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)

    def create(self, order_id: str, quantity: int) -> None:
        self.orders[order_id] = {"state": "APPROVAL_PENDING", "quantity": quantity}

    def settle(self, order_id: str, state: str) -> None:  # APPROVED or REJECTED: unlocked
        self.orders[order_id]["state"] = state

    def change(self, order_id: str, **changes: Any) -> bool:  # from outside the saga
        if self.orders[order_id]["state"] == "APPROVAL_PENDING":
            return False  # refused (HTTP 409): try again once the saga has settled it
        self.orders[order_id].update(changes)
        return True


def build_saga(orders: FakeOrders, credit: dict[str, int], gate: Gate) -> Saga:
    order = Saga("order_with_semantic_lock")

    async def reject_order(ctx: CompensationContext) -> None:
        orders.settle(ctx.input["order_id"], "REJECTED")  # the compensation unlocks

    @order.step(compensate=reject_order)
    async def create_order(ctx: StepContext) -> dict[str, Any]:
        orders.create(ctx.input["order_id"], ctx.input["quantity"])  # locked from here on
        return {}

    @order.pivot()
    async def reserve_credit(ctx: StepContext) -> dict[str, Any]:
        await gate.hold()  # the story tries to change the order while the saga is here
        if credit[ctx.input["customer"]] < ctx.input["amount"]:
            raise RuntimeError("credit limit exceeded")
        credit[ctx.input["customer"]] -= ctx.input["amount"]
        return {}

    @order.retriable()
    async def approve_order(ctx: StepContext) -> dict[str, Any]:
        orders.settle(ctx.input["order_id"], "APPROVED")  # the last step unlocks
        return {}

    return order


# --8<-- [end:lock]


async def main() -> None:
    store = await open_store("memory://")
    orders, gate = FakeOrders(), Gate()
    order = build_saga(orders, {"c-ada": 100}, gate)
    engine = Engine(store, [order])

    # --8<-- [start:story]
    lamp = {"order_id": "o-1", "customer": "c-ada", "quantity": 1, "amount": 40}
    running = asyncio.create_task(engine.run(order, lamp, saga_id="o-1"))
    await gate.reached.wait()  # o-1 is written; its credit is not reserved yet
    assert not orders.change("o-1", state="CANCELLED")  # refused: a cancel
    assert not orders.change("o-1", quantity=3)  # refused: a modification
    assert orders.orders["o-1"] == {"state": "APPROVAL_PENDING", "quantity": 1}

    gate.release.set()
    assert (await running).status is SagaStatus.COMPLETED
    assert orders.orders["o-1"]["state"] == "APPROVED"
    assert orders.change("o-1", state="CANCELLED")  # settled: now a cancel goes through

    desks = {"order_id": "o-2", "customer": "c-ada", "quantity": 9, "amount": 900}
    assert (await engine.run(order, desks, saga_id="o-2")).status is SagaStatus.COMPENSATED
    assert orders.orders["o-2"]["state"] == "REJECTED"  # the compensation lifted the lock
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
