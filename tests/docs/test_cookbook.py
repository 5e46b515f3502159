"""docs/cookbook.md: one recipe per compensation, and each claim the page makes about it.

Every recipe's example is loaded as a module; its fake services record what was done and
with which idempotency key, and the saga log is read back, so each test checks what the
page says happens (the status, the records, which effect happened exactly once), not only
that the program runs. Each example's ``main()`` is run too, as the page's story.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from doc_examples import EXAMPLES, load
from sagakit import (
    Client,
    Engine,
    MemoryStore,
    OperatorActionError,
    RecordType,
    Retry,
    SagaDefinitionError,
    SagaState,
    SagaStatus,
    StepStatus,
    Store,
    idempotency_key,
    open_store,
)

refunds = load("cookbook/refund_settles_later.py")
reservations = load("cookbook/partial_reservation.py")
emails = load("cookbook/confirmation_after_pivot.py")
shipments = load("cookbook/shipment_after_pickup.py")
points = load("cookbook/loyalty_points_expiry.py")
idempotent = load("cookbook/idempotent_compensation.py")
for_days = load("cookbook/compensation_retries_for_days.py")
pivots = load("cookbook/irreversible_pivot.py")

SIGNAL_TIMEOUT = "sagakit.errors.SignalTimeoutError"
IMPOSSIBLE = "sagakit.errors.CompensationImpossible"


async def state_of(store: Store, saga_id: str) -> SagaState:
    stored = await store.load(saga_id)
    assert stored is not None, f"{saga_id} is not in the saga log"
    state = SagaState.from_records(saga_id, stored.records)
    assert state.status is stored.instance.status
    return state


def types_of(state: SagaState, step: str | None = None) -> list[RecordType]:
    return [r.type for r in state.records if step is None or r.step == step]


def payloads(state: SagaState, kind: RecordType, step: str | None = None) -> list[Any]:
    return [
        None if r.data is None else json.loads(r.data)
        for r in state.records
        if r.type is kind and (step is None or r.step == step)
    ]


# ------------------------------------------------------------------ 1. refund settles later


async def test_a_refund_is_issued_once_and_the_saga_waits_for_its_settlement() -> None:
    store, payments = MemoryStore(), refunds.FakePayments()
    order = refunds.build_saga(payments, settles_within=60.0)
    engine, client = Engine(store, [order]), Client(store)

    running = asyncio.create_task(engine.run(order, saga_id="o-1"))
    refund = await payments.accepted.get()
    assert refund == {"refund_id": "re-pay-o-1", "saga_id": "o-1"}
    assert await refunds.on_refund_settled(client, refund)
    outcome = await running

    assert outcome.status is SagaStatus.COMPENSATED
    key = idempotency_key("o-1", "charge", "compensation")
    # called before the wait and again when the settlement came: one refund
    assert payments.refund_calls == [key, key]
    assert list(payments.refunds) == [key]
    state = await state_of(store, "o-1")
    assert types_of(state, "charge")[-3:] == [
        RecordType.COMPENSATION_STARTED,
        RecordType.STEP_WAITING,
        RecordType.COMPENSATION_SUCCEEDED,
    ]
    [waiting] = payloads(state, RecordType.STEP_WAITING, "charge")
    assert waiting["signal"] == "refund_settled"
    assert waiting["role"] == "compensation"
    [received] = payloads(state, RecordType.MESSAGE_RECEIVED)
    assert received["name"] == "refund_settled"
    assert state.by_name["charge"].compensation_attempts == 1


async def test_a_refund_that_never_settles_needs_attention_and_is_resolved() -> None:
    store, payments = MemoryStore(), refunds.FakePayments()
    order = refunds.build_saga(payments, settles_within=0.1)
    engine, client = Engine(store, [order]), Client(store, operator="ops@shop.example")

    outcome = await engine.run(order, saga_id="o-2")

    assert outcome.status is SagaStatus.NEEDS_ATTENTION
    assert outcome.failed_compensations == ("charge",)
    state = await state_of(store, "o-2")
    charge = state.by_name["charge"]
    assert charge.status is StepStatus.COMPENSATION_FAILED
    assert charge.compensation_error is not None
    assert charge.compensation_error["type"] == SIGNAL_TIMEOUT
    assert charge.compensation_attempts == 1  # Retry(attempts=1): no second week of waiting
    assert list(payments.refunds) == [idempotency_key("o-2", "charge", "compensation")]

    # the late webhook is refused, and says so to its handler
    assert not await refunds.on_refund_settled(client, await payments.accepted.get())
    await client.resolve("o-2", note="re-pay-o-2 settled late")
    state = await state_of(store, "o-2")
    assert state.status is SagaStatus.COMPENSATED
    assert state.resolution == {"by": "ops@shop.example", "note": "re-pay-o-2 settled late"}
    assert state.records[-1].type is RecordType.OPERATOR_RESOLVED


async def test_retrying_an_unsettled_refund_reissues_it_with_the_same_key() -> None:
    store, payments = MemoryStore(), refunds.FakePayments()
    order = refunds.build_saga(payments, settles_within=0.1)
    engine, client = Engine(store, [order]), Client(store)
    assert (await engine.run(order, saga_id="o-3")).status is (SagaStatus.NEEDS_ATTENTION)

    await client.retry("o-3", note="the provider lost it; ask again")
    assert await refunds.on_refund_settled(client, await payments.accepted.get())
    outcome = await engine.resume_saga("o-3")

    assert outcome.status is SagaStatus.COMPENSATED
    key = idempotency_key("o-3", "charge", "compensation")
    assert set(payments.refund_calls) == {key}
    assert list(payments.refunds) == [key]


async def test_refund_story() -> None:
    await refunds.main()


# ------------------------------------------------------------------ 2. partial reservation


async def test_a_reserve_that_failed_half_way_releases_what_it_held() -> None:
    store = MemoryStore()
    inventory = reservations.FakeInventory(stock={"LAMP": 5, "DESK": 2})
    order = reservations.build_saga(inventory)
    lines = [{"sku": "LAMP", "qty": 1}, {"sku": "DESK", "qty": 3}]

    outcome = await Engine(store, [order]).run(
        order, {"lines": lines, "card": "tok_visa"}, saga_id="o-1"
    )

    assert outcome.status is SagaStatus.COMPENSATED
    key = idempotency_key("o-1", "reserve")
    assert inventory.released == [(key, {"LAMP": 1})]
    assert inventory.stock == {"LAMP": 5, "DESK": 2}
    assert inventory.holds == {}
    state = await state_of(store, "o-1")
    reserve = state.by_name["reserve"]
    assert reserve.status is StepStatus.COMPENSATED
    assert reserve.result is None  # the action failed: its compensation ran on its key alone
    assert reserve.error is not None
    assert reserve.error["message"] == "only 2 DESK in stock"
    assert state.by_name["charge"].status is StepStatus.SKIPPED


async def test_a_whole_reservation_is_released_when_a_later_step_fails() -> None:
    store = MemoryStore()
    inventory = reservations.FakeInventory(stock={"LAMP": 5})
    order = reservations.build_saga(inventory)
    lines = [{"sku": "LAMP", "qty": 2}]

    outcome = await Engine(store, [order]).run(
        order, {"lines": lines, "card": "tok_declined"}, saga_id="o-2"
    )

    assert outcome.status is SagaStatus.COMPENSATED
    assert inventory.released == [(idempotency_key("o-2", "reserve"), {"LAMP": 2})]
    assert inventory.stock == {"LAMP": 5}


async def test_a_completed_order_keeps_its_reservation() -> None:
    inventory = reservations.FakeInventory(stock={"LAMP": 5})
    order = reservations.build_saga(inventory)
    input = {"lines": [{"sku": "LAMP", "qty": 2}], "card": "tok_visa"}
    outcome = await Engine(MemoryStore(), [order]).run(order, input, saga_id="o-3")
    assert outcome.status is SagaStatus.COMPLETED
    assert inventory.released == []
    assert inventory.holds == {idempotency_key("o-3", "reserve"): {"LAMP": 2}}


async def test_reservation_story() -> None:
    await reservations.main()


# ------------------------------------------------------------------ 3. e-mails and the pivot


async def test_the_confirmation_is_sent_only_after_the_pivot() -> None:
    store, shop = MemoryStore(), emails.FakeShop()
    order = emails.build_saga(shop)
    engine, client = Engine(store, [order], hand_back=True), Client(store)

    waiting = await engine.run(order, {"email": "ada@example.com"}, saga_id="o-1")
    assert waiting.status is SagaStatus.RUNNING
    assert waiting.waiting_for == "card_authorised"
    assert shop.emails == [("ada@example.com", "We have your order")]
    await client.signal("o-1", "card_authorised", {"authorisation": "auth-1"})
    assert (await engine.resume_saga("o-1")).status is SagaStatus.COMPLETED

    assert shop.emails == [
        ("ada@example.com", "We have your order"),
        ("ada@example.com", "Your order is confirmed"),
    ]
    assert shop.keys == {
        idempotency_key("o-1", "acknowledge"),
        idempotency_key("o-1", "send_confirmation"),
    }
    state = await state_of(store, "o-1")
    assert [s.kind for s in state.steps] == ["compensatable", "compensatable", "pivot", "retriable"]
    records = [(r.type, r.step) for r in state.records]
    pivot_done = records.index((RecordType.STEP_SUCCEEDED, "capture"))
    assert records.index((RecordType.STEP_STARTED, "send_confirmation")) > pivot_done


async def test_a_cancel_before_the_pivot_sends_the_cancellation_instead() -> None:
    store, shop = MemoryStore(), emails.FakeShop()
    order = emails.build_saga(shop)
    engine, client = Engine(store, [order], hand_back=True), Client(store)

    await engine.run(order, {"email": "bob@example.com"}, saga_id="o-2")
    assert await client.cancel("o-2", reason="the customer changed their mind")
    assert (await engine.resume_saga("o-2")).status is SagaStatus.COMPENSATED

    assert shop.emails == [
        ("bob@example.com", "We have your order"),
        ("bob@example.com", "Your order is cancelled"),
    ]
    assert idempotency_key("o-2", "acknowledge", "compensation") in shop.keys
    assert shop.voided == []  # the card was never authorised: nothing to void
    state = await state_of(store, "o-2")
    assert RecordType.CANCEL_REQUESTED in types_of(state)
    assert state.by_name["send_confirmation"].status is StepStatus.SKIPPED
    assert state.by_name["send_confirmation"].attempts == 0


async def test_email_story() -> None:
    await emails.main()


# ------------------------------------------------------------------ 4. shipment after pickup


async def test_a_shipment_before_pickup_is_cancelled() -> None:
    store, courier, paid_back = MemoryStore(), shipments.FakeCourier(), list[str]()
    order = shipments.build_saga(courier, paid_back)
    outcome = await Engine(store, [order]).run(order, saga_id="o-1")
    assert outcome.status is SagaStatus.COMPENSATED
    assert courier.cancelled == ["LBL-o-1"]
    assert paid_back == ["pay-o-1"]


async def test_a_collected_shipment_needs_attention_after_the_other_undos() -> None:
    store, courier, paid_back = MemoryStore(), shipments.FakeCourier(van_at_dock=True), list[str]()
    order = shipments.build_saga(courier, paid_back)
    client = Client(store, operator="ops@shop.example")

    outcome = await Engine(store, [order]).run(order, saga_id="o-2")

    assert outcome.status is SagaStatus.NEEDS_ATTENTION
    assert outcome.failed_compensations == ("create_label",)
    assert outcome.reason is not None
    assert outcome.reason.endswith("compensation did not finish for create_label")
    assert courier.cancelled == []
    assert paid_back == ["pay-o-2"]  # the refund still ran, after the impossible cancel
    state = await state_of(store, "o-2")
    label = state.by_name["create_label"]
    assert label.compensation_attempts == 1  # never retried
    assert label.compensation_error is not None
    assert label.compensation_error["type"] == IMPOSSIBLE
    assert label.compensation_error["message"] == "LBL-o-2 was collected: recall the parcel"
    assert state.by_name["charge"].status is StepStatus.COMPENSATED

    with pytest.raises(OperatorActionError, match="a note"):
        await client.resolve("o-2", note=" ")
    await client.resolve("o-2", note="LBL-o-2 recalled")
    state = await state_of(store, "o-2")
    assert state.status is SagaStatus.COMPENSATED
    assert state.resolution == {"by": "ops@shop.example", "note": "LBL-o-2 recalled"}


async def test_shipment_story() -> None:
    await shipments.main()


# ------------------------------------------------------------------ 5. loyalty points


def loyalty_saga() -> tuple[list[date], Any, Any]:
    """The page's member and saga, with a calendar the test turns: ``days[-1]`` is today."""
    days = [date(2026, 3, 30)]
    loyalty = points.FakeLoyalty(lots=[(300, date(2026, 3, 31)), (400, date(2026, 12, 31))])
    return days, loyalty, points.build_saga(loyalty, today=lambda: days[-1])


async def test_the_debit_records_each_lot_and_its_expiry() -> None:
    _, loyalty, order = loyalty_saga()
    store = MemoryStore()
    engine, client = Engine(store, [order], hand_back=True), Client(store)
    await engine.run(order, {"points": 500}, saga_id="o-1")
    state = await state_of(store, "o-1")
    assert state.results["debit_points"] == {
        "lots": [
            {"points": 300, "expires_on": "2026-03-31"},
            {"points": 200, "expires_on": "2026-12-31"},
        ]
    }
    await client.signal("o-1", "transfer_received", {"amount_cents": 4990})
    assert (await engine.resume_saga("o-1")).status is SagaStatus.COMPLETED
    assert loyalty.credits == {}
    assert loyalty.vouchers == {}
    assert loyalty.lots == [(0, date(2026, 3, 31)), (200, date(2026, 12, 31))]


async def test_points_still_valid_are_credited_back_with_their_expiry() -> None:
    days, loyalty, order = loyalty_saga()
    store = MemoryStore()
    engine, client = Engine(store, [order], hand_back=True), Client(store)
    await engine.run(order, {"points": 500}, saga_id="o-1")
    days.append(date(2026, 3, 31))  # the last day the March points are good
    await client.cancel("o-1")
    assert (await engine.resume_saga("o-1")).status is SagaStatus.COMPENSATED
    key = idempotency_key("o-1", "debit_points", "compensation")
    assert loyalty.credits == {
        f"{key}:0": (300, date(2026, 3, 31)),
        f"{key}:1": (200, date(2026, 12, 31)),
    }
    assert loyalty.vouchers == {}
    live = sum(n for n, expires in loyalty.lots if expires >= days[-1])
    assert live == 700


async def test_points_that_lapsed_meanwhile_become_a_voucher() -> None:
    days, loyalty, order = loyalty_saga()
    store = MemoryStore()
    engine, client = Engine(store, [order], hand_back=True), Client(store)
    await engine.run(order, {"points": 500}, saga_id="o-2")
    days.append(days[-1] + timedelta(days=3))
    await client.cancel("o-2", reason="unpaid")
    assert (await engine.resume_saga("o-2")).status is SagaStatus.COMPENSATED
    key = idempotency_key("o-2", "debit_points", "compensation")
    assert loyalty.credits == {f"{key}:1": (200, date(2026, 12, 31))}
    assert loyalty.vouchers == {f"{key}:0": 300}


async def test_loyalty_story() -> None:
    await points.main()


# ------------------------------------------------------------------ 6. idempotent compensation


async def test_a_compensation_cut_short_by_a_crash_is_made_again_with_its_key() -> None:
    store, payments = MemoryStore(), idempotent.FakePayments(die_after_next_refund=True)
    order = idempotent.build_saga(payments)

    with pytest.raises(idempotent.ProcessKilled):
        await Engine(store, [order]).run(order, saga_id="o-1")
    crashed = await state_of(store, "o-1")
    last = crashed.records[-1]
    assert (last.type, last.step, last.attempt) == (RecordType.COMPENSATION_STARTED, "charge", 1)
    assert crashed.status is SagaStatus.COMPENSATING
    key = idempotency_key("o-1", "charge", "compensation")
    assert payments.refunds == {key: "re-1-of-pay-1"}  # the effect happened before the crash

    [resumed] = await Engine(store, [order]).resume()

    assert resumed.status is SagaStatus.COMPENSATED
    assert payments.calls == [key, key]
    assert payments.refunds == {key: "re-1-of-pay-1"}
    state = await state_of(store, "o-1")
    # the call made again belongs to the first start: one attempt, not two
    assert [r.attempt for r in state.records if r.type is RecordType.COMPENSATION_STARTED] == [1]
    assert state.by_name["charge"].compensation_attempts == 1
    [taken] = payloads(state, RecordType.CALL_TAKEN_OVER, "charge")
    assert key in json.dumps(taken)  # the log says who made it again, and with which key


async def test_idempotent_story() -> None:
    await idempotent.main()


# ------------------------------------------------------------------ 7. retries for days


def test_the_production_policy_tries_for_about_eight_days() -> None:
    policy = for_days.FOR_DAYS
    steady = replace(policy, jitter=0.0)
    waits = [steady.delay(n) for n in range(1, policy.attempts)]
    assert waits[:3] == [60.0, 120.0, 240.0]
    assert max(waits) == 6 * 3600.0
    assert 7 * 86400 < sum(waits) < 9 * 86400
    assert isinstance(policy.attempts, int)


async def test_the_next_try_is_a_due_time_in_the_log_that_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    payments = for_days.FakePayments(down_for=2)
    order = for_days.build_saga(payments, Retry(attempts=40, backoff=0.1, max_backoff=0.2))

    store = await open_store(for_days.DB)
    first = await Engine(store, [order], hand_back=True).run(order, saga_id="o-1")
    assert first.status is SagaStatus.COMPENSATING
    assert first.retrying == "charge"
    state = await state_of(store, "o-1")
    [failed] = payloads(state, RecordType.COMPENSATION_FAILED, "charge")
    stored = await store.load("o-1")
    assert stored is not None
    assert stored.instance.due_at == failed["retry_at"] == first.due_at
    assert failed["retry_at"] > state.records[-1].at  # in the future, not now
    assert failed["error"]["message"] == "503 from payments"
    await store.close()

    store = await open_store(for_days.DB)
    [done] = await Engine(store, [order]).resume()
    assert done.status is SagaStatus.COMPENSATED
    assert payments.calls == 3
    assert payments.refunds == {idempotency_key("o-1", "charge", "compensation"): "pay-1"}
    state = await state_of(store, "o-1")
    retry_ats = [p["retry_at"] for p in payloads(state, RecordType.COMPENSATION_FAILED, "charge")]
    assert len(retry_ats) == 2 and retry_ats[0] < retry_ats[1]
    await store.close()
    assert (tmp_path / "refund_retries.db").exists()


async def test_a_compensation_out_of_tries_needs_attention() -> None:
    payments = for_days.FakePayments(down_for=10)
    order = for_days.build_saga(payments, Retry(attempts=3, backoff=0.01, max_backoff=0.01))
    outcome = await Engine(MemoryStore(), [order]).run(order, saga_id="o-2")
    assert outcome.status is SagaStatus.NEEDS_ATTENTION
    assert outcome.failed_compensations == ("charge",)
    assert payments.calls == 3
    assert payments.refunds == {}


async def test_retries_story(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await for_days.main()


# ------------------------------------------------------------------ 8. the irreversible pivot


async def test_a_failed_pivot_undoes_what_came_before_it() -> None:
    store, effects = MemoryStore(), list[str]()
    order = pivots.build_saga(effects)
    outcome = await Engine(store, [order]).run(order, {"address": ""}, saga_id="o-1")
    assert outcome.status is SagaStatus.COMPENSATED
    assert effects == ["charge o-1", "refund o-1"]
    state = await state_of(store, "o-1")
    pivot = state.by_name["hand_to_courier"]
    assert (pivot.kind, pivot.status, pivot.compensation_attempts) == ("pivot", "failed", 0)
    assert state.by_name["email_tracking"].status is StepStatus.SKIPPED


async def test_after_the_pivot_a_cancel_is_refused_and_the_saga_goes_forward() -> None:
    store, effects = MemoryStore(), list[str]()
    order = pivots.build_saga(effects)
    engine, client = Engine(store, [order], hand_back=True), Client(store)

    shipped = await engine.run(order, {"address": "1 Loop Rd"}, saga_id="o-2")
    assert shipped.status is SagaStatus.RUNNING
    assert shipped.waiting_for == "parcel_scanned"
    before = len((await state_of(store, "o-2")).records)
    with pytest.raises(OperatorActionError, match="passed its pivot"):
        await client.cancel("o-2", reason="the customer asked")
    assert len((await state_of(store, "o-2")).records) == before  # nothing recorded

    await client.signal("o-2", "parcel_scanned", "Leipzig hub")
    assert (await engine.resume_saga("o-2")).status is SagaStatus.COMPLETED
    assert effects == ["charge o-2", "hand over o-2", "email P-o-2 Leipzig hub"]


def test_the_definition_refuses_an_undo_after_the_pivot() -> None:
    with pytest.raises(SagaDefinitionError, match="cannot come after the pivot") as refused:
        pivots.undo_after_the_pivot()
    assert refused.value.step == "gift_wrap"
    with pytest.raises(SagaDefinitionError, match="needs a compensation") as refused:
        pivots.irreversible_step_left_undoable()
    assert refused.value.step == "ship"


async def test_pivot_story(capsys: pytest.CaptureFixture[str]) -> None:
    await pivots.main()
    expected = (EXAMPLES / "cookbook" / "irreversible_pivot.out").read_text()
    assert capsys.readouterr().out == expected
