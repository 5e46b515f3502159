"""Property: whatever fails, the engine ends in the status the plan implies, undoes exactly
what was done (in reverse), and its log rebuilds the state it reported."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from saga_fakes import Recorder

from sagakit import (
    CompensationImpossible,
    Engine,
    MemoryStore,
    Retry,
    Saga,
    SagaState,
    SagaStatus,
    StepStatus,
)
from sagakit.log import RecordType

FORWARD_RETRY = Retry(attempts=3, backoff=0, jitter=0, retry_on=(ConnectionError,))
UNDO_RETRY = Retry(attempts=2, backoff=0, jitter=0)
PIVOT, RETRIABLE = "pivot", "retry"


@dataclass(frozen=True)
class Plan:
    """A saga's shape and what goes wrong in it."""

    compensatable: int
    pivot: bool
    pivot_undo: bool
    """The pivot has a compensation run only if it fails (``compensate_on_failure``)."""
    retriable: bool
    transient: tuple[int, ...]
    """Per forward step (compensatables, then the pivot): failures before it succeeds."""
    fail_at: int | None
    """Index of the forward step whose action fails for good, if any."""
    fatal: bool
    """That failure is not retriable (so one attempt), else it exhausts its three."""
    undo_on_failure: tuple[bool, ...]
    """Per compensatable step: ``compensate_on_failure``."""
    undo_transient: tuple[int, ...]
    """Per forward step: compensation failures before it succeeds."""
    undo_broken: tuple[str | None, ...]
    """Per forward step: None, "error" (fails every attempt) or "impossible"."""
    retriable_transient: int
    retriable_broken: bool

    @property
    def forward(self) -> list[str]:
        return [f"c{i}" for i in range(self.compensatable)] + ([PIVOT] if self.pivot else [])

    def has_undo(self, index: int) -> bool:
        return index < self.compensatable or self.pivot_undo

    def undone_on_failure(self, index: int) -> bool:
        if index < self.compensatable:
            return self.undo_on_failure[index]
        return self.pivot_undo


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    compensatable = draw(st.integers(1, 6))
    pivot = draw(st.booleans())
    forward = compensatable + int(pivot)
    return Plan(
        compensatable=compensatable,
        pivot=pivot,
        pivot_undo=pivot and draw(st.booleans()),
        retriable=draw(st.booleans()),
        transient=tuple(draw(st.lists(st.integers(0, 2), min_size=forward, max_size=forward))),
        fail_at=draw(st.none() | st.integers(0, forward - 1)),
        fatal=draw(st.booleans()),
        undo_on_failure=tuple(
            draw(st.lists(st.booleans(), min_size=compensatable, max_size=compensatable))
        ),
        undo_transient=tuple(draw(st.lists(st.integers(0, 1), min_size=forward, max_size=forward))),
        undo_broken=tuple(
            draw(
                st.lists(
                    st.sampled_from([None, None, "error", "impossible"]),
                    min_size=forward,
                    max_size=forward,
                )
            )
            if draw(st.booleans())  # half the plans have only sound compensations
            else [None] * forward
        ),
        retriable_transient=draw(st.integers(0, 2)),
        retriable_broken=draw(st.booleans()),
    )


def build(plan: Plan, rec: Recorder) -> Saga:
    saga = Saga("prop")
    for index, name in enumerate(plan.forward):
        failures = [ConnectionError(f"{name} flaky")] * plan.transient[index]
        always: BaseException | None = None
        if plan.fail_at == index:
            always = (
                ValueError(f"{name} refused") if plan.fatal else ConnectionError(f"{name} down")
            )
        action = rec.action(name, {"done": name}, raises=failures, always=always)
        undo_failures = [RuntimeError(f"undo {name} flaky")] * plan.undo_transient[index]
        undo_always: BaseException | None = {
            None: None,
            "error": RuntimeError(f"undo {name} down"),
            "impossible": CompensationImpossible(f"undo {name} impossible"),
        }[plan.undo_broken[index]]
        undo = rec.compensation(name, raises=undo_failures, always=undo_always)
        if name == PIVOT:
            saga.add(
                action,
                kind="pivot",
                retry=FORWARD_RETRY,
                compensate=undo if plan.pivot_undo else None,
                compensate_on_failure=plan.pivot_undo,
                compensation_retry=UNDO_RETRY,
            )
        else:
            saga.add(
                action,
                compensate=undo,
                retry=FORWARD_RETRY,
                compensate_on_failure=plan.undo_on_failure[index],
                compensation_retry=UNDO_RETRY,
            )
    if plan.retriable:
        saga.add(
            rec.action(
                RETRIABLE,
                "retried",
                raises=[RuntimeError("smtp flaky")] * plan.retriable_transient,
                always=RuntimeError("smtp down") if plan.retriable_broken else None,
            ),
            kind="retriable",
            retry=Retry(attempts=3, backoff=0, jitter=0),
        )
    return saga


def dedupe(names: list[str]) -> list[str]:
    """Consecutive repeats (retries of one call) folded into one."""
    return [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans())
async def test_engine_invariants(plan: Plan) -> None:
    rec = Recorder()
    store = MemoryStore()
    engine = Engine(store)
    saga = build(plan, rec)

    result = await engine.run(saga, {"plan": "p"}, saga_id="x")

    # --- what the plan implies ------------------------------------------------------------
    forward = plan.forward
    to_undo: list[str]
    broken: set[str]
    if plan.fail_at is not None:
        failed_name = forward[plan.fail_at]
        failed_step: str | None = failed_name
        succeeded = forward[: plan.fail_at]
        executed = forward[: plan.fail_at + 1]
        partial = [failed_name] if plan.undone_on_failure(plan.fail_at) else []
        to_undo = partial + list(reversed(succeeded))
        broken = {n for n in to_undo if plan.undo_broken[forward.index(n)]}
        expected = SagaStatus.NEEDS_ATTENTION if broken else SagaStatus.COMPENSATED
    else:
        failed_step = None
        executed = forward + ([RETRIABLE] if plan.retriable else [])
        stuck = plan.retriable and plan.retriable_broken
        succeeded = executed[:-1] if stuck else executed
        to_undo = []
        broken = set()
        expected = SagaStatus.NEEDS_ATTENTION if stuck else SagaStatus.COMPLETED

    # --- the outcome ----------------------------------------------------------------------
    event(f"status={result.status.value}")
    assert result.status.is_terminal
    assert result.status is expected
    assert set(result.failed_compensations) == broken
    if expected is SagaStatus.COMPLETED:
        assert result.reason is None
    else:
        assert result.reason is not None
        for name in broken:
            assert name in result.reason
    assert dict(result.results) == {
        n: "retried" if n == RETRIABLE else {"done": n} for n in succeeded
    }

    # --- actions: each tried exactly as its policy says, nothing after the failure ---------
    action_calls = Counter(c.step for c in rec.of("action"))
    for index, name in enumerate(forward):
        if name not in executed:
            want = 0
        elif name == failed_step:
            # transient failures first; a fatal error then ends it, else all attempts go
            want = plan.transient[index] + 1 if plan.fatal else FORWARD_RETRY.attempts or 0
        else:
            want = plan.transient[index] + 1
        assert action_calls[name] == want, name
    if plan.retriable:
        if RETRIABLE not in executed:
            want = 0
        else:
            want = 3 if plan.retriable_broken else plan.retriable_transient + 1
        assert action_calls[RETRIABLE] == want
    assert all(c.attempt >= 1 for c in rec.calls)

    # --- compensations: exactly what was done, in reverse order of completion --------------
    undo_calls = rec.of("compensation")
    assert dedupe([c.step for c in undo_calls]) == to_undo
    undo_count = Counter(c.step for c in undo_calls)
    for name in to_undo:
        index = forward.index(name)
        # "error" uses up every attempt; otherwise it succeeds, or says it is impossible,
        # right after its transient failures
        exhausted = plan.undo_broken[index] == "error"
        want = UNDO_RETRY.attempts or 0 if exhausted else plan.undo_transient[index] + 1
        assert undo_count[name] == want, name
    stored = await store.load("x")
    assert stored is not None
    completion = [r.step for r in stored.records if r.type is RecordType.STEP_SUCCEEDED]
    assert completion == succeeded
    for call in undo_calls:
        done = call.step in completion
        assert done or (call.step == failed_step and call.step in to_undo)
        assert call.ctx.input == {"plan": "p"}
    first_undos = dedupe([c.step for c in undo_calls if c.step in completion])
    if expected is not SagaStatus.COMPLETED and plan.fail_at is not None:
        assert first_undos == list(reversed(completion))

    # --- the log rebuilds the state the engine reported ------------------------------------
    rebuilt = SagaState.from_records("x", stored.records)
    assert rebuilt == await engine.status("x")
    assert rebuilt.status is result.status
    assert rebuilt.reason == result.reason
    assert rebuilt.failed_compensations == list(result.failed_compensations)
    assert dict(rebuilt.results) == dict(result.results)
    assert stored.instance.status is result.status
    assert [r.seq for r in stored.records] == list(range(len(stored.records)))
    assert stored.records[0].type is RecordType.SAGA_STARTED
    assert stored.records[-1].type.value == "saga_" + result.status.value

    step_status = {s.name: s.status for s in rebuilt.steps}
    for name in step_status:
        if expected is SagaStatus.COMPLETED:
            want_status = StepStatus.SUCCEEDED
        elif name in broken:
            want_status = StepStatus.COMPENSATION_FAILED
        elif name in to_undo:
            want_status = StepStatus.COMPENSATED
        elif name == failed_step or (name == RETRIABLE and name in executed):
            want_status = StepStatus.FAILED
        elif name in succeeded:
            want_status = StepStatus.SUCCEEDED
        else:
            want_status = StepStatus.SKIPPED
        assert step_status[name] is want_status, name
