"""The source document's order saga, choreographed: four services that talk only in events.

=================  ===============================  =========================================
service            hears                            does, and publishes
=================  ===============================  =========================================
orders             (an order is placed)             records it: ``OrderCreated``
payments           ``OrderCreated``                 charges the card: ``PaymentCompleted``
                                                    (a declined card: ``PaymentDeclined``)
inventory          ``PaymentCompleted``             reserves every line or none:
                                                    ``StockReserved`` / ``StockReservationFailed``
shipping           ``StockReserved``                books the parcel: ``ShipmentCreated``
payments           ``StockReservationFailed``       refunds the card: ``PaymentRefunded``
orders             ``PaymentRefunded``,             cancels the order: ``OrderCancelled``
                   ``PaymentDeclined``
orders             ``ShipmentCreated``              marks the order completed
payments,          ``OrderCancelled``               remember the order is cancelled
inventory,
shipping
=================  ===============================  =========================================

Every service owns a SQLite file (``<name>.db`` in one directory) with its tables, its
inbox and its outbox, so each can run as its own process. Events carry what the next
service needs (the items, the address): no service reads another's database. No table has a
UNIQUE constraint on ``order_id``, on purpose: an effect applied twice would show up as a
second row, which :func:`audit` counts.

Each service also keeps the orders it knows are cancelled (the orders service in its
``orders`` table, the others in ``cancelled_orders``, written when they hear
``OrderCancelled``, and by inventory and payments as soon as they fail or refund one): a
semantic lock, in Richardson's terms. A forward event for such an order, as a producer that
re-publishes an event outside its outbox sends (a new id, so the inbox cannot tell), is
refused: acknowledged with a log line and nothing else, no effect and no event. Raising
instead would only have it redelivered and dead-lettered.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagakit.bus import Broker, Event
from sagakit.choreography import Choreography, ChoreographyStep, LocalDatabase, Service, Transaction
from sagakit.choreography.sqlite import SCHEMA as OUTBOX_SCHEMA

STREAM = "orders"
"""The stream all of the order saga's events travel on."""
SERVICES = ("orders", "payments", "inventory", "shipping")
"""The services, by name: each is a consumer group and a database file ``<name>.db``."""
logger = logging.getLogger("sagakit.demo")

ORDER_CHOREOGRAPHY = Choreography(
    "order_choreography",
    version=1,
    steps=[
        ChoreographyStep("create_order", succeeded="OrderCreated", compensated="OrderCancelled"),
        ChoreographyStep(
            "charge_payment",
            succeeded="PaymentCompleted",
            failed="PaymentDeclined",
            compensated="PaymentRefunded",
        ),
        ChoreographyStep(
            "reserve_stock", succeeded="StockReserved", failed="StockReservationFailed"
        ),
        ChoreographyStep("create_shipment", succeeded="ShipmentCreated", kind="pivot"),
    ],
    starts="OrderCreated",
    completes="ShipmentCreated",
    fails=("PaymentDeclined", "StockReservationFailed"),
    compensated="OrderCancelled",
    max_gap=60.0,
)
"""What the tracker needs to follow an order through the four services."""

ORDERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, total_cents INTEGER NOT NULL,
    status TEXT NOT NULL, reason TEXT
);
CREATE TABLE IF NOT EXISTS order_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, status TEXT NOT NULL
);
"""
PAYMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS cancelled_orders (order_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payments (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,
    refunded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY, payment_id TEXT, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS declined_cards (card TEXT PRIMARY KEY);
"""
INVENTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS cancelled_orders (order_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL, reserved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL, lines TEXT NOT NULL
);
"""
SHIPPING_SCHEMA = """
CREATE TABLE IF NOT EXISTS cancelled_orders (order_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shipments (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL, address TEXT NOT NULL
);
"""
SCHEMAS = {
    "orders": ORDERS_SCHEMA,
    "payments": PAYMENTS_SCHEMA,
    "inventory": INVENTORY_SCHEMA,
    "shipping": SHIPPING_SCHEMA,
}


def database_path(directory: str | os.PathLike[str], service: str) -> Path:
    """Where ``service`` keeps its database in ``directory``."""
    return Path(directory) / f"{service}.db"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- the lock


def _lock(tx: Transaction, order_id: str, reason: str) -> None:
    """Remember that ``order_id`` is cancelled, so no later forward event acts on it."""
    tx.db.execute(
        "INSERT OR IGNORE INTO cancelled_orders (order_id, reason) VALUES (?, ?)",
        (order_id, reason),
    )


def _remember_cancelled(event: Event, tx: Transaction) -> None:
    """The ``OrderCancelled`` handler of every service but orders: take the lock."""
    _lock(tx, str(event.data["order_id"]), str(event.data.get("reason") or "cancelled"))


def _refused(service: str, event: Event, cancelled: bool) -> bool:
    """Whether ``service`` refuses ``event``, a forward event for an order it knows is
    cancelled (``cancelled``): it is logged, and the handler must record nothing else."""
    if cancelled:
        logger.warning(
            "%s: refused %s %s from %s: order %s is cancelled",
            *(service, event.type, event.id, event.source, event.data["order_id"]),
        )
    return cancelled


def _locked(service: str, tx: Transaction, event: Event) -> bool:
    """Whether ``service`` refuses ``event``: its order is in ``cancelled_orders``."""
    order_id = str(event.data["order_id"])
    row = tx.db.execute("SELECT 1 FROM cancelled_orders WHERE order_id = ?", (order_id,))
    return _refused(service, event, row.fetchone() is not None)


# --------------------------------------------------------------------------- orders


def order_service(
    db: LocalDatabase | str | os.PathLike[str], broker: Broker, **options: Any
) -> Service:
    """Records orders; cancels them when the payment is declined or refunded."""
    service = Service("orders", db, broker, schema=ORDERS_SCHEMA, **_defaults(options))

    def cancel(event: Event, tx: Transaction) -> None:
        order_id = str(event.data["order_id"])
        reason = f"{event.type}: {event.data.get('reason') or 'payment refunded'}"
        _set_status(tx, order_id, "cancelled", reason)
        tx.emit("OrderCancelled", {"order_id": order_id, "reason": reason})

    @service.on("ShipmentCreated")
    def complete(event: Event, tx: Transaction) -> None:
        order_id = str(event.data["order_id"])
        if _refused(service.name, event, _status(tx, order_id) == "cancelled"):
            return
        _set_status(tx, order_id, "completed", None)

    service.on("PaymentRefunded")(cancel)
    service.on("PaymentDeclined")(cancel)
    return service


def _status(tx: Transaction, order_id: str) -> str | None:
    row = tx.db.execute("SELECT status FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    return None if row is None else str(row[0])


def _set_status(tx: Transaction, order_id: str, status: str, reason: str | None) -> None:
    tx.db.execute(
        "UPDATE orders SET status = ?, reason = ? WHERE order_id = ?", (status, reason, order_id)
    )
    tx.db.execute("INSERT INTO order_changes (order_id, status) VALUES (?, ?)", (order_id, status))


async def place_orders(
    db: LocalDatabase, orders: Iterable[dict[str, Any]], *, stream: str = STREAM
) -> list[Event]:
    """Record orders and their ``OrderCreated`` events in one transaction of the order
    service's database: what its intake (an HTTP endpoint, say) does. Each order's id is its
    saga's correlation id. The service's relay publishes them."""
    async with db.transaction() as outbox:
        tx = Transaction("orders", stream, outbox, None)
        for order in orders:
            tx.db.execute(
                "INSERT INTO orders (order_id, customer_id, total_cents, status) "
                "VALUES (?, ?, ?, 'pending')",
                (order["order_id"], order["customer_id"], int(order["total_cents"])),
            )
            tx.emit("OrderCreated", order, correlation_id=order["order_id"])
        await tx.flush()
    return tx.emitted


# --------------------------------------------------------------------------- payments


def payment_service(
    db: LocalDatabase | str | os.PathLike[str], broker: Broker, **options: Any
) -> Service:
    """Charges cards when an order is created; refunds them when stock runs short."""
    service = Service("payments", db, broker, schema=PAYMENTS_SCHEMA, **_defaults(options))

    @service.on("OrderCreated")
    def charge(event: Event, tx: Transaction) -> None:
        if _locked(service.name, tx, event):
            return
        order = event.data
        order_id, card, amount = order["order_id"], order["card"], int(order["total_cents"])
        if tx.db.execute("SELECT 1 FROM declined_cards WHERE card = ?", (card,)).fetchone():
            tx.emit("PaymentDeclined", {"order_id": order_id, "reason": f"card {card} declined"})
            return
        payment_id = _new_id("pay")
        tx.db.execute(
            "INSERT INTO payments (id, order_id, amount_cents) VALUES (?, ?, ?)",
            (payment_id, order_id, amount),
        )
        forward = {k: order[k] for k in ("order_id", "items", "address")}
        tx.emit("PaymentCompleted", {**forward, "payment_id": payment_id, "amount_cents": amount})

    @service.on("StockReservationFailed")
    def refund(event: Event, tx: Transaction) -> None:
        order_id = str(event.data["order_id"])
        row = tx.db.execute(
            "SELECT id, amount_cents FROM payments WHERE order_id = ? AND refunded = 0",
            (order_id,),
        ).fetchone()
        payment_id, amount = (row[0], int(row[1])) if row else (None, 0)
        refund_id = _new_id("re")
        tx.db.execute("UPDATE payments SET refunded = 1 WHERE id = ?", (payment_id,))
        tx.db.execute(
            "INSERT INTO refunds (id, payment_id, order_id, amount_cents) VALUES (?, ?, ?, ?)",
            (refund_id, payment_id, order_id, amount),
        )
        refunded = {"payment_id": payment_id, "refund_id": refund_id, "amount_cents": amount}
        tx.emit("PaymentRefunded", {"order_id": order_id, **refunded})
        _lock(tx, order_id, f"refunded after {event.type}")

    service.on("OrderCancelled")(_remember_cancelled)
    return service


def decline_cards(directory: str | os.PathLike[str], *cards: str) -> None:
    """Make the payment service decline every charge on ``cards`` (stolen, say)."""
    with _opened(directory, "payments") as db:
        db.executemany("INSERT OR IGNORE INTO declined_cards VALUES (?)", [(c,) for c in cards])


# --------------------------------------------------------------------------- inventory


def inventory_service(
    db: LocalDatabase | str | os.PathLike[str], broker: Broker, **options: Any
) -> Service:
    """Reserves an order's stock once it is paid: every line, or none of them."""
    service = Service("inventory", db, broker, schema=INVENTORY_SCHEMA, **_defaults(options))

    @service.on("PaymentCompleted")
    def reserve(event: Event, tx: Transaction) -> None:
        if _locked(service.name, tx, event):
            return
        order = event.data
        wanted: Counter[str] = Counter()
        for item in order["items"]:
            wanted[str(item["sku"])] += int(item["qty"])
        short = {sku: qty - free for sku, qty in wanted.items() if (free := _free(tx, sku)) < qty}
        if short:
            missing = ", ".join(f"{qty} {sku}" for sku, qty in short.items())
            reason = f"short of {missing}"
            tx.emit("StockReservationFailed", {"order_id": order["order_id"], "reason": reason})
            _lock(tx, str(order["order_id"]), f"StockReservationFailed: {reason}")
            return
        for sku, qty in wanted.items():
            tx.db.execute("UPDATE stock SET reserved = reserved + ? WHERE sku = ?", (qty, sku))
        reservation_id = _new_id("res")
        tx.db.execute(
            "INSERT INTO reservations (id, order_id, lines) VALUES (?, ?, ?)",
            (reservation_id, order["order_id"], json.dumps(wanted)),
        )
        reserved = {"reservation_id": reservation_id, "address": order["address"]}
        tx.emit("StockReserved", {"order_id": order["order_id"], **reserved})

    service.on("OrderCancelled")(_remember_cancelled)
    return service


def _free(tx: Transaction, sku: str) -> int:
    row = tx.db.execute("SELECT on_hand - reserved FROM stock WHERE sku = ?", (sku,)).fetchone()
    return 0 if row is None else max(int(row[0]), 0)


def add_stock(directory: str | os.PathLike[str], stock: dict[str, int]) -> None:
    """Put units on the inventory service's shelves."""
    with _opened(directory, "inventory") as db:
        db.executemany(
            "INSERT INTO stock (sku, on_hand) VALUES (?, ?) "
            "ON CONFLICT (sku) DO UPDATE SET on_hand = on_hand + excluded.on_hand",
            list(stock.items()),
        )


# --------------------------------------------------------------------------- shipping


def shipping_service(
    db: LocalDatabase | str | os.PathLike[str], broker: Broker, **options: Any
) -> Service:
    """Books a parcel for every order whose stock is reserved."""
    service = Service("shipping", db, broker, schema=SHIPPING_SCHEMA, **_defaults(options))

    @service.on("StockReserved")
    def ship(event: Event, tx: Transaction) -> None:
        if _locked(service.name, tx, event):
            return
        order_id, address = str(event.data["order_id"]), str(event.data["address"])
        shipment_id = _new_id("shp")
        tx.db.execute(
            "INSERT INTO shipments (id, order_id, address) VALUES (?, ?, ?)",
            (shipment_id, order_id, address),
        )
        tx.emit("ShipmentCreated", {"order_id": order_id, "shipment_id": shipment_id})

    service.on("OrderCancelled")(_remember_cancelled)
    return service


# --------------------------------------------------------------------------- all four

Builder = Callable[..., Service]
BUILDERS: dict[str, Builder] = {
    "orders": order_service,
    "payments": payment_service,
    "inventory": inventory_service,
    "shipping": shipping_service,
}


def build_service(
    name: str, directory: str | os.PathLike[str], broker: Broker, **options: Any
) -> Service:
    """The service called ``name`` over its database in ``directory``."""
    return BUILDERS[name](database_path(directory, name), broker, **options)


def create_databases(directory: str | os.PathLike[str]) -> None:
    """Create every service's database (tables, inbox, outbox), so they can be seeded
    before the services start."""
    os.makedirs(directory, exist_ok=True)
    for name, schema in SCHEMAS.items():
        with _opened(directory, name) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(OUTBOX_SCHEMA + schema)


def _defaults(options: dict[str, Any]) -> dict[str, Any]:
    return {"stream": STREAM, **options}


class _opened:
    """A short-lived connection to a service's database, committing on success."""

    def __init__(self, directory: str | os.PathLike[str], service: str) -> None:
        self._connection = sqlite3.connect(database_path(directory, service), timeout=30.0)

    def __enter__(self) -> sqlite3.Connection:
        return self._connection

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        with closing(self._connection):
            if error is None:
                self._connection.commit()


# --------------------------------------------------------------------------- evidence


@dataclass(slots=True)
class Audit:
    """What the services' own databases say happened, per order: the evidence of effects.

    A count above one means an effect was applied twice.
    """

    orders: dict[str, str] = field(default_factory=dict)
    charges: Counter[str] = field(default_factory=Counter)
    refunds: Counter[str] = field(default_factory=Counter)
    reservations: Counter[str] = field(default_factory=Counter)
    shipments: Counter[str] = field(default_factory=Counter)
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    net_charged: Counter[str] = field(default_factory=Counter)

    def twice(self) -> list[str]:
        """Every effect applied more than once, described; empty when all is well."""
        counted = [
            ("charged", self.charges),
            ("refunded", self.refunds),
            ("reserved", self.reservations),
            ("shipped", self.shipments),
        ]
        found = [
            f"{order} {what} {n} times" for what, c in counted for order, n in c.items() if n > 1
        ]
        found += [f"{o} {s} {n} times" for (o, s), n in self.changes.items() if n > 1]
        return found


def audit(directory: str | os.PathLike[str]) -> Audit:
    """Read every service's database in ``directory`` (the services may still be running)."""
    found = Audit()
    with _opened(directory, "orders") as db:
        found.orders = dict(db.execute("SELECT order_id, status FROM orders"))
        found.changes = Counter(db.execute("SELECT order_id, status FROM order_changes"))
    with _opened(directory, "payments") as db:
        found.charges = Counter(r[0] for r in db.execute("SELECT order_id FROM payments"))
        found.refunds = Counter(r[0] for r in db.execute("SELECT order_id FROM refunds"))
        for order_id, cents in db.execute(
            "SELECT order_id, amount_cents FROM payments WHERE refunded = 0"
        ):
            found.net_charged[order_id] += cents
    with _opened(directory, "inventory") as db:
        found.reservations = Counter(r[0] for r in db.execute("SELECT order_id FROM reservations"))
    with _opened(directory, "shipping") as db:
        found.shipments = Counter(r[0] for r in db.execute("SELECT order_id FROM shipments"))
    return found


def free_stock(directory: str | os.PathLike[str], sku: str) -> int:
    """Units of ``sku`` on the shelf and not reserved."""
    with _opened(directory, "inventory") as db:
        row = db.execute("SELECT on_hand - reserved FROM stock WHERE sku = ?", (sku,)).fetchone()
    return 0 if row is None else int(row[0])
