"""docs/choosing.md: the same order saga orchestrated and choreographed, and what each shows.

The page claims that both programs reach the same business outcome, that both leave the
saga in the same saga log with the same statuses (the orchestrated one written by the
engine, the choreographed one by the tracker from the events), and that adding a fraud
check is one more step in one case and a new subscriber plus re-wiring in the other.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from doc_examples import load
from sagakit import (
    Engine,
    Event,
    MemoryBroker,
    MemoryStore,
    RecordType,
    SagaDefinitionError,
    SagaState,
    SagaStatus,
    StepStatus,
    Store,
    Tracker,
)

FLAVOURS = ["choosing/side_by_side_orchestrated.py", "choosing/side_by_side_choreographed.py"]
FRAUD = ["choosing/fraud_check_orchestrated.py", "choosing/fraud_check_choreographed.py"]
STEPS = ["create_order", "charge_payment", "reserve_stock", "create_shipment", "complete_order"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The choreographed services keep their SQLite files in the current directory."""
    monkeypatch.chdir(tmp_path)


async def state_of(store: Store, saga_id: str) -> SagaState:
    stored = await store.load(saga_id)
    assert stored is not None, f"{saga_id} is not in the saga log"
    state = SagaState.from_records(saga_id, stored.records)
    assert state.status is stored.instance.status
    return state


def data(state: SagaState, kind: RecordType, step: str) -> dict[str, Any]:
    found = [r for r in state.records if r.type is kind and r.step == step]
    assert len(found) == 1, f"{kind.value} of {step}: {found}"
    assert found[0].data is not None
    parsed: dict[str, Any] = json.loads(found[0].data)
    return parsed


@pytest.mark.parametrize("example", FLAVOURS)
async def test_both_flavours_reach_the_same_business_outcome(example: str) -> None:
    module = load(example)
    found = await module.place_two_orders(MemoryStore())
    assert found.orders == {"order-1": "completed", "order-2": "cancelled"}
    assert found.charged == {"order-1", "order-2"}
    assert found.refunded == {"order-2"}, "the failed order's payment is refunded"
    assert found.shipped == {"order-1"}, "nothing is shipped for the failed order"


async def run_both() -> dict[str, MemoryStore]:
    """Each flavour's saga log after its two orders (the choreographed one: the store its
    Tracker wrote)."""
    stores: dict[str, MemoryStore] = {}
    for example in FLAVOURS:
        module = load(example)
        stores[example] = MemoryStore()
        await module.place_two_orders(stores[example])
    return stores


async def test_both_sagas_are_in_the_saga_log_with_the_same_statuses() -> None:
    stores = await run_both()
    for store in stores.values():
        done, undone = await state_of(store, "order-1"), await state_of(store, "order-2")
        for state in (done, undone):
            assert (state.name, state.version) == ("place_order", 1)
            assert [s.name for s in state.steps] == STEPS
        assert done.status is SagaStatus.COMPLETED
        assert all(s.status is StepStatus.SUCCEEDED for s in done.steps)
        assert undone.status is SagaStatus.COMPENSATED
        assert undone.failed_compensations == []
        assert [s.status for s in undone.steps] == [
            StepStatus.COMPENSATED,
            StepStatus.COMPENSATED,
            StepStatus.FAILED,
            StepStatus.SKIPPED,
            StepStatus.SKIPPED,
        ]
        assert undone.reason is not None and "short of GLOBE" in undone.reason
    orchestrated = await state_of(stores[FLAVOURS[0]], "order-2")
    choreographed = await state_of(stores[FLAVOURS[1]], "order-2")
    # Same kinds of records in the same order, whoever wrote them.
    assert [r.type for r in orchestrated.records] == [r.type for r in choreographed.records]


async def test_the_orchestrated_log_has_each_attempt_with_its_error_and_traceback() -> None:
    module = load(FLAVOURS[0])
    store = MemoryStore()
    await module.place_two_orders(store)
    state = await state_of(store, "order-2")
    error = data(state, RecordType.STEP_FAILED, "reserve_stock")["error"]
    assert error["type"].endswith("OutOfStock") and error["message"] == "short of GLOBE"
    assert "raise OutOfStock" in error["traceback"]
    charged = json.loads(state.raw_results["charge_payment"])
    assert charged == {"payment_id": "pay-order-2:charge_payment:action"}, "keyed by the step"
    assert [r.step for r in state.records if r.type is RecordType.COMPENSATION_STARTED] == [
        "charge_payment",
        "create_order",
    ], "compensated in reverse order"


async def test_the_choreographed_log_names_each_event_and_what_caused_it() -> None:
    module = load(FLAVOURS[1])
    store = MemoryStore()
    await module.place_two_orders(store)
    state = await state_of(store, "order-2")
    chain = [
        data(state, RecordType.STEP_SUCCEEDED, "create_order"),
        data(state, RecordType.STEP_SUCCEEDED, "charge_payment"),
        data(state, RecordType.STEP_FAILED, "reserve_stock"),
        data(state, RecordType.COMPENSATION_SUCCEEDED, "charge_payment"),
        data(state, RecordType.COMPENSATION_SUCCEEDED, "create_order"),
    ]
    assert [(d["event"], d["source"]) for d in chain] == [
        ("OrderCreated", "orders"),
        ("PaymentCompleted", "payments"),
        ("StockReservationFailed", "inventory"),
        ("PaymentRefunded", "payments"),
        ("OrderCancelled", "orders"),
    ]
    assert chain[0]["causation_id"] is None
    for cause, effect in itertools.pairwise(chain):
        assert effect["causation_id"] == cause["event_id"]
    # The failure is the event, not an exception: no traceback reaches the saga log.
    assert chain[2]["error"] == {"type": "StockReservationFailed", "message": "short of GLOBE"}
    assert state.input == module.ORDERS[1], "the starting event's payload is the input"


async def test_the_tracker_marks_a_silent_saga_needs_attention_after_max_gap() -> None:
    module = load(FLAVOURS[1])
    store = MemoryStore()
    tracker = Tracker(store, MemoryBroker(), [module.ORDER_FLOW], streams=[module.STREAM])
    created = Event.new("OrderCreated", module.ORDERS[0], source="orders", correlation_id="order-9")
    assert await tracker.track(created)
    assert await tracker.check_stuck(now=created.time + 29.0) == []
    assert await tracker.check_stuck(now=created.time + module.ORDER_FLOW.max_gap + 1) == [
        "order-9"
    ]
    state = await state_of(store, "order-9")
    assert state.status is SagaStatus.NEEDS_ATTENTION
    assert state.reason is not None and "PaymentCompleted" in state.reason, state.reason


@pytest.mark.parametrize("example", FRAUD)
async def test_a_fraud_check_is_added_as_version_2_both_ways(example: str) -> None:
    module = load(example)
    store = MemoryStore()
    found, screenings = await module.place_orders_v2(store)
    assert screenings == {"order-1": "cleared", "order-3": "flagged"}
    assert found.orders == {"order-1": "completed", "order-3": "cancelled"}
    assert found.charged == {"order-1"}, "the flagged card is never charged"
    assert found.refunded == set() and found.shipped == {"order-1"}
    cleared, flagged = await state_of(store, "order-1"), await state_of(store, "order-3")
    for state in (cleared, flagged):
        assert (state.name, state.version) == ("place_order", 2)
        assert [s.name for s in state.steps] == [STEPS[0], "screen_for_fraud", *STEPS[1:]]
    assert cleared.status is SagaStatus.COMPLETED
    assert flagged.status is SagaStatus.COMPENSATED
    assert [s.status for s in flagged.steps[:3]] == [
        StepStatus.COMPENSATED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
    ]
    assert flagged.reason is not None and "tok_stolen is flagged" in flagged.reason


async def test_the_fraud_checked_saga_reads_the_same_both_ways() -> None:
    states: list[list[tuple[str, StepStatus]]] = []
    for example in FRAUD:
        store = MemoryStore()
        await load(example).place_orders_v2(store)
        state = await state_of(store, "order-3")
        states.append([(s.name, s.status) for s in state.steps])
    assert states[0] == states[1]


async def test_one_tracker_cannot_follow_both_versions_of_a_choreography() -> None:
    module: ModuleType = load(FRAUD[1])
    with pytest.raises(SagaDefinitionError, match="also belongs to place_order@1"):
        Tracker(MemoryStore(), MemoryBroker(), [module.ORDER_FLOW, module.FRAUD_CHECKED_FLOW])


async def test_the_orchestrated_versions_are_served_side_by_side() -> None:
    module = load(FRAUD[0])
    shop = module.Shop()
    screenings: dict[str, str] = {}
    v1, v2 = module.order_saga(shop), module.order_saga_v2(shop, screenings)
    store = MemoryStore()
    engine = Engine(store, [v1, v2])
    old = await engine.run(v1, module.ORDERS[0], saga_id="order-1")
    new = await engine.run(v2, module.SUSPICIOUS, saga_id="order-3")
    assert (old.version, old.status) == (1, SagaStatus.COMPLETED)
    assert (new.version, new.status) == (2, SagaStatus.COMPENSATED)
    assert screenings == {"order-3": "flagged"}, "version 1 screens nothing"
    assert [s.name for s in (await state_of(store, "order-1")).steps] == STEPS
