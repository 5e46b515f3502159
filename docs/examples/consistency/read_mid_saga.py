"""What a reader of the order table sees while the order saga runs, beside what the saga's
own log says at that moment (``sagakit.operations.find``, what ``sagakit show`` reads)."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, StepContext, Store, open_store
from sagakit.operations import Query, find

from interleaving_gate import Gate


@dataclass
class FakeShop:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # the order table
    gates: dict[str, Gate] = field(default_factory=dict)  # "order id:point" -> hold there

    async def point(self, order_id: str, name: str) -> None:
        if gate := self.gates.get(f"{order_id}:{name}"):
            await gate.hold()


def build_saga(shop: FakeShop) -> Saga:
    order = Saga("order_read_mid_saga")

    async def refund(ctx: CompensationContext) -> None:
        await shop.point(ctx.input["order_id"], "refund")
        shop.orders[ctx.input["order_id"]].update(paid=False, status="REJECTED")

    @order.step(compensate=refund)
    async def charge(ctx: StepContext) -> dict[str, Any]:
        shop.orders[ctx.input["order_id"]] = {"status": "PENDING", "paid": True}
        return {}

    @order.pivot()
    async def reserve(ctx: StepContext) -> dict[str, Any]:
        await shop.point(ctx.input["order_id"], "reserve")
        if not ctx.input["in_stock"]:
            raise RuntimeError("out of stock")
        shop.orders[ctx.input["order_id"]]["status"] = "APPROVED"
        return {}

    @order.retriable()
    async def email(ctx: StepContext) -> dict[str, Any]:
        await shop.point(ctx.input["order_id"], "email")  # the mail server is slow today
        return {}

    return order


# --8<-- [start:reader]
async def read(store: Store, shop: FakeShop, order_id: str) -> None:
    """One look at the order row, and at the saga that is working on it."""
    (view,) = (await find(store, Query(input={"order_id": order_id}))).sagas
    row = shop.orders[order_id]
    steps = " ".join(f"{step.name}={step.status.value}" for step in view.state.steps)
    saga = view.state.status.value
    print(f"{order_id} {row['status']:8} paid={row['paid']!s:5} | saga {saga:12} {steps}")


# --8<-- [end:reader]


async def main() -> None:
    store = await open_store("memory://")
    looks = {"A-1": ("reserve", "email"), "A-2": ("refund",)}  # where to hold each order
    shop = FakeShop(gates={f"{o}:{point}": Gate() for o in looks for point in looks[o]})
    order = build_saga(shop)
    engine = Engine(store, [order])

    # --8<-- [start:story]
    for order_id, points in looks.items():
        given = {"order_id": order_id, "in_stock": order_id == "A-1"}
        running = asyncio.create_task(engine.run(order, given, saga_id=order_id))
        for point in points:
            gate = shop.gates[f"{order_id}:{point}"]
            await gate.reached.wait()  # mid-saga: a step holds at this point
            await read(store, shop, order_id)
            gate.release.set()
        await running
        await read(store, shop, order_id)
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
