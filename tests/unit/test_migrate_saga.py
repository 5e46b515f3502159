"""``Client.migrate`` on a memory store: an in-flight saga moved to a newer version at a step
boundary is finished by a worker of the new version only, from where it stood; the log
replays to the same state; every refusal records nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from sagakit import (
    Client,
    CompensationContext,
    Engine,
    MemoryStore,
    OperatorActionError,
    Retry,
    Saga,
    SagaState,
    SagaStatus,
    StepContext,
    StepStatus,
)
from sagakit.errors import StepActionError
from sagakit.log import Journal, Record, RecordType

LATER = Retry(attempts=None, backoff=3600, jitter=0)
"""Retried for ever, an hour apart: the saga stays running, stopped after its last success."""
ONCE = Retry(attempts=1, backoff=0, jitter=0)


@dataclass
class Calls:
    """What the services were asked to do, with which keys, and what the last step saw."""

    made: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    undone: list[tuple[str, str, Any]] = field(default_factory=list)
    seen: dict[str, Any] = field(default_factory=dict)

    def call(self, ctx: StepContext) -> None:
        self.made.append(ctx.step)
        self.keys.append(ctx.idempotency_key)

    async def undo(self, ctx: CompensationContext) -> None:
        self.undone.append((ctx.step, ctx.action_key, ctx.result))


def v1(calls: Calls) -> Saga:
    """a (compensatable), b (pivot: its service is gone, retried hourly), c (retriable)."""
    saga = Saga("flow", 1)

    @saga.step(compensate=calls.undo)
    async def a(ctx: StepContext) -> dict[str, str]:
        calls.call(ctx)
        return {"hold": "h-1"}

    @saga.pivot(retry=LATER)
    async def b(ctx: StepContext) -> None:
        calls.call(ctx)
        if ctx.input.get("wait"):
            await ctx.wait_for("go")
        raise RuntimeError("b's service is gone")

    @saga.retriable()
    async def c(ctx: StepContext) -> str:
        calls.call(ctx)
        return "c1"

    return saga


def v2(calls: Calls, b2_fails: bool = False) -> Saga:
    """a as in v1, b2 replacing b, then c, which notes the results it sees."""
    saga = Saga("flow", 2)

    @saga.step(compensate=calls.undo)
    async def a(ctx: StepContext) -> dict[str, str]:
        calls.call(ctx)
        return {"hold": "h-2"}

    @saga.pivot(retry=ONCE)
    async def b2(ctx: StepContext) -> str:
        calls.call(ctx)
        if b2_fails:
            raise RuntimeError("b2 refused")
        return "shipped"

    @saga.retriable()
    async def c(ctx: StepContext) -> str:
        calls.call(ctx)
        calls.seen = dict(ctx.results)
        return "c2"

    return saga


@dataclass
class Setup:
    store: MemoryStore
    client: Client
    calls: Calls
    old: Saga
    saga_id: str


@pytest.fixture
async def stopped() -> Setup:
    """A v1 saga that did ``a`` and waits out ``b``'s back-off (running, nobody holds it)."""
    store, calls = MemoryStore(), Calls()
    client = Client(store, operator="ops@test")
    old = v1(calls)
    saga_id = await client.start(old, {}, saga_id="s-1")
    result = await Engine(store, [old], hand_back=True).resume_saga(saga_id)
    assert (result.status, result.retrying) == (SagaStatus.RUNNING, "b")
    return Setup(store, client, calls, old, saga_id)


async def test_a_newer_version_finishes_the_saga_from_where_it_stood(stopped: Setup) -> None:
    store, calls, saga_id = stopped.store, stopped.calls, stopped.saga_id
    new = v2(calls)
    await stopped.client.migrate(saga_id, new, note="b's service is gone", by="ann")

    assert await Engine(store, [stopped.old], hand_back=True).resume() == []  # not v1's now
    (result,) = await Engine(store, [new], hand_back=True).resume()

    assert result.status is SagaStatus.COMPLETED and result.version == 2
    assert calls.made == ["a", "b", "b2", "c"]  # a is not made again
    assert calls.seen == {"a": {"hold": "h-1"}, "b2": "shipped"}
    assert calls.keys[-2:] == [f"{saga_id}:b2:action", f"{saga_id}:c:action"]
    stored = await store.load(saga_id)
    assert stored is not None and stored.instance.version == 2
    moved = [r for r in stored.records if r.type is RecordType.OPERATOR_MIGRATED]
    assert len(moved) == 1 and moved[0].data is not None
    assert '"by":"ann"' in moved[0].data and "b's service is gone" in moved[0].data


async def test_the_log_replays_to_the_migrated_state(stopped: Setup) -> None:
    store, saga_id = stopped.store, stopped.saga_id
    await stopped.client.migrate(saga_id, v2(stopped.calls), note="move on")
    stored = await store.load(saga_id)
    assert stored is not None
    state = SagaState.from_records(saga_id, stored.records)

    assert (state.name, state.version, state.status) == ("flow", 2, SagaStatus.RUNNING)
    assert [(s.name, s.kind, s.status) for s in state.steps] == [
        ("a", "compensatable", StepStatus.SUCCEEDED),
        ("b2", "pivot", StepStatus.PENDING),
        ("c", "retriable", StepStatus.PENDING),
    ]
    assert (state.cursor, state.completed) == (1, ["a"])
    assert dict(state.results) == {"a": {"hold": "h-1"}}
    assert state.by_name["a"].attempts == 1
    assert stored.instance.due_at is not None  # due at once, for a v2 worker

    (result,) = await Engine(store, [v2(stopped.calls)], hand_back=True).resume()
    done = await store.load(saga_id)
    assert done is not None
    replayed = SagaState.from_records(saga_id, done.records)
    assert replayed.as_dict(events=False) == (await stopped.client.state(saga_id)).as_dict(False)
    assert (replayed.status, dict(replayed.results)) == (result.status, dict(result.results))


async def test_a_carried_step_is_undone_under_the_key_it_was_done_with(stopped: Setup) -> None:
    store, calls, saga_id = stopped.store, stopped.calls, stopped.saga_id
    new = v2(calls, b2_fails=True)
    await stopped.client.migrate(saga_id, new, note="try b2")
    (result,) = await Engine(store, [new], hand_back=True).resume()
    assert result.status is SagaStatus.COMPENSATED
    assert calls.undone == [("a", f"{saga_id}:a:action", {"hold": "h-1"})]


async def test_past_the_pivot_steps_done_may_be_renamed(stopped: Setup) -> None:
    """And a saga that needed attention on its way forward goes on in the new version."""
    store, calls = stopped.store, Calls()
    old = Saga("shop", 1)
    old.add(_noted(calls, "charge"), name="charge", compensate=calls.undo)
    old.add(_noted(calls, "ship"), name="ship", kind="pivot")
    old.add(_failing(calls), name="email", kind="retriable", retry=ONCE)
    new = Saga("shop", 3)
    new.add(_noted(calls, "pay"), name="pay", compensate=calls.undo)
    new.add(_noted(calls, "send"), name="send", kind="pivot")
    new.add(_noted(calls, "notify", seen=True), name="notify", kind="retriable")
    client = stopped.client
    await client.start(old, {}, saga_id="s-2")
    first = await Engine(store, [old], hand_back=True).resume_saga("s-2")
    assert first.status is SagaStatus.NEEDS_ATTENTION

    await client.migrate("s-2", new, map_steps={"charge": "pay", "ship": "send"}, note="new mail")
    (result,) = await Engine(store, [new], hand_back=True).resume()

    assert result.status is SagaStatus.COMPLETED
    assert calls.made == ["charge", "ship", "email", "notify"]
    assert calls.seen == {"pay": "charge", "send": "ship"}


async def test_a_compensatable_step_done_keeps_its_name_before_the_pivot(stopped: Setup) -> None:
    new = Saga("flow", 2)
    new.add(_noted(stopped.calls, "a2"), name="a2", compensate=stopped.calls.undo)
    new.add(_noted(stopped.calls, "c"), name="c", kind="retriable")
    with pytest.raises(StepActionError, match=r"step 'a' may still be compensated.*s-1:a:action"):
        await stopped.client.migrate("s-1", new, map_steps={"a": "a2"}, note="rename")
    await _unchanged(stopped)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda calls: _shaped("x", "compensatable"), r"step 'a' is done and maps to 'a'.*'x'"),
        (lambda calls: _shaped("a", "pivot"), r"step 'a' is compensatable, but 'a' is pivot"),
    ],
)
async def test_steps_done_that_do_not_map_are_refused(
    stopped: Setup, make: Any, error: str
) -> None:
    with pytest.raises(StepActionError, match=error):
        await stopped.client.migrate("s-1", make(stopped.calls), note="move")
    await _unchanged(stopped)


async def test_only_a_newer_version_of_the_same_saga(stopped: Setup) -> None:
    client = stopped.client
    with pytest.raises(OperatorActionError, match="moves only to a newer one, not flow@1"):
        await client.migrate("s-1", stopped.old, note="same")
    with pytest.raises(OperatorActionError, match="not 'other'"):
        await client.migrate("s-1", _shaped("a", "compensatable", "other"), note="x")
    with pytest.raises(OperatorActionError, match="a note"):
        await client.migrate("s-1", v2(stopped.calls), note=" ")
    await _unchanged(stopped)


async def test_a_saga_being_driven_or_compensating_is_refused(stopped: Setup) -> None:
    store, client = stopped.store, stopped.client
    assert await store.acquire("worker-1", "s-1", 30.0)
    with pytest.raises(OperatorActionError, match="being driven"):
        await client.migrate("s-1", v2(stopped.calls), note="now")
    await store.release("worker-1", "s-1", None)
    await _unchanged(stopped)

    await client.cancel("s-1", reason="changed my mind")
    before = await _log(stopped)
    with pytest.raises(OperatorActionError, match="it is compensating"):
        await client.migrate("s-1", v2(stopped.calls), note="now")
    assert await _log(stopped) == before


async def test_a_call_in_flight_is_refused(stopped: Setup) -> None:
    state = await stopped.client.state("s-1")
    journal = Journal(state)
    journal.add(RecordType.STEP_STARTED, "b", 2)  # as a worker that died mid-call left it
    await stopped.store.append("s-1", journal.take(), state.status)
    before = await _log(stopped)
    with pytest.raises(StepActionError, match=r"step 'b' is in flight"):
        await stopped.client.migrate("s-1", v2(stopped.calls), note="now")
    assert await _log(stopped) == before


async def test_a_call_waiting_for_a_message_is_refused() -> None:
    store, calls = MemoryStore(), Calls()
    client, old = Client(store), v1(calls)
    await client.start(old, {"wait": True}, saga_id="w-1")
    result = await Engine(store, [old], hand_back=True).resume_saga("w-1")
    assert result.waiting_for == "go"
    with pytest.raises(StepActionError, match=r"step 'b' waits for 'go'"):
        await client.migrate("w-1", v2(calls), note="now")
    stored = await store.load("w-1")
    assert stored is not None and stored.instance.version == 1
    assert RecordType.OPERATOR_MIGRATED not in [r.type for r in stored.records]


async def test_a_finished_saga_is_refused(stopped: Setup) -> None:
    new = v2(stopped.calls)
    await stopped.client.migrate("s-1", new, note="move")
    await Engine(stopped.store, [new], hand_back=True).resume()
    newer = Saga("flow", 3)
    for step in new.steps:
        newer.add_step(step)
    with pytest.raises(OperatorActionError, match="it is completed"):
        await stopped.client.migrate("s-1", newer, note="again")


# --------------------------------------------------------------------------- helpers


def _noted(calls: Calls, result: str, seen: bool = False) -> Any:
    async def action(ctx: StepContext) -> str:
        calls.call(ctx)
        if seen:
            calls.seen = dict(ctx.results)
        return result

    return action


def _failing(calls: Calls) -> Any:
    async def action(ctx: StepContext) -> None:
        calls.call(ctx)
        raise RuntimeError("the mail server is gone")

    return action


def _shaped(first: str, kind: str, name: str = "flow") -> Saga:
    """``name``@2 whose first step is ``first`` of ``kind``, then a retriable step."""
    calls = Calls()
    saga = Saga(name, 2)
    compensate = calls.undo if kind == "compensatable" else None
    saga.add(_noted(calls, first), name=first, kind=kind, compensate=compensate)
    saga.add(_noted(calls, "c"), name="c", kind="retriable")
    return saga


async def _log(setup: Setup) -> tuple[int, list[Record]]:
    stored = await setup.store.load(setup.saga_id)
    assert stored is not None
    return stored.instance.version, stored.records


async def _unchanged(setup: Setup) -> None:
    """Still v1, its log ending with b's failure (nothing recorded), and nobody holds it."""
    version, records = await _log(setup)
    assert (version, records[-1].type, records[-1].step) == (1, RecordType.STEP_FAILED, "b")
    stored = await setup.store.load(setup.saga_id)
    assert stored is not None and stored.instance.lease_owner is None
