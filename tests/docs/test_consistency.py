"""docs/consistency.md: the anomalies a saga allows, and each countermeasure the page shows.

Every example is loaded as a module and driven here with its own fake services and gates,
so each test checks what the page claims: which anomaly happens (a refusal over credit that
is given back, a lost update, a leaked booking), that the countermeasure prevents it, and
what the saga log says about it. Where the anomaly depends on the interleaving, the same
sagas are also run one after the other, to show that the interleaving is what causes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from doc_examples import EXAMPLES, load
from sagakit import (
    Engine,
    MemoryStore,
    RecordType,
    SagaState,
    SagaStatus,
    StepKind,
    StepStatus,
    Store,
)
from sagakit.operations import Query, find

gates = load("consistency/interleaving_gate.py")
dirty = load("consistency/dirty_read_two_sagas.py")
lock = load("consistency/semantic_lock_pending.py")
commuting = load("consistency/commutative_compensation.py")
reordering = load("consistency/pessimistic_reordering.py")
reread = load("consistency/reread_version_check.py")
version_file = load("consistency/version_file_ordering.py")
by_value = load("consistency/by_value_routing.py")
reader = load("consistency/read_mid_saga.py")


async def state_of(store: Store, saga_id: str) -> SagaState:
    stored = await store.load(saga_id)
    assert stored is not None, f"{saga_id} is not in the saga log"
    return SagaState.from_records(saga_id, stored.records)


def statuses(state: SagaState) -> dict[str, StepStatus]:
    return {step.name: step.status for step in state.steps}


def types_of(state: SagaState, step: str) -> list[RecordType]:
    return [record.type for record in state.records if record.step == step]


@pytest.mark.parametrize(
    "example",
    [
        dirty,
        lock,
        commuting,
        reordering,
        reread,
        version_file,
        by_value,
        reader,
    ],
)
async def test_each_example_tells_its_story(example: Any) -> None:
    await example.main()


# ------------------------------------------------------------------ the anomalies


def lamp_then_desk() -> tuple[dict[str, Any], dict[str, Any]]:
    lamp = {"order_id": "A-1", "customer": "c-ada", "amount": 70, "sku": "LAMP"}
    desk = {"order_id": "A-2", "customer": "c-ada", "amount": 50, "sku": "DESK"}
    return lamp, desk


async def test_a_dirty_read_refuses_an_order_over_credit_that_is_given_back() -> None:
    store, shop = MemoryStore(), dirty.FakeShop(gates={"A-1": gates.Gate()})
    order = dirty.build_saga(shop)
    engine = Engine(store, [order])
    lamp, desk = lamp_then_desk()

    first = asyncio.create_task(engine.run(order, lamp, saga_id="A-1"))
    await shop.gates["A-1"].reached.wait()
    # a reader of the order table sees A-1 charged but not reserved: an intermediate state
    assert shop.orders["A-1"] == {"charged": True, "reserved": False}
    assert shop.credit == {"c-ada": 30}
    mid = await state_of(store, "A-1")
    assert mid.status is SagaStatus.RUNNING
    assert statuses(mid) == {"charge": StepStatus.SUCCEEDED, "reserve": StepStatus.RUNNING}

    second = await engine.run(order, desk, saga_id="A-2")
    assert second.status is SagaStatus.COMPENSATED
    assert second.reason == "step 'charge' failed: c-ada has 30 left"
    refused = await state_of(store, "A-2")
    assert refused.by_name["charge"].status is StepStatus.FAILED
    assert refused.by_name["charge"].error is not None
    assert refused.by_name["charge"].error["type"].endswith("CreditLimitExceeded")
    assert "A-2" not in shop.orders  # nothing of A-2 was written

    shop.gates["A-1"].release.set()
    undone = await first
    assert undone.status is SagaStatus.COMPENSATED
    assert undone.reason == "step 'reserve' failed: LAMP"
    assert types_of(await state_of(store, "A-1"), "charge")[-2:] == [
        RecordType.COMPENSATION_STARTED,
        RecordType.COMPENSATION_SUCCEEDED,
    ]
    assert shop.credit == {"c-ada": 100}  # the 70 A-2 was refused over is back
    assert shop.orders == {"A-1": {"charged": False, "reserved": False}}
    assert shop.stock == {"LAMP": 0, "DESK": 5}


async def test_without_the_interleaving_the_second_order_goes_through() -> None:
    store, shop = MemoryStore(), dirty.FakeShop()
    order = dirty.build_saga(shop)
    engine = Engine(store, [order])
    lamp, desk = lamp_then_desk()

    assert (await engine.run(order, lamp, saga_id="A-1")).status is SagaStatus.COMPENSATED
    assert (await engine.run(order, desk, saga_id="A-2")).status is SagaStatus.COMPLETED
    assert shop.credit == {"c-ada": 50}
    assert shop.orders["A-2"] == {"charged": True, "reserved": True}


def test_the_dirty_read_example_prints_the_refusal() -> None:
    expected = (EXAMPLES / "consistency/dirty_read_two_sagas.out").read_text()
    assert expected == "step 'charge' failed: c-ada has 30 left\n"


# ------------------------------------------------------------------ semantic lock


async def test_a_pending_order_refuses_a_cancel_and_a_change_until_the_saga_settles_it() -> None:
    store, orders, gate = MemoryStore(), lock.FakeOrders(), gates.Gate()
    credit = {"c-ada": 100}
    order = lock.build_saga(orders, credit, gate)
    engine = Engine(store, [order])
    lamp = {"order_id": "o-1", "customer": "c-ada", "quantity": 1, "amount": 40}

    running = asyncio.create_task(engine.run(order, lamp, saga_id="o-1"))
    await gate.reached.wait()
    assert orders.orders["o-1"] == {"state": "APPROVAL_PENDING", "quantity": 1}
    assert orders.change("o-1", state="CANCELLED") is False
    assert orders.change("o-1", quantity=3) is False
    assert orders.orders["o-1"] == {"state": "APPROVAL_PENDING", "quantity": 1}
    assert (await state_of(store, "o-1")).status is SagaStatus.RUNNING

    gate.release.set()
    done = await running
    assert done.status is SagaStatus.COMPLETED
    assert credit == {"c-ada": 60}
    assert orders.orders["o-1"]["state"] == "APPROVED"  # cleared by approve_order
    assert orders.change("o-1", quantity=3) is True
    assert orders.orders["o-1"] == {"state": "APPROVED", "quantity": 3}


async def test_the_compensation_clears_the_lock() -> None:
    store, orders, gate = MemoryStore(), lock.FakeOrders(), gates.Gate()
    gate.release.set()
    credit = {"c-ada": 100}
    order = lock.build_saga(orders, credit, gate)
    desks = {"order_id": "o-2", "customer": "c-ada", "quantity": 9, "amount": 900}

    outcome = await Engine(store, [order]).run(order, desks, saga_id="o-2")

    assert outcome.status is SagaStatus.COMPENSATED
    state = await state_of(store, "o-2")
    assert statuses(state) == {
        "create_order": StepStatus.COMPENSATED,
        "reserve_credit": StepStatus.FAILED,
        "approve_order": StepStatus.SKIPPED,
    }
    assert orders.orders["o-2"]["state"] == "REJECTED"
    assert credit == {"c-ada": 100}
    assert orders.change("o-2", state="CANCELLED") is True  # no longer locked


def test_the_lock_is_taken_by_the_first_step_and_cleared_by_the_last() -> None:
    order = lock.build_saga(lock.FakeOrders(), {}, gates.Gate())
    assert [(step.name, step.kind) for step in order.steps] == [
        ("create_order", StepKind.COMPENSATABLE),
        ("reserve_credit", StepKind.PIVOT),
        ("approve_order", StepKind.RETRIABLE),
    ]


# ------------------------------------------------------------------ commutative updates


async def test_restoring_the_saved_balance_loses_the_other_sagas_update() -> None:
    assert await commuting.interleave(commutative=False) == 100  # 100 - 20 would be 80


async def test_crediting_the_amount_back_keeps_the_other_sagas_update() -> None:
    assert await commuting.interleave(commutative=True) == 80


@pytest.mark.parametrize("commutative", [False, True])
async def test_one_saga_at_a_time_both_compensations_agree(commutative: bool) -> None:
    store, accounts = MemoryStore(), commuting.FakeAccounts()
    order = commuting.build_saga(accounts, commutative=commutative)
    engine = Engine(store, [order])
    lamp = {"order_id": "A-1", "customer": "c-ada", "amount": 70, "in_stock": False}
    desk = {"order_id": "A-2", "customer": "c-ada", "amount": 20, "in_stock": True}

    assert (await engine.run(order, lamp, saga_id="A-1")).status is SagaStatus.COMPENSATED
    assert (await engine.run(order, desk, saga_id="A-2")).status is SagaStatus.COMPLETED
    assert accounts.balance == {"c-ada": 80}
    # what the compensation had to work with: the recorded result of the debit
    assert (await state_of(store, "A-1")).results["debit"] == {
        "amount": 70,
        "balance_before": 100,
    }


# ------------------------------------------------------------------ pessimistic view


def test_the_reordered_saga_credits_only_after_the_pivot() -> None:
    credit_first, credit_last = reordering.build_sagas(reordering.FakeServices())
    assert [(s.name, s.kind) for s in credit_first.steps] == [
        ("credit_back", StepKind.COMPENSATABLE),
        ("cancel_delivery", StepKind.PIVOT),
        ("mark_cancelled", StepKind.RETRIABLE),
    ]
    assert [(s.name, s.kind) for s in credit_last.steps] == [
        ("cancel_delivery", StepKind.PIVOT),
        ("credit_back", StepKind.RETRIABLE),
        ("mark_cancelled", StepKind.RETRIABLE),
    ]


async def test_credit_first_shows_readers_credit_that_is_taken_back() -> None:
    status, services = await reordering.cancel("cancel_order_credit_first", "o-late")
    assert status is SagaStatus.COMPENSATED
    assert services.seen == [100, 150, 100]
    assert services.credit == 100 and services.cancelled == set()


async def test_credit_last_never_shows_credit_that_is_not_for_good() -> None:
    status, services = await reordering.cancel("cancel_order_credit_last", "o-late")
    assert status is SagaStatus.COMPENSATED
    assert services.seen == [100]
    assert services.credit == 100 and services.cancelled == set()


@pytest.mark.parametrize("name", ["cancel_order_credit_first", "cancel_order_credit_last"])
async def test_both_orders_cancel_an_order_whose_van_has_not_left(name: str) -> None:
    status, services = await reordering.cancel(name, "o-early")
    assert status is SagaStatus.COMPLETED
    assert services.seen == [100, 150]
    assert services.cancelled == {"o-early"}


# ------------------------------------------------------------------ reread value


async def test_the_reread_detects_a_change_and_the_saga_compensates() -> None:
    store, gate = MemoryStore(), gates.Gate()
    shop = reread.FakeShop(orders={"o-1": {"quantity": 2, "version": 1}}, gate=gate)
    revise = reread.build_saga(shop)
    engine = Engine(store, [revise])

    running = asyncio.create_task(
        engine.run(revise, {"order_id": "o-1", "quantity": 3}, saga_id="r-1")
    )
    await gate.reached.wait()
    assert shop.held_credit == {"r-1:hold_credit:action": 10}  # priced on quantity 2
    shop.orders["o-1"] = {"quantity": 5, "version": 2}
    gate.release.set()
    outcome = await running

    assert outcome.status is SagaStatus.COMPENSATED
    assert outcome.reason == "step 'apply_revision' failed: o-1 is at version 2"
    state = await state_of(store, "r-1")
    assert statuses(state) == {
        "hold_credit": StepStatus.COMPENSATED,
        "apply_revision": StepStatus.FAILED,
    }
    assert state.by_name["apply_revision"].error is not None
    assert state.by_name["apply_revision"].error["type"].endswith("OrderChanged")
    assert shop.orders["o-1"] == {"quantity": 5, "version": 2}  # the other change is kept
    assert shop.held_credit == {}

    # starting is idempotent on the saga id: the same id hands back the same outcome, so a
    # restart is a new saga, with a new id, which reads the new version
    again = await engine.run(revise, {"order_id": "o-1", "quantity": 3}, saga_id="r-1")
    assert again.status is SagaStatus.COMPENSATED and shop.held_credit == {}
    restarted = await engine.run(revise, {"order_id": "o-1", "quantity": 3}, saga_id="r-2")
    assert restarted.status is SagaStatus.COMPLETED
    assert restarted.results["hold_credit"] == {"version": 2, "extra": -20}
    assert shop.orders["o-1"] == {"quantity": 3, "version": 3}


async def test_without_a_change_in_between_the_revision_is_written() -> None:
    store = MemoryStore()
    shop = reread.FakeShop(orders={"o-1": {"quantity": 2, "version": 1}})
    revise = reread.build_saga(shop)

    outcome = await Engine(store, [revise]).run(revise, {"order_id": "o-1", "quantity": 3})

    assert outcome.status is SagaStatus.COMPLETED
    assert outcome.results["hold_credit"] == {"version": 1, "extra": 10}
    assert shop.orders["o-1"] == {"quantity": 3, "version": 2}


def test_the_version_check_refuses_a_stale_write() -> None:
    shop = reread.FakeShop(orders={"o-1": {"quantity": 2, "version": 4}})
    with pytest.raises(reread.OrderChanged, match="o-1 is at version 4"):
        shop.update("o-1", 3, quantity=9)
    shop.update("o-1", 4, quantity=9)
    assert shop.orders["o-1"] == {"quantity": 9, "version": 5}


# ------------------------------------------------------------------ version file


async def test_a_booking_that_arrives_after_its_cancel_is_ignored() -> None:
    hotel = version_file.FakeHotel()
    assert await version_file.book_and_deliver_late(hotel) is SagaStatus.COMPENSATED
    assert hotel.version_file == {"o-1": ["cancel", "book"]}
    assert hotel.rooms == {}


async def test_without_a_version_file_the_late_booking_leaks_a_room() -> None:
    hotel = version_file.FakeHotel(keeps_version_file=False)
    assert await version_file.book_and_deliver_late(hotel) is SagaStatus.COMPENSATED
    assert hotel.rooms == {"o-1": "room-for-o-1"}


async def test_the_failed_booking_is_compensated_because_it_may_have_arrived() -> None:
    store, hotel = MemoryStore(), version_file.FakeHotel()
    in_transit: list[tuple[str, str]] = []
    trip = version_file.build_saga(hotel, in_transit)

    outcome = await Engine(store, [trip]).run(trip, {"order_id": "o-1"}, saga_id="t-1")

    assert outcome.status is SagaStatus.COMPENSATED
    assert in_transit == [("o-1", "book")]  # sent, not yet delivered
    assert types_of(await state_of(store, "t-1"), "book_room") == [
        RecordType.STEP_STARTED,
        RecordType.STEP_FAILED,
        RecordType.COMPENSATION_STARTED,
        RecordType.COMPENSATION_SUCCEEDED,
    ]
    assert hotel.version_file == {"o-1": ["cancel"]}


def test_in_order_operations_book_then_cancel() -> None:
    hotel = version_file.FakeHotel()
    hotel.receive("o-2", "book")
    assert hotel.rooms == {"o-2": "room-for-o-2"}
    hotel.receive("o-2", "cancel")
    assert hotel.rooms == {} and hotel.version_file == {"o-2": ["book", "cancel"]}


# ------------------------------------------------------------------ by value


def test_the_route_depends_on_the_order_value() -> None:
    plain, locked = by_value.build_sagas(by_value.FakeOrders())
    assert by_value.saga_for({"total": 999}, plain, locked) is plain
    assert by_value.saga_for({"total": by_value.HIGH_VALUE}, plain, locked) is locked
    assert [step.name for step in plain.steps] == ["charge", "confirm_order"]
    assert [step.name for step in locked.steps] == ["create_order", "charge", "approve_order"]


async def test_a_high_value_order_is_locked_while_it_runs_and_a_small_one_is_not() -> None:
    store, orders = MemoryStore(), by_value.FakeOrders()
    plain, locked = by_value.build_sagas(orders)
    engine = Engine(store, [plain, locked])
    orders_and_paths: list[tuple[dict[str, Any], str]] = [
        ({"order_id": "o-lamp", "total": 30}, "order_plain"),
        ({"order_id": "o-piano", "total": 2500}, "order_locked"),
    ]
    for order, path in orders_and_paths:
        done = await engine.run(by_value.saga_for(order, plain, locked), order)
        assert done.status is SagaStatus.COMPLETED
        assert done.name == path
    assert orders.history == {
        "o-lamp": ["CONFIRMED"],
        "o-piano": ["APPROVAL_PENDING", "APPROVED"],
    }


# ------------------------------------------------------------------ reading mid-saga


async def view_of(store: Store, order_id: str) -> Any:
    (view,) = (await find(store, Query(input={"order_id": order_id}))).sagas
    return view


async def test_a_reader_mid_saga_sees_the_row_ahead_of_the_saga() -> None:
    store = MemoryStore()
    reserve, email = gates.Gate(), gates.Gate()
    shop = reader.FakeShop(gates={"A-1:reserve": reserve, "A-1:email": email})
    order = reader.build_saga(shop)
    engine = Engine(store, [order], owner="worker-1")
    running = asyncio.create_task(
        engine.run(order, {"order_id": "A-1", "in_stock": True}, saga_id="A-1")
    )

    await reserve.reached.wait()
    view = await view_of(store, "A-1")
    assert shop.orders["A-1"] == {"status": "PENDING", "paid": True}
    assert view.state.status is SagaStatus.RUNNING
    assert statuses(view.state) == {
        "charge": StepStatus.SUCCEEDED,
        "reserve": StepStatus.RUNNING,
        "email": StepStatus.PENDING,
    }
    assert view.instance.lease_owner == "worker-1"  # who is working on it, and until when
    assert view.instance.lease_expires is not None
    reserve.release.set()

    await email.reached.wait()  # after the pivot: the row says APPROVED, the saga runs on
    view = await view_of(store, "A-1")
    assert shop.orders["A-1"] == {"status": "APPROVED", "paid": True}
    assert view.state.status is SagaStatus.RUNNING
    assert view.state.by_name["email"].status is StepStatus.RUNNING
    running_now = await find(store, Query(statuses={SagaStatus.RUNNING}))
    assert [v.instance.id for v in running_now.sagas] == ["A-1"]
    email.release.set()

    assert (await running).status is SagaStatus.COMPLETED
    assert (await view_of(store, "A-1")).state.status is SagaStatus.COMPLETED


async def test_a_reader_during_compensation_sees_the_charge_still_standing() -> None:
    store, refund = MemoryStore(), gates.Gate()
    shop = reader.FakeShop(gates={"A-2:refund": refund})
    order = reader.build_saga(shop)
    engine = Engine(store, [order])
    running = asyncio.create_task(
        engine.run(order, {"order_id": "A-2", "in_stock": False}, saga_id="A-2")
    )

    await refund.reached.wait()
    view = await view_of(store, "A-2")
    assert shop.orders["A-2"] == {"status": "PENDING", "paid": True}
    assert view.state.status is SagaStatus.COMPENSATING
    assert view.state.by_name["charge"].status is StepStatus.COMPENSATING
    assert view.state.reason == "step 'reserve' failed: out of stock"
    refund.release.set()

    assert (await running).status is SagaStatus.COMPENSATED
    assert shop.orders["A-2"] == {"status": "REJECTED", "paid": False}
    assert statuses((await view_of(store, "A-2")).state) == {
        "charge": StepStatus.COMPENSATED,
        "reserve": StepStatus.FAILED,
        "email": StepStatus.SKIPPED,
    }


def test_the_page_shows_the_readers_output() -> None:
    lines = (EXAMPLES / "consistency/read_mid_saga.out").read_text().splitlines()
    assert [line.split()[:2] + line.split("| saga ")[1].split()[:1] for line in lines] == [
        ["A-1", "PENDING", "running"],
        ["A-1", "APPROVED", "running"],
        ["A-1", "APPROVED", "completed"],
        ["A-2", "PENDING", "compensating"],
        ["A-2", "REJECTED", "compensated"],
    ]
