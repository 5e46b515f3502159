"""Recovery from the log alone: a new engine on the same store carries on a crashed instance.

A crash is simulated by a ``BaseException`` the engine does not catch, raised in the middle of
an action, a compensation or right after a write; the store then holds exactly what a killed
process would have left behind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from saga_fakes import Crash, Recorder, kinds, records_of

from sagakit import (
    CompensationContext,
    Engine,
    MemoryStore,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    StepStatus,
    UnknownSagaError,
    UnregisteredSagaError,
    idempotency_key,
)
from sagakit.log import Record, RecordType


def three_steps(rec: Recorder, name: str = "order", version: int = 1) -> Saga:
    return (
        Saga(name, version)
        .add(rec.action("a", "A"), compensate=rec.compensation("a"))
        .add(rec.action("b", "B", raises=[Crash()]), compensate=rec.compensation("b"))
        .add(rec.action("c", "C"), compensate=rec.compensation("c"))
    )


async def test_crash_inside_an_action_is_resumed_with_the_same_key_and_attempt() -> None:
    rec = Recorder()
    saga = three_steps(rec)
    store = MemoryStore()

    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, {"order": 1}, saga_id="x")

    stored = await store.load("x")
    assert stored is not None
    assert stored.instance.status is SagaStatus.RUNNING
    last = stored.records[-1]
    assert (last.type, last.step, last.attempt) == (RecordType.STEP_STARTED, "b", 1)
    assert [i.id for i in await store.unfinished()] == ["x"]

    results = await Engine(store, [saga]).resume()

    assert len(results) == 1
    assert results[0].saga_id == "x"
    assert results[0].status is SagaStatus.COMPLETED
    assert dict(results[0].results) == {"a": "A", "b": "B", "c": "C"}
    assert rec.order() == [("action", "a"), ("action", "b"), ("action", "b"), ("action", "c")]
    b_calls = rec.of("action", "b")
    assert [c.attempt for c in b_calls] == [1, 1]
    assert [c.key for c in b_calls] == [idempotency_key("x", "b")] * 2
    assert b_calls[1].ctx.input == {"order": 1}
    assert b_calls[1].results == {"a": "A"}
    state = await Engine(store).status("x")
    assert state.status is SagaStatus.COMPLETED
    assert [r.seq for r in state.records] == list(range(len(state.records)))
    # the started record is not written twice: the resumed call belongs to it
    assert [r.attempt for r in records_of(state, RecordType.STEP_STARTED, "b")] == [1]
    assert await store.unfinished() == []


async def test_crash_in_the_first_step_is_resumed() -> None:
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", "A", raises=[Crash()]), compensate=rec.compensation("a"))
    store = MemoryStore()
    with pytest.raises(Crash):
        await Engine(store).run(saga, saga_id="x")
    stored = await store.load("x")
    assert stored is not None
    assert [(r.type, r.step) for r in stored.records] == [
        (RecordType.SAGA_STARTED, None),
        (RecordType.STEP_STARTED, "a"),
    ]
    result = await Engine(store, [saga]).resume_saga("x")
    assert result.status is SagaStatus.COMPLETED
    assert [c.attempt for c in rec.of("action", "a")] == [1, 1]


async def test_crash_inside_a_compensation_resumes_compensating() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", "A"), compensate=rec.compensation("a"))
        .add(rec.action("b", "B"), compensate=rec.compensation("b", raises=[Crash()]))
        .add(rec.action("c", always=RuntimeError("declined")), compensate=rec.compensation("c"))
    )
    store = MemoryStore()

    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, saga_id="x")

    stored = await store.load("x")
    assert stored is not None
    assert stored.instance.status is SagaStatus.COMPENSATING
    last = stored.records[-1]
    assert (last.type, last.step, last.attempt) == (RecordType.COMPENSATION_STARTED, "b", 1)

    [result] = await Engine(store, [saga]).resume()

    assert result.status is SagaStatus.COMPENSATED
    assert result.reason is not None
    assert "declined" in result.reason
    assert rec.order() == [
        ("action", "a"),
        ("action", "b"),
        ("action", "c"),
        ("compensation", "b"),
        ("compensation", "b"),
        ("compensation", "a"),
    ]
    b_undos = rec.of("compensation", "b")
    assert [c.attempt for c in b_undos] == [1, 1]
    assert [c.key for c in b_undos] == [idempotency_key("x", "b", "compensation")] * 2
    undo_ctx = b_undos[1].ctx
    assert isinstance(undo_ctx, CompensationContext)
    assert undo_ctx.result == "B"
    state = await Engine(store).status("x")
    assert [s.status for s in state.steps] == [
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.FAILED,
    ]


class CrashAfterWrite(MemoryStore):
    """Dies right after durably appending a record of ``kind`` (once)."""

    def __init__(self, kind: RecordType) -> None:
        super().__init__()
        self.kind: RecordType | None = kind

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        await super().append(saga_id, records, status)
        if self.kind is not None and any(r.type is self.kind for r in records):
            self.kind = None
            raise Crash


async def test_crash_during_a_retry_back_off_resumes_and_retries() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", "A"), compensate=rec.compensation("a"))
        .add(
            rec.action("b", "B", raises=[ConnectionError("down")]),
            compensate=rec.compensation("b"),
            retry=Retry(attempts=3, backoff=0.02, jitter=0),
        )
    )
    store = CrashAfterWrite(RecordType.STEP_FAILED)

    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, saga_id="x")

    stored = await store.load("x")
    assert stored is not None
    failed = stored.records[-1]
    assert (failed.type, failed.step, failed.attempt) == (RecordType.STEP_FAILED, "b", 1)
    assert failed.data is not None
    retry_at = json.loads(failed.data)["retry_at"]
    assert retry_at is not None

    [result] = await Engine(store, [saga]).resume()

    assert result.status is SagaStatus.COMPLETED
    b_calls = rec.of("action", "b")
    assert [c.attempt for c in b_calls] == [1, 2]
    assert [c.key for c in b_calls] == [idempotency_key("x", "b")] * 2
    assert rec.count("action", "a") == 1
    state = await Engine(store).status("x")
    second_start = records_of(state, RecordType.STEP_STARTED, "b")[1]
    assert second_start.attempt == 2
    # the stored due time is honoured after the restart (1 ms for clock granularity)
    assert second_start.at >= retry_at - 0.001


async def test_crash_during_a_compensation_back_off_resumes() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(
            rec.action("a", "A"),
            compensate=rec.compensation("a", raises=[RuntimeError("busy")]),
            compensation_retry=Retry(attempts=3, backoff=0, jitter=0),
        )
        .add(rec.action("b", always=RuntimeError("declined")), compensate=rec.compensation("b"))
    )
    store = CrashAfterWrite(RecordType.COMPENSATION_FAILED)
    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, saga_id="x")
    [result] = await Engine(store, [saga]).resume()
    assert result.status is SagaStatus.COMPENSATED
    assert [c.attempt for c in rec.of("compensation", "a")] == [1, 2]


async def test_crash_after_the_decision_to_compensate_resumes_compensating() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(rec.action("a", "A"), compensate=rec.compensation("a"))
        .add(rec.action("b", always=RuntimeError("declined")), compensate=rec.compensation("b"))
    )
    store = CrashAfterWrite(RecordType.SAGA_COMPENSATING)
    with pytest.raises(Crash):
        await Engine(store, [saga]).run(saga, saga_id="x")
    stored = await store.load("x")
    assert stored is not None
    assert stored.instance.status is SagaStatus.COMPENSATING
    [result] = await Engine(store, [saga]).resume()
    assert result.status is SagaStatus.COMPENSATED
    assert rec.order() == [("action", "a"), ("action", "b"), ("compensation", "a")]


async def test_an_unregistered_definition_is_left_alone_and_others_still_resume() -> None:
    """A saga this engine does not know is never touched: it waits, as it was, for an
    engine that registers its version (in a rolling deploy, the next worker)."""
    rec = Recorder()
    old = three_steps(rec, "legacy", 1)
    kept = three_steps(rec, "order", 1)
    store = MemoryStore()
    with pytest.raises(Crash):
        await Engine(store).run(old, saga_id="old")
    with pytest.raises(Crash):
        await Engine(store).run(kept, saga_id="kept")
    before = await store.load("old")
    calls_before = len(rec.calls)

    engine = Engine(store, [kept, Saga("legacy", 2).add(rec.action("z"), kind="pivot")])
    results = {r.saga_id: r for r in await engine.resume()}

    assert set(results) == {"kept"}
    assert results["kept"].status is SagaStatus.COMPLETED
    assert [(c.role, c.step) for c in rec.calls[calls_before:]] == [
        ("action", "b"),
        ("action", "c"),
    ]
    after = await store.load("old")
    assert after is not None and before is not None
    assert after.records == before.records and after.instance.status is SagaStatus.RUNNING
    with pytest.raises(UnregisteredSagaError, match="'legacy' version 1 is not registered"):
        await engine.resume_saga("old")
    [result] = await Engine(store, [old]).resume()
    assert result.status is SagaStatus.COMPLETED


async def test_an_engine_with_no_sagas_registered_resumes_nothing() -> None:
    rec = Recorder()
    saga = three_steps(rec)
    store = MemoryStore()
    with pytest.raises(Crash):
        await Engine(store).run(saga, saga_id="x")
    assert await Engine(store).resume() == []
    assert [i.id for i in await store.unfinished()] == ["x"]


async def test_resume_with_nothing_unfinished_does_nothing() -> None:
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", 1), compensate=rec.compensation("a"))
    store = MemoryStore()
    await Engine(store).run(saga, saga_id="x")
    assert await Engine(store, [saga]).resume() == []
    assert rec.count("action", "a") == 1


async def test_resume_saga_of_a_finished_instance_returns_it_as_it_is() -> None:
    rec = Recorder()
    saga = Saga("s").add(rec.action("a", 1), compensate=rec.compensation("a"))
    store = MemoryStore()
    first = await Engine(store).run(saga, saga_id="x")
    again = await Engine(store).resume_saga("x")  # not even registered: it is terminal
    assert again == first
    assert rec.count("action", "a") == 1


async def test_resume_saga_of_an_unknown_id_raises() -> None:
    with pytest.raises(UnknownSagaError):
        await Engine(MemoryStore()).resume_saga("missing")


async def test_the_same_engine_can_resume_after_a_crash() -> None:
    rec = Recorder()
    saga = three_steps(rec)
    store = MemoryStore()
    engine = Engine(store, [saga])
    with pytest.raises(Crash):
        await engine.run(saga, saga_id="x")
    result = await engine.resume_saga("x")
    assert result.status is SagaStatus.COMPLETED
    assert kinds(await engine.status("x"))[-1] == ("saga_completed", None, 0)


async def test_resume_is_idempotent_once_finished() -> None:
    rec = Recorder()
    saga = three_steps(rec)
    store = MemoryStore()
    with pytest.raises(Crash):
        await Engine(store).run(saga, saga_id="x")
    engine = Engine(store, [saga])
    [first] = await engine.resume()
    assert await engine.resume() == []
    assert await engine.resume_saga("x") == first
    assert rec.count("action", "c") == 1


async def test_two_engines_resuming_one_instance_do_not_both_drive_it() -> None:
    rec = Recorder()
    keys: list[str] = []

    async def b(ctx: StepContext) -> str:
        keys.append(ctx.idempotency_key)
        if len(keys) == 1:
            raise Crash
        return "B"

    saga = (
        Saga("order")
        .add(rec.action("a", "A"), compensate=rec.compensation("a"))
        .add(b, compensate=rec.compensation("b"))
        .add(rec.action("c", "C"), compensate=rec.compensation("c"))
    )
    store = MemoryStore()
    with pytest.raises(Crash):
        await Engine(store).run(saga, saga_id="x")

    first, second = Engine(store, [saga]), Engine(store, [saga])
    outcomes = await asyncio.gather(first.resume_saga("x"), second.resume_saga("x"))

    # the lease lets one of them drive the saga; the other reports it as it stands
    assert "completed" in [o.status.value for o in outcomes]
    assert keys == [idempotency_key("x", "b")] * 2  # the crashed call, made once more
    assert rec.count("action", "c") == 1
    state = await Engine(store).status("x")
    assert [r.seq for r in state.records] == list(range(len(state.records)))
    assert [r.type for r in state.records].count(RecordType.STEP_SUCCEEDED) == 3
    assert state.status is SagaStatus.COMPLETED


async def test_a_definition_changed_under_the_same_version_is_not_driven() -> None:
    store = MemoryStore()

    async def first(ctx: StepContext) -> None:
        raise Crash

    async def undo(ctx: CompensationContext) -> None:
        return None

    old = Saga("order", 1).add(first, name="charge", compensate=undo)
    with pytest.raises(Crash):
        await Engine(store).run(old, saga_id="x")

    new = Saga("order", 1).add(first, name="reserve", compensate=undo)
    result = await Engine(store, [new]).resume_saga("x")

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert result.reason is not None
    assert "started with steps [('charge', 'compensatable')]" in result.reason
    assert "needs a new version" in result.reason
