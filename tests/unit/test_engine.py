"""The engine against the memory store: forward path, compensation, retries, pivot, timeouts."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from typing import Any

import pytest
from saga_fakes import Recorder, records_of

from sagakit import (
    CompensationContext,
    CompensationImpossible,
    Engine,
    MemoryStore,
    Retry,
    Saga,
    SagaIdConflictError,
    SagaStatus,
    SerializationError,
    StepContext,
    StepStatus,
    UnknownSagaError,
    idempotency_key,
)
from sagakit.log import RecordType
from sagakit.orchestration import new_saga_id

FAST = Retry(attempts=3, backoff=0, jitter=0)
"""Three attempts, no waiting."""
ONCE = Retry(attempts=1)


def statuses(steps: list[Any]) -> dict[str, str]:
    return {s.name: s.status.value for s in steps}


def described(error: Any) -> dict[str, Any]:
    """An error as the log keeps it, less its traceback (``test_cli_show`` checks those)."""
    assert error is not None and isinstance(error.get("traceback"), str)
    return {key: value for key, value in error.items() if key != "traceback"}


# --- forward path --------------------------------------------------------------------------


async def test_steps_run_in_order_with_their_context() -> None:
    rec = Recorder()
    saga = (
        Saga("order")
        .add(rec.action("reserve", {"reservation": "r-1"}), compensate=rec.compensation("reserve"))
        .add(rec.action("charge", {"payment": "p-7", "amount": 12.5}), kind="pivot")
        .add(rec.action("email", "sent"), kind="retriable")
    )
    engine = Engine(MemoryStore())
    order_input = {"order": 42, "items": ["book", "pen"]}

    result = await engine.run(saga, order_input, saga_id="o-42")

    assert result.status is SagaStatus.COMPLETED
    assert result.saga_id == "o-42"
    assert (result.name, result.version) == ("order", 1)
    assert result.reason is None
    assert result.failed_compensations == ()
    assert dict(result.results) == {
        "reserve": {"reservation": "r-1"},
        "charge": {"payment": "p-7", "amount": 12.5},
        "email": "sent",
    }
    assert rec.order() == [("action", "reserve"), ("action", "charge"), ("action", "email")]
    seen: list[dict[str, Any]] = []
    for call in rec.calls:
        ctx = call.ctx
        assert isinstance(ctx, StepContext)
        assert ctx.saga_id == "o-42"
        assert ctx.saga_name == "order"
        assert ctx.input == order_input
        assert ctx.attempt == 1
        assert ctx.idempotency_key == idempotency_key("o-42", ctx.step)
        seen.append(call.results)
    assert seen == [
        {},
        {"reserve": {"reservation": "r-1"}},
        {"reserve": {"reservation": "r-1"}, "charge": {"payment": "p-7", "amount": 12.5}},
    ]
    state = await engine.status("o-42")
    assert state.status is SagaStatus.COMPLETED
    assert statuses(state.steps) == {
        "reserve": "succeeded",
        "charge": "succeeded",
        "email": "succeeded",
    }
    assert [s.as_dict()["result"] for s in state.steps] == [
        {"reservation": "r-1"},
        {"payment": "p-7", "amount": 12.5},
        "sent",
    ]
    assert state.input == order_input
    assert rec.of("compensation") == []


def test_idempotency_keys_differ_by_step_and_role() -> None:
    keys = {
        idempotency_key("s1", "a"),
        idempotency_key("s1", "b"),
        idempotency_key("s2", "a"),
        idempotency_key("s1", "a", "compensation"),
    }
    assert len(keys) == 4
    assert idempotency_key("s1", "a") == idempotency_key("s1", "a", "action")


async def test_each_step_gets_its_own_copy_of_earlier_results() -> None:
    mutated: list[Any] = []

    async def first(ctx: StepContext) -> dict[str, list[int]]:
        return {"ids": [1, 2]}

    async def second(ctx: StepContext) -> None:
        ctx.results["first"]["ids"].append(3)
        mutated.append(ctx.results["first"])

    async def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("s").add(first, compensate=undo).add(second, compensate=undo)
    engine = Engine(MemoryStore())
    result = await engine.run(saga)
    assert result.status is SagaStatus.COMPLETED
    assert mutated == [{"ids": [1, 2]}]
    assert result.results["first"] == {"ids": [1, 2]}


async def test_a_kept_context_does_not_see_later_results() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("b", 2), compensate=rec.compensation("b"))
    )
    await Engine(MemoryStore()).run(saga)
    assert dict(rec.of("action", "a")[0].ctx.results) == {}


async def test_sync_actions_and_compensations_run_in_a_thread() -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def reserve(ctx: StepContext) -> str:
        threads["reserve"] = threading.get_ident()
        return f"reserved {ctx.input['n']}"

    def release(ctx: CompensationContext) -> None:
        threads["release"] = threading.get_ident()
        assert ctx.result == "reserved 3"

    def charge(ctx: StepContext) -> None:
        threads["charge"] = threading.get_ident()
        raise RuntimeError("declined")

    saga = Saga("sync").add(reserve, compensate=release).add(charge, kind="pivot")
    engine = Engine(MemoryStore())

    result = await engine.run(saga, {"n": 3})

    assert result.status is SagaStatus.COMPENSATED
    assert result.results["reserve"] == "reserved 3"
    assert set(threads) == {"reserve", "release", "charge"}
    assert loop_thread not in threads.values()


async def test_sync_action_success_completes() -> None:
    def one(ctx: StepContext) -> int:
        return 1

    def two(ctx: StepContext) -> int:
        return int(ctx.results["one"]) + 1

    def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("s").add(one, compensate=undo).add(two, compensate=undo)
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.COMPLETED
    assert dict(result.results) == {"one": 1, "two": 2}


async def test_saga_id_is_generated_when_not_given() -> None:
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", 1), compensate=rec.compensation("a"))
    engine = Engine(MemoryStore())
    first = await engine.run(saga)
    second = await engine.run(saga)
    assert first.saga_id
    assert second.saga_id
    assert first.saga_id != second.saga_id
    assert rec.count("action", "a") == 2
    assert (await engine.status(first.saga_id)).status is SagaStatus.COMPLETED


def test_generated_ids_differ_between_a_process_and_its_forked_child() -> None:
    """The random half of an id comes from a generator the child re-seeds: a fork that
    copied it as it was would draw the parent's ids (a duplicate key in a shared log)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, new_saga_id().encode())
        os._exit(0)
    os.close(write_end)
    parent_id = new_saga_id()
    with os.fdopen(read_end) as pipe:
        child_id = pipe.read()
    os.waitpid(child, 0)
    assert len(child_id) == len(parent_id) == 32
    assert child_id[12:] != parent_id[12:]


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    random.seed(7)
    first = new_saga_id()
    random.seed(7)
    assert new_saga_id()[12:] != first[12:]


# --- failure before the pivot -----------------------------------------------------------------


def four_steps(rec: Recorder, fail: str, **options: Any) -> Saga:
    saga = Saga("order")
    for name in ("a", "b", "c", "d"):
        broken = RuntimeError(f"{name} broke") if name == fail else None
        saga.add(
            rec.action(name, {"id": f"{name}-1"}, always=broken),
            compensate=rec.compensation(name),
            **(options if name == fail else {}),
        )
    return saga


async def test_failure_compensates_completed_steps_in_reverse_order() -> None:
    rec = Recorder()
    engine = Engine(MemoryStore())

    result = await engine.run(four_steps(rec, "c"), {"order": 1}, saga_id="x")

    assert result.status is SagaStatus.COMPENSATED
    assert rec.order() == [
        ("action", "a"),
        ("action", "b"),
        ("action", "c"),
        ("compensation", "b"),
        ("compensation", "a"),
    ]
    assert result.reason is not None
    assert "'c'" in result.reason
    assert "c broke" in result.reason
    assert result.failed_compensations == ()
    state = await engine.status("x")
    assert statuses(state.steps) == {
        "a": "compensated",
        "b": "compensated",
        "c": "failed",
        "d": "skipped",
    }
    assert described(state.by_name["c"].error) == {"type": "RuntimeError", "message": "c broke"}
    assert state.by_name["c"].compensation_attempts == 0
    for call in rec.of("compensation"):
        ctx = call.ctx
        assert isinstance(ctx, CompensationContext)
        assert ctx.saga_id == "x"
        assert ctx.saga_name == "order"
        assert ctx.input == {"order": 1}
        assert ctx.result == {"id": f"{ctx.step}-1"}
        assert ctx.error is None
        assert ctx.attempt == 1
        assert ctx.action_key == idempotency_key("x", ctx.step)
        assert ctx.idempotency_key == idempotency_key("x", ctx.step, "compensation")
        assert ctx.idempotency_key != ctx.action_key
        assert call.results == {"a": {"id": "a-1"}, "b": {"id": "b-1"}}


async def test_failure_of_the_first_step_compensates_nothing() -> None:
    rec = Recorder()
    engine = Engine(MemoryStore())
    result = await engine.run(four_steps(rec, "a"), saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    assert rec.order() == [("action", "a")]
    state = await engine.status("x")
    assert statuses(state.steps) == {"a": "failed", "b": "skipped", "c": "skipped", "d": "skipped"}
    assert dict(result.results) == {}


async def test_compensate_on_failure_undoes_the_failed_step_first() -> None:
    rec = Recorder()
    engine = Engine(MemoryStore())

    result = await engine.run(
        four_steps(rec, "c", compensate_on_failure=True), {"order": 1}, saga_id="x"
    )

    assert result.status is SagaStatus.COMPENSATED
    assert rec.of("compensation") == rec.calls[3:]
    assert [c.step for c in rec.of("compensation")] == ["c", "b", "a"]
    ctx = rec.of("compensation", "c")[0].ctx
    assert isinstance(ctx, CompensationContext)
    assert ctx.result is None
    assert described(ctx.error) == {"type": "RuntimeError", "message": "c broke"}
    assert ctx.action_key == idempotency_key("x", "c")
    assert ctx.input == {"order": 1}
    state = await engine.status("x")
    assert statuses(state.steps) == {
        "a": "compensated",
        "b": "compensated",
        "c": "compensated",
        "d": "skipped",
    }


async def test_compensation_of_a_step_that_succeeded_on_retry_has_no_error() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(
            rec.action("a", "ok", raises=[ConnectionError("flaky")]),
            compensate=rec.compensation("a"),
            retry=FAST,
        )
        .add(rec.action("b", always=RuntimeError("no")), compensate=rec.compensation("b"))
    )
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.COMPENSATED
    ctx = rec.of("compensation", "a")[0].ctx
    assert isinstance(ctx, CompensationContext)
    assert ctx.result == "ok"
    assert ctx.error is None


# --- retries ----------------------------------------------------------------------------------


async def test_transient_failures_are_retried_with_the_same_key() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("b", "ok", raises=[ConnectionError("down"), TimeoutError("slow")]),
            compensate=rec.compensation("b"),
            retry=FAST,
        )
    )
    engine = Engine(MemoryStore())

    result = await engine.run(saga, saga_id="x")

    assert result.status is SagaStatus.COMPLETED
    assert result.results["b"] == "ok"
    calls = rec.of("action", "b")
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert {c.key for c in calls} == {idempotency_key("x", "b")}
    state = await engine.status("x")
    assert [r.attempt for r in records_of(state, RecordType.STEP_STARTED, "b")] == [1, 2, 3]
    failures = records_of(state, RecordType.STEP_FAILED, "b")
    assert [r.attempt for r in failures] == [1, 2]
    events = {e["seq"]: e for e in state.as_dict()["events"]}
    for record in failures:
        data = events[record.seq]["data"]
        assert data["retry_at"] is not None
        assert data["retry_at"] >= state.records[0].at
    assert [described(events[r.seq]["data"]["error"]) for r in failures] == [
        {"type": "ConnectionError", "message": "down"},
        {"type": "TimeoutError", "message": "slow"},
    ]
    assert state.by_name["b"].attempts == 3
    assert state.by_name["b"].status is StepStatus.SUCCEEDED
    assert state.by_name["b"].retry_at is None
    assert rec.of("compensation") == []


async def test_error_outside_retry_on_fails_at_once() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("b", always=ValueError("bad card number")),
            compensate=rec.compensation("b"),
            retry=Retry(attempts=5, backoff=0, retry_on=(ConnectionError,)),
        )
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    assert rec.count("action", "b") == 1
    assert rec.order()[-1] == ("compensation", "a")
    failed = records_of(await engine.status("x"), RecordType.STEP_FAILED, "b")
    assert len(failed) == 1
    assert (await engine.status("x")).by_name["b"].retry_at is None


async def test_error_inside_retry_on_is_retried() -> None:
    rec = Recorder()
    saga = Saga("s").add(
        rec.action("a", 1, raises=[ConnectionRefusedError("refused")]),
        compensate=rec.compensation("a"),
        retry=Retry(attempts=5, backoff=0, retry_on=(ConnectionError,)),
    )
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.COMPLETED
    assert rec.count("action", "a") == 2


async def test_exhausted_retries_compensate() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("b", always=ConnectionError("down")),
            compensate=rec.compensation("b"),
            retry=FAST,
        )
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    assert [c.attempt for c in rec.of("action", "b")] == [1, 2, 3]
    assert rec.order()[4:] == [("compensation", "a")]
    state = await engine.status("x")
    failed = records_of(state, RecordType.STEP_FAILED, "b")
    retry_ats = [state.as_dict()["events"][r.seq]["data"]["retry_at"] for r in failed]
    assert [r is None for r in retry_ats] == [False, False, True]
    assert state.by_name["b"].status is StepStatus.FAILED


# --- compensation failures -----------------------------------------------------------------


async def test_compensation_is_retried_with_its_policy() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(
            rec.action("a", 1),
            compensate=rec.compensation("a", raises=[RuntimeError("x"), RuntimeError("y")]),
            compensation_retry=FAST,
        )
        .add(rec.action("b", always=RuntimeError("no")), compensate=rec.compensation("b"))
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    calls = rec.of("compensation", "a")
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert {c.key for c in calls} == {idempotency_key("x", "a", "compensation")}
    state = await engine.status("x")
    started = records_of(state, RecordType.COMPENSATION_STARTED, "a")
    assert [r.attempt for r in started] == [1, 2, 3]
    assert [r.attempt for r in records_of(state, RecordType.COMPENSATION_FAILED, "a")] == [1, 2]
    assert state.by_name["a"].status is StepStatus.COMPENSATED
    assert state.by_name["a"].compensation_attempts == 3


async def test_a_compensation_that_keeps_failing_needs_attention_but_the_others_run() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("b", 2),
            compensate=rec.compensation("b", always=RuntimeError("refund API down")),
            compensation_retry=Retry(attempts=2, backoff=0),
        )
        .add(rec.action("c", 3), compensate=rec.compensation("c"))
        .add(rec.action("d", always=RuntimeError("out of stock")), compensate=rec.compensation("d"))
    )
    engine = Engine(MemoryStore())

    result = await engine.run(saga, saga_id="x")

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert result.failed_compensations == ("b",)
    assert rec.order()[4:] == [
        ("compensation", "c"),
        ("compensation", "b"),
        ("compensation", "b"),
        ("compensation", "a"),
    ]
    assert result.reason is not None
    assert "out of stock" in result.reason
    assert "b" in result.reason.split("compensation did not finish for", 1)[1]
    state = await engine.status("x")
    assert state.status is SagaStatus.NEEDS_ATTENTION
    assert state.failed_compensations == ["b"]
    assert statuses(state.steps) == {
        "a": "compensated",
        "b": "compensation_failed",
        "c": "compensated",
        "d": "failed",
    }
    assert described(state.by_name["b"].compensation_error) == {
        "type": "RuntimeError",
        "message": "refund API down",
    }
    last = state.as_dict()["events"][-1]
    assert last["type"] == "saga_needs_attention"
    assert last["data"]["failed"] == ["b"]


async def test_every_failed_compensation_is_named() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(
            rec.action("a", 1),
            compensate=rec.compensation("a", always=RuntimeError("x")),
            compensation_retry=ONCE,
        )
        .add(rec.action("b", 2), compensate=rec.compensation("b"))
        .add(
            rec.action("c", 3),
            compensate=rec.compensation("c", always=RuntimeError("y")),
            compensation_retry=ONCE,
        )
        .add(rec.action("d", always=RuntimeError("no")), compensate=rec.compensation("d"))
    )
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert set(result.failed_compensations) == {"a", "c"}
    assert [c.step for c in rec.of("compensation")] == ["c", "b", "a"]
    assert result.reason is not None
    assert "a" in result.reason
    assert "c" in result.reason


async def test_compensation_impossible_is_not_retried() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("ship", "parcel-9"),
            compensate=rec.compensation(
                "ship", always=CompensationImpossible("parcel already picked up")
            ),
            compensation_retry=Retry(attempts=5, backoff=0),
        )
        .add(rec.action("c", always=RuntimeError("no")), compensate=rec.compensation("c"))
    )
    engine = Engine(MemoryStore())

    result = await engine.run(saga, saga_id="x")

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert rec.count("compensation", "ship") == 1
    assert rec.count("compensation", "a") == 1
    assert result.failed_compensations == ("ship",)
    assert result.reason is not None
    assert "ship" in result.reason
    state = await engine.status("x")
    assert described(state.by_name["ship"].compensation_error) == {
        "type": "sagakit.errors.CompensationImpossible",
        "message": "parcel already picked up",
    }
    assert state.by_name["ship"].retry_at is None


# --- the pivot and after ----------------------------------------------------------------------


async def test_retriable_step_is_retried_forward_never_compensated() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("p", 2), kind="pivot")
        .add(
            rec.action("r", 3, raises=[RuntimeError("smtp")] * 4),
            kind="retriable",
            retry=Retry(attempts=None, backoff=0),
        )
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPLETED
    assert [c.attempt for c in rec.of("action", "r")] == [1, 2, 3, 4, 5]
    assert {c.key for c in rec.of("action", "r")} == {idempotency_key("x", "r")}
    assert rec.of("compensation") == []
    assert rec.count("action", "a") == 1
    assert rec.count("action", "p") == 1


async def test_retriable_step_that_exhausts_its_retries_needs_attention() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("p", 2), kind="pivot")
        .add(
            rec.action("r", always=RuntimeError("smtp down")),
            kind="retriable",
            retry=Retry(attempts=2, backoff=0),
        )
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert rec.count("action", "r") == 2
    assert rec.of("compensation") == []
    assert result.failed_compensations == ()
    assert result.reason is not None
    assert "'r'" in result.reason
    assert "smtp down" in result.reason
    state = await engine.status("x")
    assert statuses(state.steps) == {"a": "succeeded", "p": "succeeded", "r": "failed"}
    assert records_of(state, RecordType.SAGA_COMPENSATING) == []


async def test_pivot_failure_compensates_the_steps_before_it() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("b", 2), compensate=rec.compensation("b"))
        .add(rec.action("p", always=RuntimeError("declined")), kind="pivot")
        .add(rec.action("r", 3), kind="retriable")
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    assert rec.order() == [
        ("action", "a"),
        ("action", "b"),
        ("action", "p"),
        ("compensation", "b"),
        ("compensation", "a"),
    ]
    state = await engine.status("x")
    assert statuses(state.steps) == {
        "a": "compensated",
        "b": "compensated",
        "p": "failed",
        "r": "skipped",
    }


async def test_pivot_with_compensate_on_failure_is_undone_first() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("p", always=RuntimeError("half done")),
            kind="pivot",
            compensate=rec.compensation("p"),
            compensate_on_failure=True,
        )
    )
    result = await Engine(MemoryStore()).run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    assert [c.step for c in rec.of("compensation")] == ["p", "a"]
    ctx = rec.of("compensation", "p")[0].ctx
    assert isinstance(ctx, CompensationContext)
    assert ctx.result is None
    assert described(ctx.error) == {"type": "RuntimeError", "message": "half done"}


async def test_pivot_with_compensate_on_failure_is_not_undone_when_it_succeeds() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("p", 2),
            kind="pivot",
            compensate=rec.compensation("p"),
            compensate_on_failure=True,
        )
        .add(rec.action("r", always=RuntimeError("x")), kind="retriable", retry=ONCE)
    )
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert rec.of("compensation") == []


# --- timeouts and the deadline -----------------------------------------------------------


async def test_step_timeout_fails_the_step_and_compensates() -> None:
    rec = Recorder()
    never = asyncio.Event()

    async def hang(ctx: StepContext) -> None:
        await never.wait()

    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(hang, compensate=rec.compensation("hang"), timeout=0.05)
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    state = await engine.status("x")
    error = state.by_name["hang"].error
    assert error is not None
    assert "StepTimeoutError" in error["type"]
    assert "timed out after 0.05s" in error["message"]
    assert "'hang'" in error["message"]
    assert [c.step for c in rec.of("compensation")] == ["a"]
    assert state.by_name["hang"].status is StepStatus.FAILED


async def test_step_timeout_applies_to_sync_actions() -> None:
    release = threading.Event()

    def slow(ctx: StepContext) -> None:
        release.wait(5)  # bounded: the test sets it as soon as the engine gave up

    async def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("s").add(slow, compensate=undo, timeout=0.05)
    engine = Engine(MemoryStore())
    try:
        result = await engine.run(saga, saga_id="x")
    finally:
        release.set()
    assert result.status is SagaStatus.COMPENSATED
    error = (await engine.status("x")).by_name["slow"].error
    assert error is not None
    assert "StepTimeoutError" in error["type"]


async def test_timed_out_step_is_retried_when_its_policy_allows() -> None:
    never = asyncio.Event()
    attempts: list[int] = []

    async def sometimes_hangs(ctx: StepContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            await never.wait()
        return "done"

    async def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("s").add(sometimes_hangs, compensate=undo, timeout=0.05, retry=FAST)
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.COMPLETED
    assert attempts == [1, 2]


async def test_compensation_timeout_counts_as_a_compensation_failure() -> None:
    rec = Recorder()
    never = asyncio.Event()

    async def hang(ctx: CompensationContext) -> None:
        await never.wait()

    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=hang, timeout=0.05, compensation_retry=ONCE)
        .add(rec.action("b", always=RuntimeError("no")), compensate=rec.compensation("b"))
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert result.failed_compensations == ("a",)
    error = (await engine.status("x")).by_name["a"].compensation_error
    assert error is not None
    assert "StepTimeoutError" in error["type"]


def deadline_saga(rec: Recorder, never: asyncio.Event) -> Saga:
    async def block(ctx: StepContext) -> None:
        await never.wait()

    return (
        Saga("d", deadline=0.05)
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(block, compensate=rec.compensation("block"))
    )


async def test_deadline_cuts_a_blocking_step_short_and_compensates() -> None:
    rec = Recorder()
    engine = Engine(MemoryStore())
    result = await engine.run(deadline_saga(rec, asyncio.Event()), saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    assert [c.step for c in rec.of("compensation")] == ["a"]
    state = await engine.status("x")
    assert state.deadline_at is not None
    assert state.deadline_at == pytest.approx(state.records[0].at + 0.05)
    assert state.by_name["block"].status is StepStatus.FAILED


async def test_deadline_reason_mentions_the_deadline() -> None:
    rec = Recorder()
    result = await Engine(MemoryStore()).run(deadline_saga(rec, asyncio.Event()))
    assert result.status is SagaStatus.COMPENSATED
    assert result.reason is not None
    assert "deadline" in result.reason


async def test_deadline_passed_during_a_back_off_compensates() -> None:
    rec = Recorder()
    saga = (
        Saga("d", deadline=0.05)
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(
            rec.action("b", 2, raises=[ConnectionError("down")]),
            compensate=rec.compensation("b"),
            retry=Retry(attempts=3, backoff=0.08, jitter=0),
        )
    )
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.COMPENSATED
    assert rec.count("action", "b") == 1  # the retry would have started past the deadline
    assert result.reason is not None
    assert "deadline" in result.reason
    assert [c.step for c in rec.of("compensation")] == ["a"]


async def test_steps_after_the_pivot_are_not_bound_by_the_deadline() -> None:
    rec = Recorder()
    saga = (
        Saga("d", deadline=0.05)
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("p", 2), kind="pivot")
        .add(
            rec.action("r", 3, raises=[ConnectionError("down")]),
            kind="retriable",
            retry=Retry(attempts=3, backoff=0.08, jitter=0),
        )
    )
    result = await Engine(MemoryStore()).run(saga)
    assert result.status is SagaStatus.COMPLETED
    assert rec.count("action", "r") == 2
    assert rec.of("compensation") == []


# --- JSON -------------------------------------------------------------------------------------


class Opaque:
    pass


def cycle() -> list[Any]:
    looped: list[Any] = []
    looped.append(looped)
    return looped


@pytest.mark.parametrize(
    "bad_input",
    [{1, 2}, Opaque(), float("nan"), {"amount": float("inf")}, [b"bytes"], cycle()],
    ids=["set", "object", "nan", "inf-in-dict", "bytes-in-list", "cycle"],
)
async def test_input_that_is_not_json_is_refused_and_nothing_is_recorded(bad_input: Any) -> None:
    rec = Recorder()
    saga = Saga("order").add(rec.action("a", 1), compensate=rec.compensation("a"))
    store = MemoryStore()
    engine = Engine(store)
    with pytest.raises(SerializationError, match=r"saga 'order'.*the input") as caught:
        await engine.run(saga, bad_input, saga_id="x")
    assert caught.value.saga == "order"
    assert caught.value.step is None
    assert rec.calls == []
    assert await store.load("x") is None
    assert await store.instances() == []
    assert await store.unfinished() == []
    # the id is still free: a good input starts it normally
    assert (await engine.run(saga, {"ok": True}, saga_id="x")).status is SagaStatus.COMPLETED


@pytest.mark.parametrize(
    "bad_result",
    [{1, 2}, Opaque(), float("nan"), {(1, 2): "tuple key"}, cycle()],
    ids=["set", "object", "nan", "tuple-key", "cycle"],
)
async def test_result_that_is_not_json_fails_the_step_without_retry(bad_result: Any) -> None:
    rec = Recorder()
    saga = (
        Saga("order")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("b", bad_result), compensate=rec.compensation("b"), retry=FAST)
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga, saga_id="x")
    assert result.status is SagaStatus.COMPENSATED
    assert rec.count("action", "b") == 1
    assert [c.step for c in rec.of("compensation")] == ["a"]
    state = await engine.status("x")
    error = state.by_name["b"].error
    assert error is not None
    assert "SerializationError" in error["type"]
    assert "step 'b'" in error["message"]
    assert "not JSON-serialisable" in error["message"]
    assert state.by_name["b"].retry_at is None
    assert "b" not in state.raw_results
    assert result.reason is not None
    assert "'b'" in result.reason


async def test_json_values_round_trip() -> None:
    value = {"s": "é", "n": None, "t": True, "f": 1.5, "l": [1, {"x": []}], "big": 2**70}
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", value), compensate=rec.compensation("a"))
    result = await Engine(MemoryStore()).run(saga, value)
    assert result.results["a"] == value
    ctx = rec.calls[0].ctx
    assert ctx.input == value


# --- idempotent start ----------------------------------------------------------------------


async def test_running_the_same_id_twice_returns_the_first_outcome() -> None:
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", {"v": 1}), compensate=rec.compensation("a"))
    store = MemoryStore()
    engine = Engine(store)
    first = await engine.run(saga, {"n": 1}, saga_id="x")
    log_before = (await engine.status("x")).records
    second = await engine.run(saga, {"n": 1}, saga_id="x")
    assert second == first
    assert second.status is SagaStatus.COMPLETED
    assert rec.count("action", "a") == 1
    assert (await engine.status("x")).records == log_before
    assert len(await store.instances()) == 1


async def test_an_id_reused_for_another_saga_or_input_is_refused_and_records_nothing() -> None:
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", {"v": 1}), compensate=rec.compensation("a"))
    other = Saga("t").add(rec.action("b", 2), compensate=rec.compensation("b"))
    store = MemoryStore()
    engine = Engine(store, [saga, other])
    await engine.run(saga, {"n": 1, "m": [1, 2]}, saga_id="x")
    log_before = (await engine.status("x")).records
    with pytest.raises(SagaIdConflictError, match="'x' is already an instance of 's'"):
        await engine.run(other, {"n": 1, "m": [1, 2]}, saga_id="x")
    with pytest.raises(SagaIdConflictError, match="with another input"):
        await engine.run(saga, {"n": 2, "m": [1, 2]}, saga_id="x")
    same = await engine.run(saga, {"m": [1, 2], "n": 1}, saga_id="x")  # keys in another order
    assert same.status is SagaStatus.COMPLETED
    assert (await engine.status("x")).records == log_before
    assert rec.count("action", "b") == 0


async def test_rerunning_a_compensated_id_does_not_run_again() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("b", always=RuntimeError("no")), compensate=rec.compensation("b"))
    )
    engine = Engine(MemoryStore())
    first = await engine.run(saga, saga_id="x")
    calls = len(rec.calls)
    second = await engine.run(saga, saga_id="x")
    assert second == first
    assert second.status is SagaStatus.COMPENSATED
    assert len(rec.calls) == calls


async def test_a_second_engine_on_the_same_store_does_not_rerun() -> None:
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", 1), compensate=rec.compensation("a"))
    store = MemoryStore()
    first = await Engine(store).run(saga, saga_id="x")
    second = await Engine(store).run(saga, saga_id="x")
    assert second == first
    assert rec.count("action", "a") == 1


async def test_concurrent_runs_of_one_id_call_actions_once() -> None:
    rec = Recorder()
    gate = asyncio.Event()
    slow_calls: list[str] = []

    async def slow(ctx: StepContext) -> str:
        slow_calls.append(ctx.idempotency_key)
        await gate.wait()
        return "done"

    async def open_gate() -> None:
        gate.set()

    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(slow, compensate=rec.compensation("slow"))
    )
    engine = Engine(MemoryStore())

    first, second, _ = await asyncio.gather(
        engine.run(saga, {"n": 1}, saga_id="x"),
        engine.run(saga, {"n": 1}, saga_id="x"),
        open_gate(),
    )

    assert first == second
    assert first.status is SagaStatus.COMPLETED
    assert dict(first.results) == {"a": 1, "slow": "done"}
    assert rec.count("action", "a") == 1
    assert slow_calls == [idempotency_key("x", "slow")]


async def test_concurrent_runs_of_one_failing_id_compensate_once() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", 1), compensate=rec.compensation("a"))
        .add(rec.action("b", always=RuntimeError("no")), compensate=rec.compensation("b"))
    )
    engine = Engine(MemoryStore())
    results = await asyncio.gather(*(engine.run(saga, saga_id="x") for _ in range(3)))
    assert all(r == results[0] for r in results)
    assert results[0].status is SagaStatus.COMPENSATED
    assert rec.order() == [("action", "a"), ("action", "b"), ("compensation", "a")]


async def test_a_cancelled_joiner_does_not_break_the_run_or_the_other_joiners() -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow(ctx: StepContext) -> str:
        entered.set()
        await gate.wait()
        return "done"

    async def undo(ctx: CompensationContext) -> None:
        return None

    saga = Saga("s").add(slow, compensate=undo)
    engine = Engine(MemoryStore())
    driver = asyncio.create_task(engine.run(saga, saga_id="x"))
    await entered.wait()
    quitter = asyncio.create_task(engine.run(saga, saga_id="x"))
    patient = asyncio.create_task(engine.run(saga, saga_id="x"))
    await asyncio.sleep(0)  # one turn of the loop: both join the running instance
    quitter.cancel()
    gate.set()
    try:
        result = await driver
        assert result.status is SagaStatus.COMPLETED
        assert await patient == result
    finally:
        patient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_a_step_cannot_change_the_input_later_steps_see() -> None:
    seen: list[Any] = []

    async def meddle(ctx: StepContext) -> None:
        ctx.input["amount"] = 0

    async def look(ctx: StepContext) -> None:
        seen.append(dict(ctx.input))

    async def undo(ctx: CompensationContext) -> None:
        seen.append(dict(ctx.input))

    fail = Recorder().action("fail", always=RuntimeError("no"))
    saga = (
        Saga("s").add(meddle, compensate=undo).add(look, compensate=undo).add(fail, compensate=undo)
    )
    engine = Engine(MemoryStore())
    await engine.run(saga, {"amount": 10}, saga_id="x")
    assert (await engine.status("x")).input == {"amount": 10}
    assert seen == [{"amount": 10}] * 3  # look, then undo look, undo meddle


async def test_the_callers_input_is_copied_when_the_saga_starts() -> None:
    seen: list[Any] = []

    async def look(ctx: StepContext) -> None:
        seen.append(dict(ctx.input))

    async def undo(ctx: CompensationContext) -> None:
        return None

    order = {"amount": 10}
    saga = Saga("s").add(look, compensate=undo)
    engine = Engine(MemoryStore())
    await engine.run(saga, order, saga_id="x")
    order["amount"] = 0
    assert seen == [{"amount": 10}]
    assert (await engine.status("x")).input == {"amount": 10}


async def test_status_of_an_unknown_id_raises() -> None:
    with pytest.raises(UnknownSagaError, match="nope"):
        await Engine(MemoryStore()).status("nope")
