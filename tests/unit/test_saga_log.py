"""The saga log the engine writes, and the memory store that keeps it."""

from __future__ import annotations

import json

import pytest
from saga_fakes import Recorder, kinds

from sagakit import (
    ConcurrentUpdateError,
    Engine,
    MemoryStore,
    Retry,
    Saga,
    SagaState,
    SagaStatus,
    UnknownSagaError,
)
from sagakit.log import Instance, Record, RecordType
from sagakit.store import InstanceFilter


def saga_of(rec: Recorder, name: str = "s", fail: str | None = None) -> Saga:
    saga = Saga(name)
    for step in ("a", "b", "c"):
        action = rec.action(step, f"{step}!")
        if step == fail:
            action = rec.action(step, always=RuntimeError(f"{step} failed"))
        saga.add(action, compensate=rec.compensation(step))
    return saga


async def test_log_of_a_three_step_success() -> None:
    rec = Recorder()
    engine = Engine(MemoryStore())
    await engine.run(saga_of(rec), {"k": 1}, saga_id="x")
    state = await engine.status("x")

    assert [r.seq for r in state.records] == list(range(8))
    assert kinds(state) == [
        ("saga_started", None, 0),
        ("step_started", "a", 1),
        ("step_succeeded", "a", 1),
        ("step_started", "b", 1),
        ("step_succeeded", "b", 1),
        ("step_started", "c", 1),
        ("step_succeeded", "c", 1),
        ("saga_completed", None, 0),
    ]
    times = [r.at for r in state.records]
    assert times == sorted(times)
    started = json.loads(state.records[0].data or "null")
    assert started == {
        "name": "s",
        "version": 1,
        "steps": [
            {"name": "a", "kind": "compensatable"},
            {"name": "b", "kind": "compensatable"},
            {"name": "c", "kind": "compensatable"},
        ],
        "deadline_at": None,
        "input": {"k": 1},
    }
    assert state.records[2].data == json.dumps("a!")
    assert json.loads(state.records[1].data or "null") == {"holder": engine.owner}


async def test_log_of_a_compensation() -> None:
    rec = Recorder()
    engine = Engine(MemoryStore())
    await engine.run(saga_of(rec, fail="c"), saga_id="x")
    state = await engine.status("x")

    assert [r.seq for r in state.records] == list(range(len(state.records)))
    assert kinds(state) == [
        ("saga_started", None, 0),
        ("step_started", "a", 1),
        ("step_succeeded", "a", 1),
        ("step_started", "b", 1),
        ("step_succeeded", "b", 1),
        ("step_started", "c", 1),
        ("step_failed", "c", 1),
        ("saga_compensating", None, 0),
        ("compensation_started", "b", 1),
        ("compensation_succeeded", "b", 1),
        ("compensation_started", "a", 1),
        ("compensation_succeeded", "a", 1),
        ("saga_compensated", None, 0),
    ]
    events = state.as_dict()["events"]
    assert events[6]["data"]["error"].pop("traceback").endswith("RuntimeError: c failed\n")
    assert events[6]["data"] == {
        "error": {"type": "RuntimeError", "message": "c failed"},
        "retry_at": None,
    }
    assert events[7]["data"] == {"reason": "step 'c' failed: c failed"}


async def test_log_of_needs_attention() -> None:
    rec = Recorder()
    saga = (
        Saga("s")
        .add(
            rec.action("a", 1),
            compensate=rec.compensation("a", always=RuntimeError("nope")),
            compensation_retry=Retry(attempts=2, backoff=0),
        )
        .add(rec.action("b", always=RuntimeError("declined")), compensate=rec.compensation("b"))
    )
    engine = Engine(MemoryStore())
    await engine.run(saga, saga_id="x")
    state = await engine.status("x")
    assert kinds(state)[5:] == [
        ("saga_compensating", None, 0),
        ("compensation_started", "a", 1),
        ("compensation_failed", "a", 1),
        ("compensation_started", "a", 2),
        ("compensation_failed", "a", 2),
        ("saga_needs_attention", None, 0),
    ]
    last = state.as_dict()["events"][-1]["data"]
    assert last["failed"] == ["a"]
    assert "declined" in last["reason"]


async def test_as_dict_is_json_with_lower_case_statuses() -> None:
    rec = Recorder()
    engine = Engine(MemoryStore())
    await engine.run(saga_of(rec, fail="b"), {"order": 7}, saga_id="x")
    view = (await engine.status("x")).as_dict()
    assert json.loads(json.dumps(view)) == view
    assert view["id"] == "x"
    assert view["status"] == "compensated"
    assert view["input"] == {"order": 7}
    assert view["failed_compensations"] == []
    assert view["started_at"] <= view["updated_at"]
    assert [(s["name"], s["status"]) for s in view["steps"]] == [
        ("a", "compensated"),
        ("b", "failed"),
        ("c", "skipped"),
    ]
    assert view["steps"][0]["result"] == "a!"
    error = dict(view["steps"][1]["error"])
    assert error.pop("traceback").endswith("RuntimeError: b failed\n")
    assert error == {"type": "RuntimeError", "message": "b failed"}
    assert [e["seq"] for e in view["events"]] == list(range(len(view["events"])))
    assert "events" not in (await engine.status("x")).as_dict(events=False)


async def test_state_rebuilt_from_the_store_is_the_same_state() -> None:
    rec = Recorder()
    store = MemoryStore()
    engine = Engine(store)
    result = await engine.run(saga_of(rec, fail="c"), saga_id="x")
    stored = await store.load("x")
    assert stored is not None
    rebuilt = SagaState.from_records("x", stored.records)
    assert rebuilt == await engine.status("x")
    assert rebuilt.status is result.status
    assert rebuilt.reason == result.reason
    assert dict(rebuilt.results) == dict(result.results)


async def test_instances_reflect_final_statuses() -> None:
    rec = Recorder()
    store = MemoryStore()
    engine = Engine(store)
    broken = Saga("broken").add(
        rec.action("a", 1),
        compensate=rec.compensation("a", always=RuntimeError("x")),
        compensation_retry=Retry(attempts=1),
    )
    broken.add(rec.action("b", always=RuntimeError("y")), compensate=rec.compensation("b"))
    good = saga_of(rec)
    await engine.run(good, saga_id="ok-1")
    await engine.run(saga_of(rec, "failing", fail="b"), saga_id="undone")
    await engine.run(broken, saga_id="stuck")
    await engine.run(good, saga_id="ok-2")

    def ids(instances: list[Instance]) -> list[str]:
        return [i.id for i in instances]

    assert ids(await store.instances()) == ["ok-2", "stuck", "undone", "ok-1"]
    assert ids(await store.instances(limit=2)) == ["ok-2", "stuck"]

    def having(status: SagaStatus) -> InstanceFilter:
        return InstanceFilter(statuses={status})

    assert ids(await store.instances(having(SagaStatus.COMPLETED))) == ["ok-2", "ok-1"]
    assert ids(await store.instances(having(SagaStatus.COMPLETED), limit=1)) == ["ok-2"]
    assert ids(await store.instances(having(SagaStatus.COMPENSATED))) == ["undone"]
    assert ids(await store.instances(having(SagaStatus.NEEDS_ATTENTION))) == ["stuck"]
    assert await store.instances(having(SagaStatus.RUNNING)) == []
    assert await store.unfinished() == []
    undone = (await store.instances(having(SagaStatus.COMPENSATED)))[0]
    assert (undone.name, undone.version) == ("failing", 1)
    assert undone.created_at <= undone.updated_at
    stored = await store.load("undone")
    assert stored is not None
    assert stored.instance == undone
    assert undone.updated_at == stored.records[-1].at


async def test_appending_at_a_taken_seq_is_refused() -> None:
    rec = Recorder()
    store = MemoryStore()
    await Engine(store).run(saga_of(rec), saga_id="x")
    before = await store.load("x")
    assert before is not None
    taken = len(before.records) - 1
    record = Record(taken, RecordType.SAGA_COMPLETED, 0.0)
    with pytest.raises(ConcurrentUpdateError) as caught:
        await store.append("x", [record], SagaStatus.COMPLETED)
    assert caught.value.saga_id == "x"
    assert caught.value.seq == taken
    with pytest.raises(ConcurrentUpdateError):
        await store.append("x", [Record(0, RecordType.SAGA_COMPLETED, 0.0)], SagaStatus.COMPLETED)
    after = await store.load("x")
    assert after is not None
    assert after.records == before.records


async def test_appending_with_a_gap_is_refused() -> None:
    store = MemoryStore()
    instance = Instance("x", "s", 1, SagaStatus.RUNNING, 0.0, 0.0)
    assert await store.create(instance, [Record(0, RecordType.SAGA_STARTED, 0.0)])
    with pytest.raises(ConcurrentUpdateError):
        await store.append("x", [Record(2, RecordType.SAGA_COMPLETED, 0.0)], SagaStatus.COMPLETED)


async def test_memory_store_basics() -> None:
    store = MemoryStore()
    instance = Instance("x", "s", 1, SagaStatus.RUNNING, 1.0, 1.0)
    first = [Record(0, RecordType.SAGA_STARTED, 1.0)]
    assert await store.create(instance, first)
    assert not await store.create(instance, first)  # the id is taken
    with pytest.raises(UnknownSagaError):
        await store.append("y", [Record(0, RecordType.SAGA_STARTED, 1.0)], SagaStatus.RUNNING)
    assert await store.load("y") is None
    await store.append("x", [Record(1, RecordType.SAGA_COMPLETED, 2.0)], SagaStatus.COMPLETED)
    stored = await store.load("x")
    assert stored is not None
    assert [r.seq for r in stored.records] == [0, 1]
    assert stored.instance.status is SagaStatus.COMPLETED
    assert stored.instance.updated_at == 2.0
    assert stored.instance.created_at == 1.0
    stored.records.clear()  # a caller's copy: the log is unchanged
    again = await store.load("x")
    assert again is not None
    assert len(again.records) == 2
    assert store.url == "memory://"
    await store.close()


async def test_two_writers_of_one_instance_collide() -> None:
    rec = Recorder()
    store = MemoryStore()
    await Engine(store).run(saga_of(rec), saga_id="x")
    stored = await store.load("x")
    assert stored is not None
    n = len(stored.records)
    await store.append("x", [Record(n, RecordType.SAGA_COMPLETED, 0.0)], SagaStatus.COMPLETED)
    with pytest.raises(ConcurrentUpdateError):
        await store.append("x", [Record(n, RecordType.SAGA_COMPLETED, 0.0)], SagaStatus.COMPLETED)
