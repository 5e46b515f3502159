"""docs/concepts.md and docs/orchestration.md: each claim the two pages make, checked.

Every example is loaded as a module. Its saga definitions are driven again here on a store
the test keeps, so the log can be read back (records, attempts, keys, errors, due times),
and its ``main()`` is run as the page's story, its output compared with what the page shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from doc_examples import DOCS, EXAMPLES, ROOT, blocks, includes, load
from sagakit import (
    Client,
    CompensationImpossible,
    Engine,
    InvalidArgumentError,
    MemoryStore,
    OperatorActionError,
    RecordType,
    Retry,
    SagaDeadlineError,
    SagaDefinitionError,
    SagaIdConflictError,
    SagaState,
    SagaStatus,
    SerializationError,
    SignalTimeoutError,
    StepKind,
    StepStatus,
    StepTimeoutError,
    Store,
    Worker,
    idempotency_key,
    open_store,
)
from sagakit.operations import versions

CONCEPTS = DOCS / "concepts.md"
ORCHESTRATION = DOCS / "orchestration.md"


def error_type(error: type[BaseException]) -> str:
    return f"{error.__module__}.{error.__qualname__}"


async def state_of(store: Store, saga_id: str) -> SagaState:
    stored = await store.load(saga_id)
    assert stored is not None, f"{saga_id} is not in the saga log"
    state = SagaState.from_records(saga_id, stored.records)
    assert state.status is stored.instance.status
    return state


def trail(state: SagaState) -> list[tuple[str, str | None, int]]:
    """(record type, step, attempt) of every record after ``saga_started``."""
    return [(r.type.value, r.step, r.attempt) for r in state.records[1:]]


def payloads(state: SagaState, kind: RecordType, step: str | None = None) -> list[Any]:
    return [
        None if r.data is None else json.loads(r.data)
        for r in state.records
        if r.type is kind and (step is None or r.step == step)
    ]


def expected_output(example: str) -> str:
    return (EXAMPLES / example).with_suffix(".out").read_text()


async def run_main(module: ModuleType, capsys: pytest.CaptureFixture[str]) -> str:
    """The example's own story, its asserts included; what it printed."""
    capsys.readouterr()
    await module.main()
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SQLite examples keep their saga log in the current directory."""
    monkeypatch.chdir(tmp_path)


# ====================================================================== the pages themselves


def page_includes(page: Path) -> set[str]:
    return {
        str(path.relative_to(EXAMPLES)) for block in blocks(page) for path, _ in includes(block)
    }


@pytest.mark.parametrize(
    ("page", "topic"), [(CONCEPTS, "concepts"), (ORCHESTRATION, "orchestration")]
)
def test_each_page_shows_every_example_of_its_topic(page: Path, topic: str) -> None:
    shown = page_includes(page)
    for path in sorted((EXAMPLES / topic).iterdir()):
        if path.suffix in (".py", ".sh", ".mmd", ".out"):
            assert f"{topic}/{path.name}" in shown, f"{page.name} does not show {path.name}"


def test_the_lifecycle_diagram_names_every_saga_status() -> None:
    diagram = (EXAMPLES / "concepts" / "saga_lifecycle.mmd").read_text()
    assert diagram.startswith("stateDiagram-v2\n")
    states = set(re.findall(r"^\s*(\w+|\[\*\]) --> (\w+|\[\*\])", diagram, flags=re.MULTILINE))
    named = {name for pair in states for name in pair} - {"[*]"}
    assert named == {status.value for status in SagaStatus}
    [fence] = [b for b in blocks(CONCEPTS) if any("saga_lifecycle.mmd" in line for line in b.body)]
    opening = CONCEPTS.read_text().splitlines()[fence.line - 1]
    assert opening.strip() == "```mermaid"


def test_the_concepts_page_names_every_status_and_record_type() -> None:
    text = CONCEPTS.read_text()
    for status in [*SagaStatus, *StepStatus]:
        assert f"| `{status.value}` |" in text, status
    for kind in RecordType:
        assert f"`{kind.value}`" in text, kind


def test_the_orchestration_page_names_every_option_and_retry_field() -> None:
    text = ORCHESTRATION.read_text()
    for option in ("name", "compensate", "kind", "retry", "compensation_retry", "timeout"):
        assert f"| `{option}` |" in text, option
    assert "| `compensate_on_failure` |" in text
    defaults = Retry()
    for field in ("attempts", "backoff", "multiplier", "max_backoff", "jitter"):
        assert f"| `{field}` | `{getattr(defaults, field)!r}` |" in text, field
    assert defaults.retry_on == (Exception,)
    assert "| `retry_on` | `(Exception,)` |" in text


# ============================================================================ concepts.md


async def test_a_definition_is_name_at_version_and_each_instance_has_id_and_input(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/definition_and_instances.py")
    store = MemoryStore()
    engine = Engine(store, [example.order])
    for saga_id, quantity in (("a", 2), ("b", 7)):
        await engine.run(example.order, {"quantity": quantity}, saga_id=saga_id)
        state = await state_of(store, saga_id)
        assert (state.name, state.version, state.input) == (
            "place_order",
            1,
            {"quantity": quantity},
        )
        assert state.results["reserve_stock"] == {"reserved": quantity}
    assert example.order.key == "place_order@1"
    out = await run_main(example, capsys)
    assert out.splitlines()[0] == "place_order@1 order-1 {'reserved': 1}"
    assert out.splitlines()[1] == "place_order@1 <32 hex digits> {'reserved': 5}"


async def test_the_three_step_kinds_and_every_refused_definition(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/step_kinds.py")
    assert [(s.name, s.kind) for s in example.trip.steps] == [
        ("reserve_flight", StepKind.COMPENSATABLE),
        ("reserve_hotel", StepKind.COMPENSATABLE),
        ("charge_card", StepKind.PIVOT),
        ("email_itinerary", StepKind.RETRIABLE),
    ]
    refused = example.refusals()
    for declare in refused:
        with pytest.raises(SagaDefinitionError) as caught:
            declare(example.Saga("bad", version=1))
        assert isinstance(caught.value, ValueError)  # every bad argument is a ValueError
        assert caught.value.saga == "bad" and caught.value.step is not None
    assert len(refused) == 8
    out = await run_main(example, capsys)
    assert out == expected_output("concepts/step_kinds.py")


async def test_compensations_get_the_input_and_the_recorded_result_newest_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/semantic_reverse.py")
    store = MemoryStore()
    result = await Engine(store, [example.stay]).run(
        example.stay, {"guest": "Bo", "nights": 2}, saga_id="s-1"
    )
    assert result.status is SagaStatus.COMPENSATED
    assert example.undone == [
        "return 500 points, expiring 2026-03-31",
        "refund 240 on pay-81",
        "cancel booking H-2N for Bo",
    ]
    state = await state_of(store, "s-1")
    undone = [r.step for r in state.records if r.type is RecordType.COMPENSATION_STARTED]
    assert undone == ["redeem_points", "charge_card", "book_room"]  # reverse order of completion
    assert "confirm_with_hotel" not in undone  # the failed step has nothing of its own to undo
    assert state.by_name["confirm_with_hotel"].status is StepStatus.FAILED
    out = await run_main(example, capsys)
    assert out == expected_output("concepts/semantic_reverse.py")


async def test_step_started_is_committed_before_the_action_is_called(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/write_ahead.py")
    out = await run_main(example, capsys)
    assert out == expected_output("concepts/write_ahead.py")
    assert example.seen == [
        (RecordType.SAGA_STARTED, None, 0),
        (RecordType.STEP_STARTED, "send_sms", 1),
    ]
    store = await open_store(example.LOG)
    try:
        state = await state_of(store, "n-1")
    finally:
        await store.close()
    assert trail(state) == [
        ("step_started", "send_sms", 1),
        ("step_succeeded", "send_sms", 1),
        ("saga_completed", None, 0),
    ]


async def test_the_records_of_a_completed_and_a_compensated_saga(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/saga_log_records.py")
    out = await run_main(example, capsys)
    assert out == expected_output("concepts/saga_log_records.py")
    store = await open_store("sqlite:///saga_log.db")
    try:
        completed = await state_of(store, "order-1")
        compensated = await state_of(store, "order-2")
        assert await example.record_types(store, "order-1") == [r.type for r in completed.records]
    finally:
        await store.close()
    assert completed.status is SagaStatus.COMPLETED
    assert trail(completed) == [
        ("step_started", "charge_card", 1),
        ("step_succeeded", "charge_card", 1),
        ("step_started", "reserve_stock", 1),
        ("step_succeeded", "reserve_stock", 1),
        ("step_started", "ship", 1),
        ("step_succeeded", "ship", 1),
        ("saga_completed", None, 0),
    ]
    assert compensated.status is SagaStatus.COMPENSATED
    assert trail(compensated) == [
        ("step_started", "charge_card", 1),
        ("step_succeeded", "charge_card", 1),
        ("step_started", "reserve_stock", 1),
        ("step_failed", "reserve_stock", 1),
        ("saga_compensating", None, 0),
        ("compensation_started", "charge_card", 1),
        ("compensation_succeeded", "charge_card", 1),
        ("saga_compensated", None, 0),
    ]
    assert [r.seq for r in compensated.records] == list(range(9))
    [failure] = payloads(compensated, RecordType.STEP_FAILED)
    assert failure["error"]["message"] == "only 2 in stock" and failure["retry_at"] is None
    # run again on the same log: the ids exist, so nothing runs twice and the output is the same
    assert await run_main(load("concepts/saga_log_records.py"), capsys) == out


async def test_at_least_once_calls_with_one_key_charge_exactly_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/idempotency_keys.py")
    store = MemoryStore()
    result = await Engine(store, [example.order]).run(example.order, {"amount": 5}, saga_id="o-9")
    key = "o-9:charge_card:action"
    assert idempotency_key("o-9", "charge_card") == key
    assert idempotency_key("o-9", "charge_card", "compensation") == "o-9:charge_card:compensation"
    assert example.payments.calls == [key, key]
    assert example.payments.charges == {key: {"payment_id": "pay-1", "amount": 5}}
    assert result.results["charge_card"] == {"payment_id": "pay-1", "amount": 5}
    state = await state_of(store, "o-9")
    assert trail(state) == [
        ("step_started", "charge_card", 1),
        ("step_failed", "charge_card", 1),
        ("step_started", "charge_card", 2),
        ("step_succeeded", "charge_card", 2),
        ("saga_completed", None, 0),
    ]
    out = await run_main(load("concepts/idempotency_keys.py"), capsys)
    assert out == expected_output("concepts/idempotency_keys.py")


async def test_saga_and_step_statuses_as_the_log_tells_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/step_statuses.py")
    store = MemoryStore()
    engine = Engine(store, [example.order])
    stuck = await engine.run(example.order, {"out_of_stock": True, "refund_impossible": True})
    assert stuck.status is SagaStatus.NEEDS_ATTENTION
    assert stuck.failed_compensations == ("charge_card",)
    assert stuck.reason is not None
    assert "refund by bank transfer" in stuck.reason or "charge_card" in stuck.reason
    state = await state_of(store, stuck.saga_id)
    [impossible] = payloads(state, RecordType.COMPENSATION_FAILED, "charge_card")
    assert impossible["error"]["type"] == error_type(CompensationImpossible)
    assert impossible["retry_at"] is None  # no retries for the impossible
    assert await example.statuses(store, stuck.saga_id) == (
        SagaStatus.NEEDS_ATTENTION,
        [StepStatus.COMPENSATION_FAILED, StepStatus.FAILED, StepStatus.SKIPPED],
    )
    out = await run_main(example, capsys)
    assert out == expected_output("concepts/step_statuses.py")


async def test_a_process_that_dies_mid_call_is_resumed_from_the_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("concepts/crash_and_resume.py")
    out = await run_main(example, capsys)
    assert out == expected_output("concepts/crash_and_resume.py")
    calls = example.courier_calls()
    assert [c["key"] for c in calls] == ["p-1:book_courier:action"] * 2
    assert calls[0]["pid"] != calls[1]["pid"] == os.getpid()
    store = await open_store(example.LOG)
    try:
        state = await state_of(store, "p-1")
    finally:
        await store.close()
    assert state.status is SagaStatus.COMPLETED
    [taken] = payloads(state, RecordType.CALL_TAKEN_OVER)
    assert taken["key"] == "p-1:book_courier:action" and taken["role"] == "action"
    assert taken["previous"] != taken["holder"]
    assert f":{calls[0]['pid']}:" in taken["previous"]  # the dead child held it


# ======================================================================= orchestration.md


async def test_three_declarations_are_one_definition_with_default_policies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/declaring_sagas.py")
    forms = [example.decorated_saga(), example.built, example.listed]
    shapes = [[(s.name, s.kind, s.timeout, s.compensation) for s in f.steps] for f in forms]
    assert shapes[0][1:] == shapes[1][1:] == shapes[2][1:]
    assert [s[:3] for s in shapes[0]] == [s[:3] for s in shapes[1]] == [s[:3] for s in shapes[2]]
    for saga in forms:
        assert (saga.key, saga.deadline, saga.queue) == ("place_order@3", 600.0, "orders")
        create, charge, email = saga.steps
        assert create.retry_policy == Retry(attempts=1)
        assert charge.retry_policy == Retry(attempts=1)
        assert email.retry_policy.attempts is None  # retriable: until it succeeds
        assert create.compensation_retry == Retry(attempts=5, backoff=0.2, max_backoff=30.0)
    assert forms[0].steps[2].retry_capped(4).attempts == 4  # what --max-attempts does
    out = await run_main(example, capsys)
    assert out == expected_output("orchestration/declaring_sagas.py")


async def test_a_flaky_step_succeeds_on_attempt_three_with_one_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/retries_and_backoff.py")
    store = MemoryStore()
    engine = Engine(store, [example.reserve])
    done = await engine.run(example.reserve, {"seat": "1A"}, saga_id="f-1")
    assert done.status is SagaStatus.COMPLETED
    assert example.attempts == [1, 2, 3]
    assert example.keys == ["f-1:hold_seat:action"] * 3
    state = await state_of(store, "f-1")
    assert state.by_name["hold_seat"].attempts == 3
    failed = [r for r in state.records if r.type is RecordType.STEP_FAILED]
    waits = [json.loads(r.data or "{}")["retry_at"] - r.at for r in failed]
    # backoff 0.01, multiplier 2, jitter 10%: the due times in the log say so
    assert 0.005 <= waits[0] <= 0.0111 and 0.014 <= waits[1] <= 0.0221, waits
    example.attempts.clear()
    refused = await engine.run(example.reserve, {"seat": "13A"}, saga_id="f-2")
    assert refused.status is SagaStatus.COMPENSATED and example.attempts == [1]
    [failure] = payloads(await state_of(store, "f-2"), RecordType.STEP_FAILED)
    assert failure["error"]["type"] == "ValueError" and failure["retry_at"] is None
    out = await run_main(load("orchestration/retries_and_backoff.py"), capsys)
    assert out == expected_output("orchestration/retries_and_backoff.py")


async def test_the_step_context_holds_what_the_page_lists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/step_context.py")
    store = MemoryStore()
    await Engine(store, [example.order]).run(example.order, {"items": ["a", "b"]}, saga_id="x")
    assert example.seen["input"] == {"items": ["a", "b"]}  # the first step's clear() is not seen
    assert example.seen["idempotency_key"] == idempotency_key("x", "ship")
    assert example.seen["results"] == {"charge_card": {"payment_id": "pay-3"}}
    state = await state_of(store, "x")
    assert state.input == {"items": ["a", "b"]}  # nor is it in the log
    out = await run_main(load("orchestration/step_context.py"), capsys)
    assert out == expected_output("orchestration/step_context.py")


async def test_the_compensation_context_result_error_keys_and_attempts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/compensation_context.py")
    store = MemoryStore()
    result = await Engine(store, [example.event]).run(
        example.event, {"seats": ["C1", "B7"]}, saga_id="e-2"
    )
    assert result.status is SagaStatus.COMPENSATED and example.held == {}
    partial = example.undo_calls[0]
    assert partial["result"] is None and partial["error"]["message"] == "seat B7 is taken"
    assert "traceback" in partial["error"]
    assert (partial["key"], partial["action_key"]) == (
        "e-2:hold_seats:compensation",
        "e-2:hold_seats:action",
    )
    state = await state_of(store, "e-2")
    assert [(t, s, a) for t, s, a in trail(state) if t.startswith("compensation")] == [
        ("compensation_started", "hold_seats", 1),
        ("compensation_succeeded", "hold_seats", 1),
        ("compensation_started", "sell_ticket", 1),
        ("compensation_failed", "sell_ticket", 1),
        ("compensation_started", "sell_ticket", 2),
        ("compensation_succeeded", "sell_ticket", 2),
    ]
    assert state.by_name["sell_ticket"].compensation_attempts == 2
    assert state.by_name["sell_ticket"].attempts == 1  # counted apart from the action's
    out = await run_main(load("orchestration/compensation_context.py"), capsys)
    assert out == expected_output("orchestration/compensation_context.py")


async def test_a_sync_step_runs_in_a_thread_and_leaves_the_loop_free(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/sync_step.py")
    out = await run_main(example, capsys)
    assert out == expected_output("orchestration/sync_step.py")
    gate, entered = example.threading.Event(), asyncio.Event()
    saga = example.invoice_saga(gate, entered)
    assert not saga.steps[0].action_is_async and not saga.steps[0].compensation_is_async
    running = asyncio.create_task(Engine(MemoryStore(), [saga]).run(saga, {}))
    await entered.wait()
    assert not running.done()  # blocked in its thread while this coroutine runs
    gate.set()
    assert (await running).results["render_pdf"]["gate_opened"] is True


async def test_a_sync_timeout_fails_the_step_but_the_thread_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/sync_timeout.py")
    gate, finished = example.threading.Event(), asyncio.Event()
    saga = example.export_saga(gate, finished)
    store = MemoryStore()
    result = await Engine(store, [saga]).run(saga, {}, saga_id="r-9")
    assert result.status is SagaStatus.COMPENSATED
    state = await state_of(store, "r-9")
    [failure] = payloads(state, RecordType.STEP_FAILED, "upload")
    assert failure["error"]["type"] == error_type(StepTimeoutError)
    assert state.by_name["create_draft"].status is StepStatus.COMPENSATED
    assert example.late_effects == []
    gate.set()
    await finished.wait()
    assert example.late_effects == ["uploaded under r-9:upload:action"]
    out = await run_main(load("orchestration/sync_timeout.py"), capsys)
    assert out == expected_output("orchestration/sync_timeout.py")


async def test_a_step_timeout_cancels_the_call_and_retries_with_the_same_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/step_timeout.py")
    store = MemoryStore()
    engine = Engine(store, [example.quote])
    await engine.run(example.quote, {"carrier": "slow-once"}, saga_id="q-1")
    assert example.cancelled == [1]
    state = await state_of(store, "q-1")
    assert [(t, a) for t, s, a in trail(state) if s == "ask_carrier"] == [
        ("step_started", 1),
        ("step_failed", 1),
        ("step_started", 2),
        ("step_succeeded", 2),
    ]
    [timeout] = payloads(state, RecordType.STEP_FAILED)
    assert timeout["error"]["type"] == error_type(StepTimeoutError)
    assert timeout["retry_at"] is not None
    hung = await engine.run(example.quote, {"carrier": "hangs"}, saga_id="q-2")
    assert hung.status is SagaStatus.COMPENSATED
    last = payloads(await state_of(store, "q-2"), RecordType.STEP_FAILED)[-1]
    assert last["retry_at"] is None  # attempts used up
    out = await run_main(load("orchestration/step_timeout.py"), capsys)
    assert out == expected_output("orchestration/step_timeout.py")


async def test_the_deadline_cuts_off_a_step_before_the_pivot_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/deadline.py")
    assert example.booking.deadline == 0.3
    store = MemoryStore()
    engine = Engine(store, [example.booking])
    late = await engine.run(example.booking, {"bank": "silent"}, saga_id="t-9")
    assert late.status is SagaStatus.COMPENSATED and example.released == [4]
    state = await state_of(store, "t-9")
    [cut] = payloads(state, RecordType.STEP_FAILED, "take_deposit")
    assert cut["error"]["type"] == error_type(SagaDeadlineError) and cut["retry_at"] is None
    [started] = payloads(state, RecordType.SAGA_STARTED)
    assert started["deadline_at"] == pytest.approx(state.records[0].at + 0.3, abs=0.01)
    done = await engine.run(example.booking, {"bank": "answers"}, saga_id="t-10")
    assert done.status is SagaStatus.COMPLETED
    after = await state_of(store, "t-10")
    assert after.deadline_at is not None
    assert after.records[-2].at > after.deadline_at  # finished after its deadline, forward
    out = await run_main(load("orchestration/deadline.py"), capsys)
    assert out == expected_output("orchestration/deadline.py")


async def test_a_result_that_is_not_json_fails_once_and_the_saga_compensates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/serialization_error.py")
    store = MemoryStore()
    engine = Engine(store, [example.renewal])
    result = await engine.run(example.renewal, {"member": 1}, saga_id="m-1")
    assert result.status is SagaStatus.COMPENSATED
    assert example.calls == ["extend_membership", "charge_fee 1", "cancel_renewal"]
    state = await state_of(store, "m-1")
    [failure] = payloads(state, RecordType.STEP_FAILED, "charge_fee")
    assert failure["error"]["type"] == error_type(SerializationError)
    assert failure["retry_at"] is None  # Retry(attempts=3) notwithstanding
    assert state.by_name["charge_fee"].status is StepStatus.FAILED  # not compensated
    with pytest.raises(SerializationError):
        await Client(store).start(example.renewal, {"when": example.datetime.date.today()})
    out = await run_main(load("orchestration/serialization_error.py"), capsys)
    assert out == expected_output("orchestration/serialization_error.py")


async def test_starting_one_saga_id_twice_is_one_instance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/idempotent_start.py")
    store = MemoryStore()
    engine = Engine(store, [example.checkout])
    first = await engine.run(example.checkout, {"cents": 1}, saga_id="c")
    again = await engine.run(example.checkout, {"cents": 1}, saga_id="c")
    assert first.results == again.results and again.results["charge"] == {"cents": 1}
    with pytest.raises(SagaIdConflictError, match="with another input"):
        await engine.run(example.checkout, {"cents": 2}, saga_id="c")
    assert example.charged == [1]
    assert len((await state_of(store, "c")).records) == 4  # started, started, succeeded, done
    client = Client(store)
    ids = {await client.start(example.checkout, {"cents": 3}, saga_id="d") for _ in range(3)}
    assert ids == {"d"} and [row.id for row in await store.unfinished()] == ["d"]
    out = await run_main(load("orchestration/idempotent_start.py"), capsys)
    assert out == expected_output("orchestration/idempotent_start.py")


async def test_a_step_waits_for_a_signal_and_is_called_again_with_its_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/wait_for_signal.py")
    store = MemoryStore()
    running = asyncio.create_task(
        Engine(store, [example.transfer]).run(example.transfer, {}, saga_id="tx-9")
    )
    await example.asked.wait()
    await Client(store).signal("tx-9", "transfer_cleared", {"reference": "R"})
    result = await running
    state = await state_of(store, "tx-9")
    [waiting] = payloads(state, RecordType.STEP_WAITING)
    assert waiting["signal"] == "transfer_cleared" and waiting["role"] == "action"
    assert waiting["until"] == pytest.approx(state.records[0].at + 3600, abs=5)
    [received] = payloads(state, RecordType.MESSAGE_RECEIVED)
    assert received["name"] == "transfer_cleared"
    assert result.results["await_clearing"] == {"reference": "R"}
    assert example.calls == [(1, "tx-9:await_clearing:action")] * 2
    assert [t for t, s, _ in trail(await state_of(store, "tx-9")) if s == "await_clearing"] == [
        "step_started",
        "step_waiting",
        "step_succeeded",
    ]
    with pytest.raises(OperatorActionError):  # it has ended: nothing would read it
        await Client(store).signal("tx-9", "transfer_cleared", {})
    out = await run_main(load("orchestration/wait_for_signal.py"), capsys)
    assert out == expected_output("orchestration/wait_for_signal.py")


async def test_a_wait_without_its_signal_times_out_and_compensates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/signal_timeout.py")
    store = MemoryStore()
    result = await Engine(store, [example.signup]).run(example.signup, {"email": "e"}, saga_id="v")
    assert result.status is SagaStatus.COMPENSATED and example.undone == ["acct-e"]
    state = await state_of(store, "v")
    [failure] = payloads(state, RecordType.STEP_FAILED, "await_click")
    assert failure["error"]["type"] == error_type(SignalTimeoutError)
    assert RecordType.STEP_WAITING in [r.type for r in state.records]
    out = await run_main(load("orchestration/signal_timeout.py"), capsys)
    assert out == expected_output("orchestration/signal_timeout.py")


async def test_a_client_starts_and_a_worker_drives_through_the_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/client_and_worker.py")
    out = await run_main(example, capsys)
    assert out == expected_output("orchestration/client_and_worker.py")
    store = await open_store(example.LOG)
    try:
        states = [await state_of(store, f"order-{n}") for n in (1, 2, 3)]
        assert await store.workers() == []  # a stopped worker retires
    finally:
        await store.close()
    assert [s.status for s in states] == [
        SagaStatus.COMPLETED,
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
    ]
    # recorded by the client, pending; then driven by the worker
    assert all(s.records[1].type is RecordType.STEP_STARTED for s in states)
    holder = json.loads(states[0].records[1].data or "{}")["holder"]
    assert not holder.startswith("client:")


def test_the_worker_command_drives_what_the_app_module_started(tmp_path: Path) -> None:
    example = load("orchestration/billing_app.py")
    asyncio.run(example.main())
    asyncio.run(example.check())  # recorded, pending: a Client runs nothing
    here = tmp_path / "run"
    shutil.copytree(EXAMPLES / "orchestration", here, ignore=shutil.ignore_patterns("*.db*"))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-eu", "run_billing_worker.sh"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for customer in ("acme", "globex", "initech"):
        assert f"inv-{customer}  send_invoice@1  completed" in lines
    assert "resumed 3 saga(s): 3 completed" in lines


async def test_versions_run_side_by_side_and_workers_claim_only_theirs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/versions_side_by_side.py")
    store = MemoryStore()
    client = Client(store)
    await client.start(example.order_v1, {}, saga_id="v1")
    stop = asyncio.Event()
    only_v2 = asyncio.create_task(Worker(store, [example.order_v2], poll=0.01).run(stop))
    await client.start(example.order_v2, {}, saga_id="v2")
    assert (await client.result("v2", timeout=30)).version == 2
    [old] = [info for info in await versions(store) if info.version == 1]
    assert old.in_flight == 1 and old.stranded and old.workers == []
    stop.set()
    await only_v2
    assert (await state_of(store, "v1")).status is SagaStatus.PENDING
    both = Engine(store, [example.order_v1, example.order_v2])
    [resumed] = await both.resume()
    assert (resumed.saga_id, resumed.version, list(resumed.results)) == (
        "v1",
        1,
        ["charge", "ship"],
    )
    with pytest.raises(SagaDefinitionError):  # one name@version, one definition
        both.register(example.Saga("place_order", version=2).add(example.ship, kind="pivot"))
    out = await run_main(load("orchestration/versions_side_by_side.py"), capsys)
    assert out == expected_output("orchestration/versions_side_by_side.py")


async def test_a_worker_drives_only_the_sagas_on_its_queues(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/queues.py")
    assert (example.refund.queue, example.label.queue) == ("payments", "shipping")
    worker = Worker(MemoryStore(), example.every_saga, queues=["shipping"])
    assert worker.engine.known == {"ship_parcel@1"}
    with pytest.raises(InvalidArgumentError, match="no saga is on queue billing"):
        Worker(MemoryStore(), example.every_saga, queues=["billing"])
    out = await run_main(example, capsys)
    assert out == expected_output("orchestration/queues.py")


async def test_a_cancel_compensates_before_the_pivot_and_is_refused_after(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load("orchestration/cancel_saga.py")
    store = MemoryStore()
    engine, client = Engine(store, [example.order]), Client(store)
    first = asyncio.create_task(engine.run(example.order, {"approve_first": False}, saga_id="c1"))
    await example.parked["before"].wait()
    assert await client.cancel("c1", reason="why", by="me") is False  # sent to its driver
    assert (await first).status is SagaStatus.COMPENSATED
    state = await state_of(store, "c1")
    [request] = payloads(state, RecordType.CANCEL_REQUESTED)
    assert request == {"by": "me", "reason": "why"}
    assert payloads(state, RecordType.SAGA_COMPENSATING) == [{"reason": "cancelled by me: why"}]
    assert state.by_name["await_approval"].status is not StepStatus.COMPENSATED
    assert example.undone == ["refund pay-c1"]

    second = asyncio.create_task(engine.run(example.order, {"approve_first": True}, saga_id="c2"))
    await example.parked["after"].wait()
    with pytest.raises(OperatorActionError, match="passed its pivot"):
        await client.cancel("c2")
    await client.signal("c2", "collected")
    assert (await second).status is SagaStatus.COMPLETED
    kinds = [r.type for r in (await state_of(store, "c2")).records]
    assert RecordType.CANCEL_REQUESTED not in kinds  # refused before anything was recorded
    out = await run_main(load("orchestration/cancel_saga.py"), capsys)
    assert out == expected_output("orchestration/cancel_saga.py")


def test_every_example_on_these_pages_is_under_the_repository() -> None:
    for page in (CONCEPTS, ORCHESTRATION):
        for block in blocks(page):
            for path, _ in includes(block):
                assert path.is_relative_to(ROOT / "docs" / "examples")
