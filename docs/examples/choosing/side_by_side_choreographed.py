"""The order saga, choreographed: four services that only hear and emit events.

The same two orders as the orchestrated program: one completes; one asks for 3 globes when
2 are in stock, so inventory emits ``StockReservationFailed``, payments refunds the card
and orders cancels the order. Each service keeps its own SQLite file in this directory
(its tables, its inbox, its outbox); a ``Tracker`` writes each saga into the saga log.
Afterwards: ``sagakit show order-2 --db sqlite:///choreographed.db``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagakit import (
    Broker,
    Choreography,
    ChoreographyStep,
    Event,
    SagaStatus,
    Service,
    Store,
    Tracker,
    Transaction,
    open_broker,
    open_store,
)

STREAM = "orders"
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


# --8<-- [start:services]
def order_service(broker: Broker) -> Service:
    orders = Service(
        "orders",
        "orders.db",
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, status TEXT);",
    )

    @orders.on("ShipmentCreated")
    def complete(event: Event, tx: Transaction) -> None:
        order_id = event.data["order_id"]
        tx.db.execute("UPDATE orders SET status = 'completed' WHERE order_id = ?", (order_id,))
        tx.emit("OrderCompleted", {"order_id": order_id})

    @orders.on("PaymentRefunded")
    def cancel(event: Event, tx: Transaction) -> None:
        order_id = event.data["order_id"]
        tx.db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (order_id,))
        tx.emit("OrderCancelled", {"order_id": order_id})

    return orders


def payment_service(broker: Broker, *, charge_on: str = "OrderCreated") -> Service:
    payments = Service(
        "payments",
        "payments.db",
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS payments (order_id TEXT, refunded INTEGER);",
    )

    @payments.on(charge_on)
    def charge(event: Event, tx: Transaction) -> None:
        order = event.data
        tx.db.execute("INSERT INTO payments VALUES (?, 0)", (order["order_id"],))
        tx.emit("PaymentCompleted", order)  # carries what the next services need

    @payments.on("StockReservationFailed")
    def refund(event: Event, tx: Transaction) -> None:
        order_id = event.data["order_id"]
        tx.db.execute("UPDATE payments SET refunded = 1 WHERE order_id = ?", (order_id,))
        tx.emit("PaymentRefunded", {"order_id": order_id})

    return payments


def inventory_service(broker: Broker) -> Service:
    inventory = Service(
        "inventory",
        "inventory.db",
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, free INTEGER);"
        "INSERT OR IGNORE INTO stock VALUES ('LAMP', 10), ('GLOBE', 2);",  # on the shelves
    )

    @inventory.on("PaymentCompleted")
    def reserve(event: Event, tx: Transaction) -> None:
        order = event.data
        free = dict(tx.db.execute("SELECT sku, free FROM stock").fetchall())
        short = [i["sku"] for i in order["items"] if free.get(i["sku"], 0) < i["qty"]]
        if short:  # every line or none
            reason = f"short of {', '.join(short)}"
            tx.emit("StockReservationFailed", {"order_id": order["order_id"], "reason": reason})
            return
        for i in order["items"]:
            tx.db.execute("UPDATE stock SET free = free - ? WHERE sku = ?", (i["qty"], i["sku"]))
        tx.emit("StockReserved", order)

    return inventory


def shipping_service(broker: Broker) -> Service:
    shipping = Service(
        "shipping",
        "shipping.db",
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS shipments (order_id TEXT, address TEXT);",
    )

    @shipping.on("StockReserved")
    def ship(event: Event, tx: Transaction) -> None:
        order = event.data
        tx.db.execute("INSERT INTO shipments VALUES (?, ?)", (order["order_id"], order["address"]))
        tx.emit("ShipmentCreated", {"order_id": order["order_id"]})

    return shipping


# --8<-- [end:services]


# --8<-- [start:choreography]
ORDER_FLOW = Choreography(  # what the Tracker needs to put each saga in the saga log
    "place_order",
    version=1,
    steps=[
        ChoreographyStep("create_order", succeeded="OrderCreated", compensated="OrderCancelled"),
        ChoreographyStep(
            "charge_payment", succeeded="PaymentCompleted", compensated="PaymentRefunded"
        ),
        ChoreographyStep(
            "reserve_stock", succeeded="StockReserved", failed="StockReservationFailed"
        ),
        ChoreographyStep("create_shipment", succeeded="ShipmentCreated", kind="pivot"),
        ChoreographyStep("complete_order", succeeded="OrderCompleted", kind="retriable"),
    ],
    starts="OrderCreated",
    completes="OrderCompleted",
    fails="StockReservationFailed",
    compensated="OrderCancelled",
    max_gap=30.0,  # a saga silent for longer is marked needs_attention
)


async def place_orders(
    store: Store,
    broker: Broker,
    services: list[Service],
    flow: Choreography,
    orders: list[dict[str, Any]],
) -> None:
    tracker = Tracker(store, broker, [flow], streams=[STREAM])
    runners: list[Service | Tracker] = [tracker, *services]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as running:
        for runner in runners:
            running.create_task(runner.run(stop))
        try:
            for runner in runners:  # a new subscriber hears only the events after it
                await runner.ready.wait()
            intake = next(s for s in services if s.name == "orders")
            for order in orders:  # the order service's own write starts each saga
                async with intake.transaction() as tx:
                    tx.db.execute("INSERT INTO orders VALUES (?, 'pending')", (order["order_id"],))
                    tx.emit("OrderCreated", order, correlation_id=order["order_id"])
            await ended(store, [order["order_id"] for order in orders])
        finally:
            stop.set()


# --8<-- [end:choreography]


async def ended(store: Store, saga_ids: Iterable[str], within: float = 30.0) -> None:
    """Wait until the tracker has written an end for every saga (nobody else knows)."""
    async with asyncio.timeout(within):
        for saga_id in saga_ids:
            async with store.watch(saga_id) as change:
                while True:
                    stored = await store.load(saga_id)
                    if stored is not None and stored.instance.status.is_terminal:
                        break
                    await change.wait(1.0)


@dataclass
class Ledger:
    """What the services' own databases say happened, per order id: the business outcome."""

    orders: dict[str, str]
    charged: set[str]
    refunded: set[str]
    shipped: set[str]


def ledger() -> Ledger:
    def rows(service: str, query: str) -> list[Any]:
        with closing(sqlite3.connect(f"{service}.db")) as db:
            return db.execute(query).fetchall()

    return Ledger(
        orders=dict(rows("orders", "SELECT order_id, status FROM orders")),
        charged={r[0] for r in rows("payments", "SELECT order_id FROM payments")},
        refunded={r[0] for r in rows("payments", "SELECT order_id FROM payments WHERE refunded")},
        shipped={r[0] for r in rows("shipping", "SELECT order_id FROM shipments")},
    )


def shop(broker: Broker) -> list[Service]:
    return [
        order_service(broker),
        payment_service(broker),
        inventory_service(broker),
        shipping_service(broker),
    ]


async def run(
    store: Store,
    build: Callable[[Broker], list[Service]],
    flow: Choreography,
    orders: list[dict[str, Any]],
) -> None:
    """Open a broker, build the services on it, run ``orders`` through them, close all."""
    broker = await open_broker("memory://")  # or redis://, nats://, amqp://
    services: list[Service] = build(broker)
    try:
        await place_orders(store, broker, services, flow, orders)
    finally:
        for service in services:
            await service.close()
        await broker.close()


async def place_two_orders(store: Store) -> Ledger:
    """Run both orders, tracked into ``store``; what the services' databases then hold."""
    await run(store, shop, ORDER_FLOW, ORDERS)
    return ledger()


def remove_databases(*names: str) -> None:
    """Each run starts from empty databases, so the order ids above are new to them."""
    for name in names:
        for stale in Path().glob(f"{name}.db*"):
            stale.unlink()


async def main() -> None:
    remove_databases("choreographed", "orders", "payments", "inventory", "shipping")
    store = await open_store("sqlite:///choreographed.db")
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
