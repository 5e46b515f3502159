"""Recipe: release a reservation that may be partial.

Reserving an order line by line can fail half-way, with some lines held. The inventory
service files every hold under the reserve call's idempotency key, so the release undoes
exactly what that call reserved: all of it, part of it, or nothing.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store


# --8<-- [start:service]
@dataclass
class FakeInventory:
    """Stock by SKU; holds filed under the key of the call that made them."""

    stock: dict[str, int]
    holds: dict[str, dict[str, int]] = field(default_factory=dict)
    released: list[tuple[str, dict[str, int]]] = field(default_factory=list)

    def reserve(self, key: str, sku: str, qty: int) -> None:
        held = self.holds.setdefault(key, {})
        if sku in held:  # this line was reserved by an earlier attempt of the same call
            return
        if self.stock.get(sku, 0) < qty:
            raise RuntimeError(f"only {self.stock.get(sku, 0)} {sku} in stock")
        self.stock[sku] -= qty
        held[sku] = qty

    def release(self, key: str) -> None:
        """Give back whatever ``key`` holds; a second release finds nothing to give back."""
        held = self.holds.pop(key, {})
        for sku, qty in held.items():
            self.stock[sku] += qty
        self.released.append((key, held))


# --8<-- [end:service]


def build_saga(inventory: FakeInventory) -> Saga:
    order = Saga("place_order")

    # --8<-- [start:reserve]
    async def release(ctx: CompensationContext) -> None:
        # ctx.result is None if the reserve failed half-way; its key still names the holds
        inventory.release(ctx.action_key)

    @order.step(compensate=release, compensate_on_failure=True)
    async def reserve(ctx: StepContext) -> dict[str, Any]:
        for line in ctx.input["lines"]:
            inventory.reserve(ctx.idempotency_key, line["sku"], line["qty"])
        return {"lines": len(ctx.input["lines"])}

    # --8<-- [end:reserve]

    @order.pivot()
    async def charge(ctx: StepContext) -> dict[str, Any]:
        if ctx.input["card"] == "tok_declined":
            raise RuntimeError("card declined")
        return {"payment_id": "pay-1"}

    return order


async def main() -> None:
    store = await open_store("memory://")
    inventory = FakeInventory(stock={"LAMP": 5, "DESK": 2})
    order = build_saga(inventory)
    engine = Engine(store, [order])

    # --8<-- [start:story]
    lamp_and_desks = [{"sku": "LAMP", "qty": 1}, {"sku": "DESK", "qty": 3}]
    half = await engine.run(order, {"lines": lamp_and_desks, "card": "tok_visa"}, saga_id="o-1")
    assert half.status is SagaStatus.COMPENSATED  # the lamp was held, then the desks ran out
    assert inventory.released == [("o-1:reserve:action", {"LAMP": 1})]

    lamps = [{"sku": "LAMP", "qty": 2}]
    whole = await engine.run(order, {"lines": lamps, "card": "tok_declined"}, saga_id="o-2")
    assert whole.status is SagaStatus.COMPENSATED  # all reserved, then the card was declined
    assert inventory.released[-1] == ("o-2:reserve:action", {"LAMP": 2})
    assert inventory.stock == {"LAMP": 5, "DESK": 2}  # everything is back
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
