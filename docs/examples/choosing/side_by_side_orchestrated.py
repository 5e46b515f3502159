"""The order saga, orchestrated: one definition names every step and how each is undone.

Two orders go through it: one completes; one asks for 3 globes when 2 are in stock, so
``reserve_stock`` fails and the saga refunds the card and cancels the order.
Afterwards: ``sagakit show order-2 --db sqlite:///orchestrated.db``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagakit import (
    CompensationContext,
    Engine,
    Saga,
    SagaStatus,
    StepContext,
    Store,
    open_store,
)

ORDERS: list[dict[str, Any]] = [
    {
        "order_id": "order-1",
        "card": "tok_visa",
        "total_cents": 4990,
        "items": [{"sku": "LAMP", "qty": 1}],
        "address": "1 Loop Rd, Springfield",
    },
    {
        "order_id": "order-2",
        "card": "tok_visa",
        "total_cents": 8970,
        "items": [{"sku": "GLOBE", "qty": 3}],  # 2 in stock
        "address": "2 Loop Rd, Springfield",
    },
]


class OutOfStock(Exception):
    """The inventory service refused a reservation: it reserves every line or none."""


@dataclass
class Shop:
    """The services the saga calls, faked in memory. Each effect is filed under the call's
    idempotency key, so a call made again (a retry, a resumed saga) changes nothing."""

    stock: dict[str, int] = field(default_factory=lambda: {"LAMP": 10, "GLOBE": 2})
    orders: dict[str, str] = field(default_factory=dict)  # order id -> status
    payments: dict[str, str] = field(default_factory=dict)  # payment id -> order id
    refunds: dict[str, str] = field(default_factory=dict)  # key -> payment id
    reservations: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> sku: qty
    shipments: dict[str, str] = field(default_factory=dict)  # key -> order id

    def free(self, sku: str) -> int:
        held = sum(lines.get(sku, 0) for lines in self.reservations.values())
        return self.stock.get(sku, 0) - held


# --8<-- [start:saga]
def order_saga(shop: Shop) -> Saga:
    """``place_order@1``: the whole flow, and every undo, in one place."""
    saga = Saga("place_order", version=1)

    async def cancel_order(ctx: CompensationContext) -> None:
        shop.orders[ctx.input["order_id"]] = "cancelled"

    @saga.step(compensate=cancel_order)
    async def create_order(ctx: StepContext) -> None:
        shop.orders[ctx.input["order_id"]] = "pending"

    async def refund_payment(ctx: CompensationContext) -> None:
        shop.refunds[ctx.idempotency_key] = ctx.result["payment_id"]  # the action's result

    @saga.step(compensate=refund_payment)
    async def charge_payment(ctx: StepContext) -> dict[str, str]:
        payment_id = f"pay-{ctx.idempotency_key}"  # the key is the same on every retry
        shop.payments[payment_id] = ctx.input["order_id"]
        return {"payment_id": payment_id}

    async def release_stock(ctx: CompensationContext) -> None:
        shop.reservations.pop(ctx.action_key, None)

    @saga.step(compensate=release_stock)
    async def reserve_stock(ctx: StepContext) -> None:
        lines = ctx.input["items"]
        short = [i["sku"] for i in lines if shop.free(i["sku"]) < i["qty"]]
        if short:
            raise OutOfStock(f"short of {', '.join(short)}")  # -> refund, then cancel
        shop.reservations[ctx.idempotency_key] = {i["sku"]: i["qty"] for i in lines}

    @saga.pivot()  # once the parcel is booked the saga only goes forward
    async def create_shipment(ctx: StepContext) -> None:
        shop.shipments[ctx.idempotency_key] = ctx.input["order_id"]

    @saga.retriable()  # after the pivot: retried until it succeeds
    async def complete_order(ctx: StepContext) -> None:
        shop.orders[ctx.input["order_id"]] = "completed"

    return saga


async def place_orders(store: Store, saga: Saga, orders: list[dict[str, Any]]) -> None:
    engine = Engine(store, [saga])
    for order in orders:
        await engine.run(saga, order, saga_id=order["order_id"])  # returns once it ended


# --8<-- [end:saga]


@dataclass
class Ledger:
    """What the services say happened, per order id: the business outcome."""

    orders: dict[str, str]
    charged: set[str]
    refunded: set[str]
    shipped: set[str]


def ledger(shop: Shop) -> Ledger:
    return Ledger(
        orders=dict(shop.orders),
        charged=set(shop.payments.values()),
        refunded={shop.payments[payment] for payment in shop.refunds.values()},
        shipped=set(shop.shipments.values()),
    )


async def place_two_orders(store: Store) -> Ledger:
    """Run both orders on ``store``'s saga log; what the services then hold."""
    shop = Shop()
    await place_orders(store, order_saga(shop), ORDERS)
    return ledger(shop)


def remove_databases(*names: str) -> None:
    """Each run starts from an empty saga log, so the order ids above are new to it."""
    for name in names:
        for stale in Path().glob(f"{name}.db*"):
            stale.unlink()


async def main() -> None:
    remove_databases("orchestrated")
    store = await open_store("sqlite:///orchestrated.db")
    try:
        found = await place_two_orders(store)
        statuses = {}
        for order in ORDERS:
            stored = await store.load(order["order_id"])
            assert stored is not None
            statuses[order["order_id"]] = stored.instance.status
    finally:
        await store.close()
    assert statuses == {"order-1": SagaStatus.COMPLETED, "order-2": SagaStatus.COMPENSATED}
    assert found.orders == {"order-1": "completed", "order-2": "cancelled"}
    assert found.charged == {"order-1", "order-2"}
    assert found.refunded == {"order-2"}, "the failed order's payment was refunded"
    assert found.shipped == {"order-1"}, "and nothing was shipped for it"
    for saga_id, status in statuses.items():
        print(saga_id, status.value)


if __name__ == "__main__":
    asyncio.run(main())
