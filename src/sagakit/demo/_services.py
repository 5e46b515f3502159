"""In-process fakes of the order saga's six services, each owning its own database.

They behave like the services in the source document, awkward cases included: a card can be
declined, points expire, stock can run short part-way through an order, a parcel cannot be
recalled once the courier has it, an order can be held for fraud, and the mail server is
sometimes down. Every effectful call takes the idempotency key sagakit hands the step and
de-duplicates by it (see :mod:`._ledger`), so the saga's at-least-once calls have
exactly-once effects, even across a crash, when the services are given SQLite files.

Each service also answers the questions a test asks after the fact: how often a key was
called, how many effects it applied, and whether everything it did for an order is undone.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sagakit.demo._ledger import Call, Ledger, RecordedError
from sagakit.errors import CompensationImpossible

DbPath = str | os.PathLike[str]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class _Service:
    """What every fake shares: a ledger (its database) and the per-key counters."""

    schema = ""

    def __init__(self, path: DbPath = ":memory:") -> None:
        self.ledger = Ledger(path, self.schema)

    def close(self) -> None:
        self.ledger.close()

    def calls(self, key: str) -> int:
        """How many times ``key`` reached this service (retries and replays included)."""
        return self.ledger.calls(key)

    def effects_applied(self, key: str) -> int:
        """How many times an effect was applied under ``key``: at most 1, or we have a bug."""
        return self.ledger.effects_applied(key)

    def outstanding(self, order_id: str) -> list[str]:
        """What this service did for the order and has not undone (empty: nothing)."""
        return []


# --------------------------------------------------------------------------- payments


class CardDeclined(RecordedError):
    """The card was declined; nothing was charged, and retrying the same request won't help."""

    def __init__(self, card: str) -> None:
        super().__init__(f"card {card} was declined")
        self.card = card

    def details(self) -> dict[str, Any]:
        return {"card": self.card}


class UnknownPayment(Exception):
    """A refund named a payment this service never made."""


class PaymentService(_Service):
    """Charges and refunds cards. Refunds are accepted at once but settle in days."""

    SETTLES_IN_DAYS = 3
    # No UNIQUE on charge_key: a de-duplication bug must show up as a second row.
    schema = """
    CREATE TABLE IF NOT EXISTS payments (
        id TEXT PRIMARY KEY, order_id TEXT NOT NULL, customer_id TEXT NOT NULL,
        amount_cents INTEGER NOT NULL, charge_key TEXT NOT NULL,
        refund_id TEXT, refund_key TEXT
    );
    CREATE TABLE IF NOT EXISTS declined_cards (card TEXT PRIMARY KEY);
    """

    def decline(self, card: str) -> None:
        """Make every charge on ``card`` fail (a stolen card, say)."""
        with self.ledger.transaction() as db:
            db.execute("INSERT OR IGNORE INTO declined_cards (card) VALUES (?)", (card,))

    def charge(
        self, order_id: str, customer_id: str, card: str, amount_cents: int, *, key: str
    ) -> dict[str, Any]:
        """Charge ``amount_cents``; returns ``{"payment_id", "amount_cents"}``."""

        def apply(call: Call) -> dict[str, Any]:
            declined = call.db.execute(
                "SELECT 1 FROM declined_cards WHERE card = ?", (card,)
            ).fetchone()
            if declined:
                raise CardDeclined(card)
            payment_id = _new_id("pay")
            call.db.execute(
                "INSERT INTO payments (id, order_id, customer_id, amount_cents, charge_key) "
                "VALUES (?, ?, ?, ?, ?)",
                (payment_id, order_id, customer_id, amount_cents, key),
            )
            return {"payment_id": payment_id, "amount_cents": amount_cents}

        result: dict[str, Any] = self.ledger.once(key, "charge", apply)
        return result

    def refund(self, payment_id: str, *, key: str) -> dict[str, Any]:
        """Refund a payment in full; a payment is refunded once whatever the key."""

        def apply(call: Call) -> dict[str, Any]:
            row = call.db.execute(
                "SELECT amount_cents, refund_id FROM payments WHERE id = ?", (payment_id,)
            ).fetchone()
            if row is None:
                raise UnknownPayment(f"no payment {payment_id!r}")
            amount, refund_id = row
            if refund_id is None:
                refund_id = _new_id("re")
                call.db.execute(
                    "UPDATE payments SET refund_id = ?, refund_key = ? WHERE id = ?",
                    (refund_id, key, payment_id),
                )
            return {
                "refund_id": refund_id,
                "payment_id": payment_id,
                "amount_cents": amount,
                "settles_in_days": self.SETTLES_IN_DAYS,
            }

        result: dict[str, Any] = self.ledger.once(key, "refund", apply)
        return result

    def net_charged(self, order_id: str) -> int:
        """Cents charged for the order and not refunded."""
        rows = self.ledger.query(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM payments "
            "WHERE order_id = ? AND refund_id IS NULL",
            (order_id,),
        )
        return int(rows[0][0])

    def payments(self, order_id: str) -> list[dict[str, Any]]:
        """Every payment made for the order, refunded or not."""
        rows = self.ledger.query(
            "SELECT id, amount_cents, refund_id FROM payments WHERE order_id = ? ORDER BY rowid",
            (order_id,),
        )
        return [{"payment_id": r[0], "amount_cents": r[1], "refund_id": r[2]} for r in rows]

    def outstanding(self, order_id: str) -> list[str]:
        cents = self.net_charged(order_id)
        return [f"payment: {cents} cents charged and not refunded"] if cents else []


# --------------------------------------------------------------------------- loyalty


class InsufficientPoints(RecordedError):
    """The customer has fewer unexpired points than the order wants to use."""

    def __init__(self, customer_id: str, wanted: int, available: int) -> None:
        super().__init__(f"customer {customer_id} has {available} points, not {wanted}")
        self.customer_id = customer_id
        self.wanted = wanted
        self.available = available

    def details(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "wanted": self.wanted, "available": self.available}


class LoyaltyService(_Service):
    """Loyalty points, held in lots that each expire on a date.

    A debit spends the soonest-expiring points first and remembers which expiry dates it
    took. Crediting it back restores those points with their original expiry dates; points
    whose date has passed in the meantime are recorded as expired, not brought back to life.
    """

    schema = """
    CREATE TABLE IF NOT EXISTS lots (
        id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL,
        points INTEGER NOT NULL, expires_on TEXT NOT NULL, source TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS debits (
        id TEXT PRIMARY KEY, order_id TEXT NOT NULL, customer_id TEXT NOT NULL,
        points INTEGER NOT NULL, parts TEXT NOT NULL, debit_key TEXT NOT NULL,
        credit_key TEXT, restored INTEGER, expired INTEGER
    );
    """

    def __init__(self, path: DbPath = ":memory:", today: Callable[[], date] = date.today) -> None:
        super().__init__(path)
        self.today = today

    def grant(self, customer_id: str, points: int, expires_on: date) -> None:
        """Give a customer points that expire at the end of ``expires_on``."""
        with self.ledger.transaction() as db:
            db.execute(
                "INSERT INTO lots (customer_id, points, expires_on, source) "
                "VALUES (?, ?, ?, 'grant')",
                (customer_id, points, expires_on.isoformat()),
            )

    def debit(self, order_id: str, customer_id: str, points: int, *, key: str) -> dict[str, Any]:
        """Spend points; returns ``{"debit_id", "points", "parts": [{"points", "expires_on"}]}``."""

        def apply(call: Call) -> dict[str, Any]:
            parts = self._spend(call, customer_id, points)
            debit_id = _new_id("deb")
            call.db.execute(
                "INSERT INTO debits (id, order_id, customer_id, points, parts, debit_key) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (debit_id, order_id, customer_id, points, json.dumps(parts), key),
            )
            return {"debit_id": debit_id, "points": points, "parts": parts}

        result: dict[str, Any] = self.ledger.once(key, "debit", apply)
        return result

    def _spend(self, call: Call, customer_id: str, points: int) -> list[dict[str, Any]]:
        lots = call.db.execute(
            "SELECT id, points, expires_on FROM lots WHERE customer_id = ? AND points > 0 "
            "AND expires_on >= ? ORDER BY expires_on, id",
            (customer_id, self.today().isoformat()),
        ).fetchall()
        available = sum(lot[1] for lot in lots)
        if available < points:
            raise InsufficientPoints(customer_id, points, available)
        parts: list[dict[str, Any]] = []
        left = points
        for lot_id, lot_points, expires_on in lots:
            if left == 0:
                break
            take = min(left, lot_points)
            call.db.execute("UPDATE lots SET points = points - ? WHERE id = ?", (take, lot_id))
            parts.append({"points": take, "expires_on": expires_on})
            left -= take
        return parts

    def credit_back(self, debit_id: str, *, key: str) -> dict[str, Any]:
        """Undo a debit: restore unexpired points with their original expiry, record the rest.

        Returns ``{"debit_id", "restored", "expired"}``; crediting a debit twice (under any
        key) restores nothing the second time.
        """

        def apply(call: Call) -> dict[str, Any]:
            row = call.db.execute(
                "SELECT customer_id, parts, credit_key, restored, expired FROM debits WHERE id = ?",
                (debit_id,),
            ).fetchone()
            if row is None:
                raise LookupError(f"no debit {debit_id!r}")
            customer_id, parts, credit_key, restored, expired = row
            if credit_key is None:
                restored, expired = self._restore(call, customer_id, debit_id, json.loads(parts))
            return {"debit_id": debit_id, "restored": restored, "expired": expired}

        result: dict[str, Any] = self.ledger.once(key, "credit_back", apply)
        return result

    def _restore(
        self, call: Call, customer_id: str, debit_id: str, parts: list[dict[str, Any]]
    ) -> tuple[int, int]:
        today = self.today().isoformat()
        restored = expired = 0
        for part in parts:
            if part["expires_on"] < today:
                expired += part["points"]
                continue
            call.db.execute(
                "INSERT INTO lots (customer_id, points, expires_on, source) VALUES (?, ?, ?, ?)",
                (customer_id, part["points"], part["expires_on"], f"credit:{debit_id}"),
            )
            restored += part["points"]
        call.db.execute(
            "UPDATE debits SET credit_key = ?, restored = ?, expired = ? WHERE id = ?",
            (call.key, restored, expired, debit_id),
        )
        return restored, expired

    def points(self, customer_id: str) -> int:
        """The customer's points that have not expired today."""
        rows = self.ledger.query(
            "SELECT COALESCE(SUM(points), 0) FROM lots WHERE customer_id = ? AND expires_on >= ?",
            (customer_id, self.today().isoformat()),
        )
        return int(rows[0][0])

    def lots(self, customer_id: str) -> list[tuple[int, str]]:
        """``(points, expires_on)`` of every non-empty lot, expired ones included."""
        rows = self.ledger.query(
            "SELECT points, expires_on FROM lots WHERE customer_id = ? AND points > 0 "
            "ORDER BY expires_on, id",
            (customer_id,),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def debits(self, order_id: str) -> list[dict[str, Any]]:
        """Every debit for the order, with what crediting it back restored and expired."""
        rows = self.ledger.query(
            "SELECT id, points, credit_key IS NOT NULL, restored, expired FROM debits "
            "WHERE order_id = ? ORDER BY rowid",
            (order_id,),
        )
        return [
            {
                "debit_id": r[0],
                "points": r[1],
                "credited": bool(r[2]),
                "restored": r[3],
                "expired": r[4],
            }
            for r in rows
        ]

    def outstanding(self, order_id: str) -> list[str]:
        return [
            f"loyalty: debit {d['debit_id']} of {d['points']} points not credited back"
            for d in self.debits(order_id)
            if not d["credited"] and d["points"]
        ]


# --------------------------------------------------------------------------- inventory


class PartialReservation(RecordedError):
    """Not everything was in stock. What *was* reserved stays held until it is released."""

    def __init__(
        self, reservation_id: str | None, reserved: dict[str, int], missing: dict[str, int]
    ) -> None:
        got = ", ".join(f"{q} {sku}" for sku, q in reserved.items()) or "nothing"
        short = ", ".join(f"{q} {sku}" for sku, q in missing.items())
        super().__init__(f"partial stock: reserved {got}; short of {short}")
        self.reservation_id = reservation_id
        self.reserved = reserved
        self.missing = missing
        self.effect = bool(reserved)

    def details(self) -> dict[str, Any]:
        return {
            "reservation_id": self.reservation_id,
            "reserved": self.reserved,
            "missing": self.missing,
        }


class InventoryService(_Service):
    """Stock per SKU; a reservation holds units until it is released."""

    schema = """
    CREATE TABLE IF NOT EXISTS stock (
        sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL, reserved INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS reservations (
        id TEXT PRIMARY KEY, order_id TEXT NOT NULL, reserve_key TEXT NOT NULL,
        lines TEXT NOT NULL, released_key TEXT
    );
    """

    def add_stock(self, sku: str, quantity: int) -> None:
        with self.ledger.transaction() as db:
            db.execute(
                "INSERT INTO stock (sku, on_hand) VALUES (?, ?) "
                "ON CONFLICT (sku) DO UPDATE SET on_hand = on_hand + excluded.on_hand",
                (sku, quantity),
            )

    def reserve(self, order_id: str, items: list[dict[str, Any]], *, key: str) -> dict[str, Any]:
        """Reserve ``[{"sku", "qty"}]``; returns ``{"reservation_id", "lines": {sku: qty}}``.

        If some units are missing it still reserves what it can and raises
        :class:`PartialReservation`; ``release`` with this call's key undoes that too.
        """

        def apply(call: Call) -> dict[str, Any]:
            reserved: dict[str, int] = {}
            missing: dict[str, int] = {}
            for item in items:
                sku, wanted = str(item["sku"]), int(item["qty"])
                take = min(wanted, self._available(call, sku))
                if take:
                    call.db.execute(
                        "UPDATE stock SET reserved = reserved + ? WHERE sku = ?", (take, sku)
                    )
                    reserved[sku] = reserved.get(sku, 0) + take
                if take < wanted:
                    missing[sku] = missing.get(sku, 0) + wanted - take
            reservation_id = _new_id("res") if reserved else None
            if reserved:
                call.db.execute(
                    "INSERT INTO reservations (id, order_id, reserve_key, lines) "
                    "VALUES (?, ?, ?, ?)",
                    (reservation_id, order_id, key, json.dumps(reserved)),
                )
            if missing:
                raise PartialReservation(reservation_id, reserved, missing)
            return {"reservation_id": reservation_id, "lines": reserved}

        result: dict[str, Any] = self.ledger.once(key, "reserve", apply)
        return result

    @staticmethod
    def _available(call: Call, sku: str) -> int:
        row = call.db.execute("SELECT on_hand - reserved FROM stock WHERE sku = ?", (sku,))
        found = row.fetchone()
        return 0 if found is None else max(int(found[0]), 0)

    def release(self, reserve_key: str, *, key: str) -> dict[str, Any]:
        """Release whatever the reserve call with ``reserve_key`` holds, partial or full.

        Returns ``{"released": {sku: qty}}``, empty if that call reserved nothing (or never
        reached this service).
        """

        def apply(call: Call) -> dict[str, Any]:
            row = call.db.execute(
                "SELECT id, lines FROM reservations WHERE reserve_key = ? AND released_key IS NULL",
                (reserve_key,),
            ).fetchone()
            if row is None:
                return {"released": {}}
            lines: dict[str, int] = json.loads(row[1])
            for sku, quantity in lines.items():
                call.db.execute(
                    "UPDATE stock SET reserved = reserved - ? WHERE sku = ?", (quantity, sku)
                )
            call.db.execute("UPDATE reservations SET released_key = ? WHERE id = ?", (key, row[0]))
            return {"released": lines}

        result: dict[str, Any] = self.ledger.once(key, "release", apply)
        return result

    def reserved(self, sku: str) -> int:
        rows = self.ledger.query("SELECT reserved FROM stock WHERE sku = ?", (sku,))
        return int(rows[0][0]) if rows else 0

    def available(self, sku: str) -> int:
        rows = self.ledger.query("SELECT on_hand - reserved FROM stock WHERE sku = ?", (sku,))
        return int(rows[0][0]) if rows else 0

    def held(self, order_id: str) -> dict[str, int]:
        """Units still reserved for the order, by SKU."""
        held: dict[str, int] = {}
        rows = self.ledger.query(
            "SELECT lines FROM reservations WHERE order_id = ? AND released_key IS NULL",
            (order_id,),
        )
        for (lines,) in rows:
            for sku, quantity in json.loads(lines).items():
                held[sku] = held.get(sku, 0) + quantity
        return held

    def outstanding(self, order_id: str) -> list[str]:
        held = self.held(order_id)
        if not held:
            return []
        return ["inventory: still reserved " + ", ".join(f"{q} {s}" for s, q in held.items())]


# --------------------------------------------------------------------------- shipping


class ShippingService(_Service):
    """Shipments: cancellable until the courier picks the parcel up, never after."""

    schema = """
    CREATE TABLE IF NOT EXISTS shipments (
        id TEXT PRIMARY KEY, order_id TEXT NOT NULL, address TEXT NOT NULL,
        status TEXT NOT NULL, create_key TEXT NOT NULL
    );
    """

    def create(
        self, order_id: str, address: str, *, same_day: bool = False, key: str
    ) -> dict[str, Any]:
        """Book a shipment; a same-day courier collects the parcel at once.

        Returns ``{"shipment_id", "status"}``.
        """

        def apply(call: Call) -> dict[str, Any]:
            shipment_id = _new_id("shp")
            status = "picked_up" if same_day else "created"
            call.db.execute(
                "INSERT INTO shipments (id, order_id, address, status, create_key) "
                "VALUES (?, ?, ?, ?, ?)",
                (shipment_id, order_id, address, status, key),
            )
            return {"shipment_id": shipment_id, "status": status}

        result: dict[str, Any] = self.ledger.once(key, "create_shipment", apply)
        return result

    def pick_up(self, shipment_id: str) -> None:
        """The courier collects the parcel: from now on it cannot be cancelled."""
        with self.ledger.transaction() as db:
            db.execute(
                "UPDATE shipments SET status = 'picked_up' WHERE id = ? AND status = 'created'",
                (shipment_id,),
            )

    def cancel(self, shipment_id: str, *, key: str) -> dict[str, Any]:
        """Cancel before pickup; after it raise :class:`sagakit.CompensationImpossible`.

        That error is not recorded against the key: should the parcel come back, an operator
        can retry the compensation and it will succeed.
        """

        def apply(call: Call) -> dict[str, Any]:
            row = call.db.execute(
                "SELECT status FROM shipments WHERE id = ?", (shipment_id,)
            ).fetchone()
            if row is None:
                raise LookupError(f"no shipment {shipment_id!r}")
            if row[0] == "picked_up":
                raise CompensationImpossible(
                    f"shipment {shipment_id} was already picked up by the courier"
                )
            call.db.execute(
                "UPDATE shipments SET status = 'cancelled' WHERE id = ?", (shipment_id,)
            )
            return {"shipment_id": shipment_id, "status": "cancelled"}

        result: dict[str, Any] = self.ledger.once(key, "cancel_shipment", apply)
        return result

    def status(self, shipment_id: str) -> str | None:
        rows = self.ledger.query("SELECT status FROM shipments WHERE id = ?", (shipment_id,))
        return str(rows[0][0]) if rows else None

    def shipments(self, order_id: str) -> list[dict[str, str]]:
        rows = self.ledger.query(
            "SELECT id, status FROM shipments WHERE order_id = ? ORDER BY rowid", (order_id,)
        )
        return [{"shipment_id": r[0], "status": r[1]} for r in rows]

    def outstanding(self, order_id: str) -> list[str]:
        return [
            f"shipping: shipment {s['shipment_id']} is {s['status'].replace('_', ' ')}"
            for s in self.shipments(order_id)
            if s["status"] != "cancelled"
        ]


# --------------------------------------------------------------------------- orders


class OrderRejected(RecordedError):
    """The order service refused to confirm the order (a fraud hold, say)."""

    def __init__(self, order_id: str, reason: str) -> None:
        super().__init__(f"order {order_id} rejected: {reason}")
        self.order_id = order_id
        self.reason = reason

    def details(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "reason": self.reason}


class OrderService(_Service):
    """Confirms orders: the saga's pivot, after which the order only goes forward."""

    schema = """
    CREATE TABLE IF NOT EXISTS orders (
        order_id TEXT PRIMARY KEY, status TEXT NOT NULL, confirm_key TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS holds (order_id TEXT PRIMARY KEY, reason TEXT NOT NULL);
    """

    def hold(self, order_id: str, reason: str) -> None:
        """Put an order on hold: confirming it will be rejected with ``reason``."""
        with self.ledger.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO holds (order_id, reason) VALUES (?, ?)", (order_id, reason)
            )

    def confirm(self, order_id: str, *, key: str) -> dict[str, Any]:
        """Confirm the order; returns ``{"order_id", "status"}`` or raises OrderRejected."""

        def apply(call: Call) -> dict[str, Any]:
            held = call.db.execute(
                "SELECT reason FROM holds WHERE order_id = ?", (order_id,)
            ).fetchone()
            if held is not None:
                raise OrderRejected(order_id, str(held[0]))
            call.db.execute(
                "INSERT INTO orders (order_id, status, confirm_key) VALUES (?, 'confirmed', ?)",
                (order_id, key),
            )
            return {"order_id": order_id, "status": "confirmed"}

        result: dict[str, Any] = self.ledger.once(key, "confirm", apply)
        return result

    def status(self, order_id: str) -> str | None:
        rows = self.ledger.query("SELECT status FROM orders WHERE order_id = ?", (order_id,))
        return str(rows[0][0]) if rows else None


# --------------------------------------------------------------------------- e-mail


class MailServerUnavailable(Exception):
    """The mail server did not answer; nothing was sent, try again later."""


class EmailService(_Service):
    """Sends e-mails, which cannot be unsent; the first ``fail_first`` tries of each fail."""

    schema = """
    CREATE TABLE IF NOT EXISTS outbox (
        id TEXT PRIMARY KEY, order_id TEXT NOT NULL, recipient TEXT NOT NULL,
        subject TEXT NOT NULL, send_key TEXT NOT NULL
    );
    """

    def __init__(self, path: DbPath = ":memory:", fail_first: int = 0) -> None:
        super().__init__(path)
        self.fail_first = fail_first

    def send(self, order_id: str, recipient: str, subject: str, *, key: str) -> dict[str, Any]:
        """Send one e-mail; returns ``{"message_id"}``."""

        def apply(call: Call) -> dict[str, Any]:
            if call.calls <= self.fail_first:
                raise MailServerUnavailable(f"mail server unavailable (call {call.calls})")
            message_id = _new_id("msg")
            call.db.execute(
                "INSERT INTO outbox (id, order_id, recipient, subject, send_key) "
                "VALUES (?, ?, ?, ?, ?)",
                (message_id, order_id, recipient, subject, key),
            )
            return {"message_id": message_id}

        result: dict[str, Any] = self.ledger.once(key, "send", apply)
        return result

    def sent(self, order_id: str) -> list[dict[str, str]]:
        rows = self.ledger.query(
            "SELECT id, recipient, subject FROM outbox WHERE order_id = ? ORDER BY rowid",
            (order_id,),
        )
        return [{"message_id": r[0], "recipient": r[1], "subject": r[2]} for r in rows]


# --------------------------------------------------------------------------- the bundle


@dataclass(frozen=True, slots=True)
class OrderServices:
    """The six services the order saga talks to; close them when done (or use ``with``)."""

    payments: PaymentService
    loyalty: LoyaltyService
    inventory: InventoryService
    shipping: ShippingService
    orders: OrderService
    email: EmailService

    def all(self) -> tuple[_Service, ...]:
        return (self.payments, self.loyalty, self.inventory, self.shipping, self.orders, self.email)

    def close(self) -> None:
        for service in self.all():
            service.close()

    def __enter__(self) -> OrderServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def outstanding(self, order_id: str) -> list[str]:
        """Every effect of the order not undone, across services; empty once compensated."""
        return [line for service in self.all() for line in service.outstanding(order_id)]

    def undone(self, order_id: str) -> bool:
        """Whether every service has undone (or never did) everything for this order."""
        return not self.outstanding(order_id)


DATABASES = ("payments", "loyalty", "inventory", "shipping", "orders", "email")
"""The file names (``<name>.db``) :func:`open_services` uses in a directory."""


def open_services(
    directory: DbPath | None = None,
    *,
    email_fail_first: int = 0,
    today: Callable[[], date] = date.today,
) -> OrderServices:
    """The six services, each with its own SQLite file in ``directory``, or in memory.

    Files make the services' state (and their idempotency ledgers) outlive the process, as a
    real service's would: what a crash test needs.
    """

    def where(name: str) -> DbPath:
        if directory is None:
            return ":memory:"
        os.makedirs(directory, exist_ok=True)
        return os.path.join(directory, f"{name}.db")

    return OrderServices(
        payments=PaymentService(where("payments")),
        loyalty=LoyaltyService(where("loyalty"), today=today),
        inventory=InventoryService(where("inventory")),
        shipping=ShippingService(where("shipping")),
        orders=OrderService(where("orders")),
        email=EmailService(where("email"), fail_first=email_fail_first),
    )
