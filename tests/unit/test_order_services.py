"""The order example's fake services: de-duplication by key, counters, and awkward cases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from sagakit import CompensationImpossible
from sagakit.demo import (
    CardDeclined,
    EmailService,
    InsufficientPoints,
    InventoryService,
    LoyaltyService,
    MailServerUnavailable,
    OrderRejected,
    OrderService,
    PartialReservation,
    PaymentService,
    ShippingService,
    open_services,
)
from sagakit.demo._ledger import Call, KeyReusedError, Ledger

TODAY = date(2025, 3, 1)


class Clock:
    """A settable today, so points can expire between a debit and its credit."""

    def __init__(self, today: date) -> None:
        self.today = today

    def __call__(self) -> date:
        return self.today


@pytest.fixture
def payments() -> Iterator[PaymentService]:
    service = PaymentService()
    yield service
    service.close()


@pytest.fixture
def inventory() -> Iterator[InventoryService]:
    service = InventoryService()
    service.add_stock("GLOBE", 2)
    service.add_stock("LAMP", 5)
    yield service
    service.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(TODAY)


@pytest.fixture
def loyalty(clock: Clock) -> Iterator[LoyaltyService]:
    service = LoyaltyService(today=clock)
    yield service
    service.close()


@pytest.fixture
def shipping() -> Iterator[ShippingService]:
    service = ShippingService()
    yield service
    service.close()


# --------------------------------------------------------------------------- payments


def test_a_repeated_charge_replays_the_first_result_and_charges_once(
    payments: PaymentService,
) -> None:
    first = payments.charge("A-1", "ada", "tok_visa", 4990, key="k1")
    again = payments.charge("A-1", "ada", "tok_visa", 4990, key="k1")

    assert again == first
    assert len(payments.payments("A-1")) == 1
    assert payments.net_charged("A-1") == 4990
    assert (payments.calls("k1"), payments.effects_applied("k1")) == (2, 1)


def test_different_keys_are_different_charges(payments: PaymentService) -> None:
    payments.charge("A-1", "ada", "tok_visa", 100, key="k1")
    payments.charge("A-1", "ada", "tok_visa", 100, key="k2")

    assert payments.net_charged("A-1") == 200


def test_a_declined_card_stays_declined_for_its_key_and_charges_nothing(
    payments: PaymentService,
) -> None:
    payments.decline("tok_stolen")

    for _ in range(2):
        with pytest.raises(CardDeclined, match="tok_stolen was declined"):
            payments.charge("A-1", "ada", "tok_stolen", 100, key="k1")

    assert payments.payments("A-1") == []
    assert (payments.calls("k1"), payments.effects_applied("k1")) == (2, 0)


def test_a_refund_happens_once_whatever_the_key(payments: PaymentService) -> None:
    payment = payments.charge("A-1", "ada", "tok_visa", 4990, key="charge")

    refund = payments.refund(payment["payment_id"], key="refund")
    assert payments.refund(payment["payment_id"], key="refund") == refund
    other = payments.refund(payment["payment_id"], key="another")

    assert other["refund_id"] == refund["refund_id"]
    assert refund["settles_in_days"] == PaymentService.SETTLES_IN_DAYS
    assert payments.net_charged("A-1") == 0
    assert payments.outstanding("A-1") == []


def test_one_key_cannot_be_reused_for_another_operation(payments: PaymentService) -> None:
    payment = payments.charge("A-1", "ada", "tok_visa", 1, key="k")

    with pytest.raises(KeyReusedError, match="'charge', not 'refund'"):
        payments.refund(payment["payment_id"], key="k")

    assert payments.net_charged("A-1") == 1


# --------------------------------------------------------------------------- inventory


def test_partial_stock_reserves_what_it_can_and_says_so(inventory: InventoryService) -> None:
    items = [{"sku": "LAMP", "qty": 1}, {"sku": "GLOBE", "qty": 3}]

    with pytest.raises(PartialReservation) as raised:
        inventory.reserve("A-1", items, key="r")

    assert raised.value.reserved == {"LAMP": 1, "GLOBE": 2}
    assert raised.value.missing == {"GLOBE": 1}
    assert inventory.held("A-1") == {"LAMP": 1, "GLOBE": 2}
    assert inventory.available("GLOBE") == 0


def test_a_retried_partial_reservation_replays_the_error_and_reserves_nothing_more(
    inventory: InventoryService,
) -> None:
    with pytest.raises(PartialReservation) as first:
        inventory.reserve("A-1", [{"sku": "GLOBE", "qty": 3}], key="r")
    inventory.add_stock("GLOBE", 10)  # more stock now: the same request still gets its answer

    with pytest.raises(PartialReservation) as again:
        inventory.reserve("A-1", [{"sku": "GLOBE", "qty": 3}], key="r")

    assert again.value.details() == first.value.details()
    assert inventory.reserved("GLOBE") == 2
    assert (inventory.calls("r"), inventory.effects_applied("r")) == (2, 1)


def test_release_by_the_reserve_key_undoes_a_partial_reservation_once(
    inventory: InventoryService,
) -> None:
    with pytest.raises(PartialReservation):
        inventory.reserve("A-1", [{"sku": "GLOBE", "qty": 3}], key="r")

    released = inventory.release("r", key="undo")
    assert inventory.release("r", key="undo") == released
    assert inventory.release("r", key="undo-again") == {"released": {}}

    assert released == {"released": {"GLOBE": 2}}
    assert inventory.reserved("GLOBE") == 0
    assert inventory.available("GLOBE") == 2
    assert inventory.outstanding("A-1") == []
    assert inventory.effects_applied("undo") == 1


def test_nothing_in_stock_reserves_nothing_and_has_no_effect(inventory: InventoryService) -> None:
    with pytest.raises(PartialReservation, match="reserved nothing"):
        inventory.reserve("A-1", [{"sku": "UNKNOWN", "qty": 1}], key="r")

    assert inventory.effects_applied("r") == 0
    assert inventory.release("r", key="undo") == {"released": {}}


def test_a_full_reservation_and_its_release(inventory: InventoryService) -> None:
    reservation = inventory.reserve("A-1", [{"sku": "LAMP", "qty": 5}], key="r")

    assert reservation["lines"] == {"LAMP": 5}
    assert inventory.outstanding("A-1") == ["inventory: still reserved 5 LAMP"]
    inventory.release("r", key="undo")
    assert inventory.available("LAMP") == 5


def test_releasing_a_reserve_that_never_arrived_releases_nothing(
    inventory: InventoryService,
) -> None:
    assert inventory.release("never-called", key="undo") == {"released": {}}


# --------------------------------------------------------------------------- shipping


def test_a_shipment_can_be_cancelled_before_pickup(shipping: ShippingService) -> None:
    shipment = shipping.create("A-1", "1 Loop Rd", key="s")

    shipping.cancel(shipment["shipment_id"], key="c")

    assert shipping.status(shipment["shipment_id"]) == "cancelled"
    assert shipping.outstanding("A-1") == []


def test_after_pickup_cancelling_is_impossible_and_not_recorded(shipping: ShippingService) -> None:
    shipment = shipping.create("A-1", "1 Loop Rd", key="s")
    shipping.pick_up(shipment["shipment_id"])

    for _ in range(2):
        with pytest.raises(CompensationImpossible, match="already picked up"):
            shipping.cancel(shipment["shipment_id"], key="c")

    assert (shipping.calls("c"), shipping.effects_applied("c")) == (2, 0)
    assert shipping.outstanding("A-1") == [
        f"shipping: shipment {shipment['shipment_id']} is picked up"
    ]


def test_a_same_day_courier_collects_at_once(shipping: ShippingService) -> None:
    shipment = shipping.create("A-1", "1 Loop Rd", same_day=True, key="s")

    assert shipment["status"] == "picked_up"
    with pytest.raises(CompensationImpossible):
        shipping.cancel(shipment["shipment_id"], key="c")


# --------------------------------------------------------------------------- loyalty


def test_a_debit_spends_the_soonest_expiring_points_first(loyalty: LoyaltyService) -> None:
    soon, later = TODAY + timedelta(days=10), TODAY + timedelta(days=300)
    loyalty.grant("ada", 100, later)
    loyalty.grant("ada", 100, soon)

    debit = loyalty.debit("A-1", "ada", 150, key="d")

    assert debit["parts"] == [
        {"points": 100, "expires_on": soon.isoformat()},
        {"points": 50, "expires_on": later.isoformat()},
    ]
    assert loyalty.points("ada") == 50


def test_credit_back_restores_points_with_their_original_expiry(loyalty: LoyaltyService) -> None:
    expires = TODAY + timedelta(days=10)
    loyalty.grant("ada", 100, expires)
    debit = loyalty.debit("A-1", "ada", 60, key="d")

    credit = loyalty.credit_back(debit["debit_id"], key="c")

    assert (credit["restored"], credit["expired"]) == (60, 0)
    assert loyalty.points("ada") == 100
    assert loyalty.lots("ada") == [(40, expires.isoformat()), (60, expires.isoformat())]
    assert loyalty.outstanding("A-1") == []


def test_points_that_expired_meanwhile_are_recorded_expired_not_restored(
    loyalty: LoyaltyService, clock: Clock
) -> None:
    soon, later = TODAY + timedelta(days=1), TODAY + timedelta(days=300)
    loyalty.grant("ada", 100, soon)
    loyalty.grant("ada", 100, later)
    debit = loyalty.debit("A-1", "ada", 150, key="d")
    clock.today = soon + timedelta(days=1)

    credit = loyalty.credit_back(debit["debit_id"], key="c")
    again = loyalty.credit_back(debit["debit_id"], key="c2")

    assert (credit["restored"], credit["expired"]) == (50, 100)
    assert again == credit  # credited once, whatever the key
    assert loyalty.points("ada") == 100
    assert loyalty.debits("A-1")[0]["credited"]
    assert loyalty.outstanding("A-1") == []


def test_expired_points_cannot_be_spent(loyalty: LoyaltyService) -> None:
    loyalty.grant("ada", 100, TODAY - timedelta(days=1))
    loyalty.grant("ada", 30, TODAY)

    with pytest.raises(InsufficientPoints, match="has 30 points, not 50"):
        loyalty.debit("A-1", "ada", 50, key="d")

    assert loyalty.effects_applied("d") == 0
    assert loyalty.points("ada") == 30


# --------------------------------------------------------------------------- orders, e-mail


def test_an_order_on_hold_is_rejected_and_stays_rejected() -> None:
    orders = OrderService()
    try:
        orders.hold("A-2", "fraud review")
        assert orders.confirm("A-1", key="c1") == {"order_id": "A-1", "status": "confirmed"}
        for _ in range(2):
            with pytest.raises(OrderRejected, match="fraud review"):
                orders.confirm("A-2", key="c2")
        assert (orders.status("A-1"), orders.status("A-2")) == ("confirmed", None)
    finally:
        orders.close()


def test_the_mail_server_fails_the_first_tries_then_sends_exactly_once() -> None:
    email = EmailService(fail_first=2)
    try:
        for _ in range(2):
            with pytest.raises(MailServerUnavailable):
                email.send("A-1", "ada@example.com", "hi", key="m")
        sent = email.send("A-1", "ada@example.com", "hi", key="m")
        assert email.send("A-1", "ada@example.com", "hi", key="m") == sent
        assert len(email.sent("A-1")) == 1
        assert (email.calls("m"), email.effects_applied("m")) == (4, 1)
    finally:
        email.close()


# --------------------------------------------------------------------------- durability


def test_the_ledger_survives_in_its_file_for_the_next_process(tmp_path: Path) -> None:
    db = tmp_path / "payments.db"
    first = PaymentService(db)
    payment = first.charge("A-1", "ada", "tok_visa", 4990, key="k")
    first.close()

    second = PaymentService(db)
    try:
        assert second.charge("A-1", "ada", "tok_visa", 4990, key="k") == payment
        assert (second.calls("k"), second.effects_applied("k")) == (2, 1)
        assert second.net_charged("A-1") == 4990
    finally:
        second.close()


def test_two_open_instances_on_one_file_share_one_ledger(tmp_path: Path) -> None:
    one, two = InventoryService(tmp_path / "i.db"), InventoryService(tmp_path / "i.db")
    try:
        one.add_stock("LAMP", 3)
        reservation = one.reserve("A-1", [{"sku": "LAMP", "qty": 2}], key="r")
        assert two.reserve("A-1", [{"sku": "LAMP", "qty": 2}], key="r") == reservation
        assert two.reserved("LAMP") == 2
        two.release("r", key="u")
        assert one.available("LAMP") == 3
    finally:
        one.close()
        two.close()


def test_a_transient_failure_rolls_its_changes_back_but_counts_the_call() -> None:
    ledger = Ledger(schema="CREATE TABLE t (x INTEGER);")

    def half_done(call: Call) -> None:
        call.db.execute("INSERT INTO t VALUES (1)")
        raise ConnectionError("lost the connection")

    try:
        with pytest.raises(ConnectionError):
            ledger.once("k", "op", half_done)
        assert ledger.query("SELECT COUNT(*) FROM t") == [(0,)]
        assert (ledger.calls("k"), ledger.effects_applied("k")) == (1, 0)
        assert ledger.once("k", "op", lambda call: call.calls) == 2
        assert ledger.keys() == ledger.keys("op") == ["k"]
    finally:
        ledger.close()


def test_open_services_keeps_one_database_per_service(tmp_path: Path) -> None:
    with open_services(tmp_path / "svc") as services:
        services.payments.charge("A-1", "ada", "tok_visa", 100, key="k")
        assert services.outstanding("A-1") == ["payment: 100 cents charged and not refunded"]
        assert not services.undone("A-1")
    names = sorted(p.name for p in (tmp_path / "svc").glob("*.db"))
    assert names == sorted(
        f"{n}.db" for n in ("payments", "loyalty", "inventory", "shipping", "orders", "email")
    )
    with open_services(tmp_path / "svc") as services:
        assert services.payments.net_charged("A-1") == 100
