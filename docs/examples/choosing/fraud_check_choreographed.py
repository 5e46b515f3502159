"""Adding a fraud check to the choreographed order saga: one more subscriber, two new events.

A fraud service hears ``OrderCreated`` and emits ``FraudCleared`` or ``FraudSuspected``.
That is not all: payments must now charge on ``FraudCleared`` instead of ``OrderCreated``,
orders must cancel on ``FraudSuspected``, and the tracker's declaration gains a step.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from typing import Any

from sagakit import (
    Broker,
    Choreography,
    ChoreographyStep,
    Event,
    MemoryStore,
    SagaStatus,
    Service,
    Store,
    Transaction,
)

from side_by_side_choreographed import (
    ORDER_FLOW,
    ORDERS,
    STREAM,
    Ledger,
    inventory_service,
    ledger,
    order_service,
    payment_service,
    remove_databases,
    run,
    shipping_service,
)

FLAGGED_CARDS = {"tok_stolen"}
SUSPICIOUS: dict[str, Any] = {**ORDERS[0], "order_id": "order-3", "card": "tok_stolen"}


# --8<-- [start:subscriber]
def fraud_service(broker: Broker) -> Service:
    """The new subscriber: screens every order before it is charged."""
    fraud = Service(
        "fraud",
        "fraud.db",
        broker,
        stream=STREAM,
        schema="CREATE TABLE IF NOT EXISTS screenings (order_id TEXT, verdict TEXT);",
    )

    @fraud.on("OrderCreated")
    def screen(event: Event, tx: Transaction) -> None:
        order = event.data
        flagged = order["card"] in FLAGGED_CARDS
        verdict = "flagged" if flagged else "cleared"
        tx.db.execute("INSERT INTO screenings VALUES (?, ?)", (order["order_id"], verdict))
        if flagged:
            reason = f"card {order['card']} is flagged"
            tx.emit("FraudSuspected", {"order_id": order["order_id"], "reason": reason})
        else:
            tx.emit("FraudCleared", order)

    return fraud


def shop_with_fraud_check(broker: Broker) -> list[Service]:
    orders = order_service(broker)

    @orders.on("FraudSuspected")  # the order team learns a new way to be cancelled
    def reject(event: Event, tx: Transaction) -> None:
        order_id = event.data["order_id"]
        tx.db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (order_id,))
        tx.emit("OrderCancelled", {"order_id": order_id})

    return [
        orders,
        fraud_service(broker),
        payment_service(broker, charge_on="FraudCleared"),  # was "OrderCreated"
        inventory_service(broker),
        shipping_service(broker),
    ]


FRAUD_CHECKED_FLOW = Choreography(  # the one place that knows the whole flow, rewritten
    "place_order",
    version=2,
    steps=[
        ORDER_FLOW.steps[0],  # create_order
        ChoreographyStep("screen_for_fraud", succeeded="FraudCleared", failed="FraudSuspected"),
        *ORDER_FLOW.steps[1:],  # charge_payment, reserve_stock, create_shipment, complete_order
    ],
    starts=ORDER_FLOW.starts,
    completes=ORDER_FLOW.completes,
    fails=ORDER_FLOW.fails | {"FraudSuspected"},
    compensated=ORDER_FLOW.compensated,
    max_gap=ORDER_FLOW.max_gap,
)
# --8<-- [end:subscriber]


async def place_orders_v2(store: Store) -> tuple[Ledger, dict[str, str]]:
    """A good order and a flagged one; the ledger and the fraud service's screenings."""
    await run(store, shop_with_fraud_check, FRAUD_CHECKED_FLOW, [ORDERS[0], SUSPICIOUS])
    with closing(sqlite3.connect("fraud.db")) as db:
        screenings = dict(db.execute("SELECT order_id, verdict FROM screenings").fetchall())
    return ledger(), screenings


async def main() -> None:
    remove_databases("orders", "fraud", "payments", "inventory", "shipping")
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
