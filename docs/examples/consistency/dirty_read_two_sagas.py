"""Anomaly: a dirty read. Two orders of one customer run as two sagas, interleaved: the
second is refused credit that the first has taken and is about to give back."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store

from interleaving_gate import Gate


class CreditLimitExceeded(Exception):
    pass


class OutOfStock(Exception):
    pass


# --8<-- [start:saga]
@dataclass
class FakeShop:  # three services' tables: the customers', the orders', the inventory's
    credit: dict[str, int] = field(default_factory=lambda: {"c-ada": 100})
    orders: dict[str, dict[str, bool]] = field(default_factory=dict)
    stock: dict[str, int] = field(default_factory=lambda: {"LAMP": 0, "DESK": 5})
    gates: dict[str, Gate] = field(default_factory=dict)  # order id -> hold it at reserve


def build_saga(shop: FakeShop) -> Saga:
    order = Saga("order_with_dirty_reads")

    async def refund(ctx: CompensationContext) -> None:
        shop.credit[ctx.input["customer"]] += ctx.result["amount"]
        shop.orders[ctx.input["order_id"]]["charged"] = False

    @order.step(compensate=refund)
    async def charge(ctx: StepContext) -> dict[str, Any]:
        customer, amount = ctx.input["customer"], ctx.input["amount"]
        if shop.credit[customer] < amount:  # reads what is there, whoever's saga wrote it
            raise CreditLimitExceeded(f"{customer} has {shop.credit[customer]} left")
        shop.credit[customer] -= amount
        shop.orders[ctx.input["order_id"]] = {"charged": True, "reserved": False}
        return {"amount": amount}

    @order.pivot()
    async def reserve(ctx: StepContext) -> dict[str, Any]:
        if gate := shop.gates.get(ctx.input["order_id"]):
            await gate.hold()
        if shop.stock[ctx.input["sku"]] < 1:
            raise OutOfStock(ctx.input["sku"])
        shop.stock[ctx.input["sku"]] -= 1
        shop.orders[ctx.input["order_id"]]["reserved"] = True
        return {}

    return order


# --8<-- [end:saga]


async def main() -> None:
    store = await open_store("memory://")
    shop = FakeShop(gates={"A-1": Gate()})
    order = build_saga(shop)
    engine = Engine(store, [order])

    # --8<-- [start:story]
    lamp = {"order_id": "A-1", "customer": "c-ada", "amount": 70, "sku": "LAMP"}
    first = asyncio.create_task(engine.run(order, lamp, saga_id="A-1"))
    await shop.gates["A-1"].reached.wait()  # A-1 is charged and held at its reserve step
    assert shop.orders["A-1"] == {"charged": True, "reserved": False}  # what a reader sees

    desk = {"order_id": "A-2", "customer": "c-ada", "amount": 50, "sku": "DESK"}
    second = await engine.run(order, desk, saga_id="A-2")
    assert second.status is SagaStatus.COMPENSATED  # refused: c-ada has 30 left

    shop.gates["A-1"].release.set()
    assert (await first).status is SagaStatus.COMPENSATED  # no lamp: the 70 is refunded
    assert shop.credit["c-ada"] == 100  # A-2 was refused over credit nobody ended up using
    # --8<-- [end:story]
    print(second.reason)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
