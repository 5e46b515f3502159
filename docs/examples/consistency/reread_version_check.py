"""Countermeasure: reread the value. A saga that revises an order reads it (and its version)
in one step and writes it in a later one. The write re-reads the version first: if another
change got in between, the write is refused and the saga compensates, instead of silently
overwriting that change with a quantity priced on a stale read."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store

from interleaving_gate import Gate

PRICE = 10


class OrderChanged(Exception):
    pass


# --8<-- [start:saga]
@dataclass
class FakeShop:
    orders: dict[str, dict[str, int]] = field(default_factory=dict)  # quantity, version
    held_credit: dict[str, int] = field(default_factory=dict)  # by idempotency key
    gate: Gate | None = None  # hold the saga between its read and its write

    def update(self, order_id: str, expected_version: int, quantity: int) -> None:
        order = self.orders[order_id]
        if order["version"] != expected_version:  # the reread, in the service's own tx
            raise OrderChanged(f"{order_id} is at version {order['version']}")
        order.update(quantity=quantity, version=expected_version + 1)


def build_saga(shop: FakeShop) -> Saga:
    revise = Saga("revise_order")

    async def release_credit(ctx: CompensationContext) -> None:
        shop.held_credit.pop(ctx.action_key, None)

    @revise.step(compensate=release_credit)
    async def hold_credit(ctx: StepContext) -> dict[str, Any]:
        order = shop.orders[ctx.input["order_id"]]  # the read the later write depends on
        extra = (ctx.input["quantity"] - order["quantity"]) * PRICE
        shop.held_credit[ctx.idempotency_key] = extra
        if shop.gate:
            await shop.gate.hold()
        return {"version": order["version"], "extra": extra}

    @revise.pivot()
    async def apply_revision(ctx: StepContext) -> dict[str, Any]:
        read = ctx.results["hold_credit"]
        shop.update(ctx.input["order_id"], read["version"], ctx.input["quantity"])
        return {}

    return revise


# --8<-- [end:saga]


async def main() -> None:
    store = await open_store("memory://")
    gate = Gate()
    shop = FakeShop(orders={"o-1": {"quantity": 2, "version": 1}}, gate=gate)
    revise = build_saga(shop)
    engine = Engine(store, [revise])

    # --8<-- [start:story]
    running = asyncio.create_task(engine.run(revise, {"order_id": "o-1", "quantity": 3}))
    await gate.reached.wait()  # the saga read version 1 and held credit for +1 lamp
    shop.orders["o-1"] = {"quantity": 5, "version": 2}  # another change gets in first
    gate.release.set()
    stale = await running
    assert stale.status is SagaStatus.COMPENSATED  # "o-1 is at version 2"
    assert shop.orders["o-1"] == {"quantity": 5, "version": 2} and shop.held_credit == {}

    shop.gate = None  # run it again: it reads version 2, prices -2 lamps, and writes
    again = await engine.run(revise, {"order_id": "o-1", "quantity": 3})
    assert again.status is SagaStatus.COMPLETED
    assert shop.orders["o-1"] == {"quantity": 3, "version": 3}
    assert list(shop.held_credit.values()) == [-20]
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
