"""The engine: runs saga instances forward, compensates them, and resumes them after a crash.

Everything the engine knows about an instance is a :class:`~sagakit.state.SagaState` folded
from the instance's log. Each decision reads that state, appends records, and applies them:
so ``resume`` only has to rebuild the state from the store to carry on where a dead process
stopped. The write-ahead rule: a ``*_started`` record is durable before its call is made,
and an outcome record is durable before anything depends on it (the next call, a back-off
sleep, or returning the result). Records that can wait are committed together with the
next ones that cannot, so a three-step saga costs four commits.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sagakit.codec import ENCODE_ERRORS, decode, encode
from sagakit.context import CompensationContext, Results, StepContext
from sagakit.errors import (
    CompensationImpossible,
    SagaDeadlineError,
    SagaDefinitionError,
    SerializationError,
    StepTimeoutError,
    UnknownSagaError,
    UnregisteredSagaError,
)
from sagakit.log import Instance, Record, RecordType, SagaStatus, StepStatus
from sagakit.policies import Retry
from sagakit.saga import Saga, Step, StepKind
from sagakit.state import SagaState, StepState
from sagakit.store.base import Store

_START = RecordType.STEP_STARTED
_COMP_START = RecordType.COMPENSATION_STARTED


@dataclass(slots=True)
class SagaResult:
    """What became of a saga instance (so far, if ``status`` is not terminal)."""

    saga_id: str
    name: str
    version: int
    status: SagaStatus
    results: Results
    """The recorded result of every step whose action succeeded."""
    reason: str | None = None
    """Why the saga compensated or needs attention."""
    failed_compensations: tuple[str, ...] = ()

    @classmethod
    def of(cls, state: SagaState) -> SagaResult:
        return cls(
            state.id,
            state.name,
            state.version,
            state.status,
            state.results,
            state.reason,
            tuple(state.failed_compensations),
        )


class Engine:
    """Runs and resumes instances of registered sagas against one :class:`Store`."""

    def __init__(self, store: Store, sagas: Iterable[Saga] = ()) -> None:
        self.store = store
        self._sagas: dict[tuple[str, int], _Plan] = {}
        self._active: dict[str, list[asyncio.Future[SagaResult]]] = {}
        """Instances this engine is driving now, with whoever else waits for them."""
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga) -> None:
        """Make ``saga`` known, so instances of it can be resumed; re-registering is a no-op."""
        known = self._sagas.get((saga.name, saga.version))
        if known is not None:
            if known.saga is not saga:
                raise SagaDefinitionError(
                    saga.name, f"another definition is already registered as {saga.key}"
                )
            return
        if not saga.steps:
            raise SagaDefinitionError(saga.name, "a saga needs at least one step")
        self._sagas[(saga.name, saga.version)] = _Plan(saga)

    async def run(self, saga: Saga, input: Any = None, *, saga_id: str | None = None) -> SagaResult:
        """Start an instance and drive it to a terminal status.

        Starting is idempotent on ``saga_id``: if that instance exists already, nothing runs
        twice; you get its outcome (awaited, if this engine is running it now), or, if it
        is unfinished and nobody here drives it, its state as it stands: :meth:`resume`
        is what carries on instances left by a crash.
        Raises :class:`SerializationError` if ``input`` is not JSON, recording nothing.
        """
        self.register(saga)
        plan = self._sagas[(saga.name, saga.version)]
        saga_id = saga_id or new_saga_id()
        if saga_id in self._active:
            return await self._join(saga_id)
        run = _Run(self.store, plan, plan.begin(saga_id, input))
        return await self._track(saga_id, self._start(run))

    async def resume(self) -> list[SagaResult]:
        """Carry on every unfinished instance in the store, concurrently; their outcomes."""
        instances = await self.store.unfinished()
        return list(await asyncio.gather(*(self.resume_saga(i.id) for i in instances)))

    async def resume_saga(self, saga_id: str) -> SagaResult:
        """Carry on one instance from its log; a terminal one is returned as it is."""
        if saga_id in self._active:
            return await self._join(saga_id)
        return await self._track(saga_id, self._resume(saga_id))

    async def status(self, saga_id: str) -> SagaState:
        """The instance's state as its log tells it now."""
        stored = await self.store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        return SagaState.from_records(saga_id, stored.records)

    async def _join(self, saga_id: str) -> SagaResult:
        """Wait for the outcome of an instance this engine is already driving."""
        waiter: asyncio.Future[SagaResult] = asyncio.get_running_loop().create_future()
        self._active[saga_id].append(waiter)
        return await waiter

    async def _track(self, saga_id: str, work: Awaitable[SagaResult]) -> SagaResult:
        waiters: list[asyncio.Future[SagaResult]] = []
        self._active[saga_id] = waiters
        try:
            result = await work
        except BaseException as error:
            for waiter in waiters:
                if not waiter.done():  # a joiner may have been cancelled
                    waiter.set_exception(error)
            raise
        finally:
            del self._active[saga_id]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)
        return result

    async def _start(self, run: _Run) -> SagaResult:
        """Create the instance with its first ``step_started``, then drive it."""
        state, saga = run.state, run.plan.saga
        run.record_new(_START, saga.steps[0].name, 1, None)
        at = state.records[0].at
        instance = Instance(state.id, saga.name, saga.version, SagaStatus.RUNNING, at, at)
        if not await self.store.create(instance, state.records):
            return await self._existing(state.id)
        run.pending = []
        return await run.drive()

    async def _existing(self, saga_id: str) -> SagaResult:
        stored = await self.store.load(saga_id)
        if stored is None:  # pragma: no cover - create said it exists
            raise UnknownSagaError(saga_id)
        return SagaResult.of(SagaState.from_records(saga_id, stored.records))

    async def _resume(self, saga_id: str) -> SagaResult:
        stored = await self.store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        state = SagaState.from_records(saga_id, stored.records)
        if state.status.is_terminal:
            return SagaResult.of(state)
        plan = self._sagas.get((state.name, state.version))
        run = _Run(self.store, plan, state)
        if plan is None:
            known = sorted(p.saga.key for p in self._sagas.values())
            reason = str(UnregisteredSagaError(state.name, state.version, known))
            run.record_new(
                RecordType.SAGA_NEEDS_ATTENTION, None, 0, _dumps({"reason": reason, "failed": []})
            )
            await run.flush()
            return SagaResult.of(state)
        return await run.drive()


class _Plan:
    """A registered saga with what every run of it needs computed once."""

    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.steps_meta = [{"name": s.name, "kind": s.kind.value} for s in saga.steps]
        self.head = (
            f'{{"name":{encode(saga.name)},"version":{saga.version},'
            f'"steps":{encode(self.steps_meta)},'
        )

    def begin(self, saga_id: str, input: Any) -> SagaState:
        """A state holding just the ``saga_started`` record; raises if input is not JSON."""
        try:
            encoded = encode(input)
        except ENCODE_ERRORS as error:
            raise SerializationError(self.saga.name, "the input", error) from error
        now = time.time()
        deadline_at = None if self.saga.deadline is None else now + self.saga.deadline
        data = f'{self.head}"deadline_at":{encode(deadline_at)},"input":{encoded}}}'
        started = {
            "name": self.saga.name,
            "version": self.saga.version,
            "steps": self.steps_meta,
            "deadline_at": deadline_at,
            "input_json": encoded,
        }
        state = SagaState(saga_id)
        state.apply(Record(0, RecordType.SAGA_STARTED, now, None, 0, data), started)
        return state


def new_saga_id() -> str:
    """A fresh id: 12 hex digits of milliseconds since the epoch, then 80 random bits.

    Ids in creation order keep a database's primary-key index appending at its right edge
    (as UUIDv7 does) instead of touching a random page per new saga, which roughly halved
    the pages each SQLite group commit writes.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def idempotency_key(saga_id: str, step: str, role: str = "action") -> str:
    """The key handed to every call of ``step``'s action or compensation in this instance.

    It is derived, never stored: the same in every attempt, process and worker.
    """
    return f"{saga_id}:{step}:{role}"


class _Outcome:
    """How one call ended: a JSON result, or an error (and whether it may be retried)."""

    __slots__ = ("error", "exception", "result")

    def __init__(
        self,
        result: str | None = None,
        error: dict[str, str] | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self.result = result
        self.error = error
        self.exception = exception


class _Run:
    """One instance being driven: its plan, its state, and records not yet committed."""

    __slots__ = ("pending", "plan", "state", "store")

    def __init__(self, store: Store, plan: _Plan | None, state: SagaState) -> None:
        self.store = store
        self.plan: _Plan = plan  # type: ignore[assignment]  # None only to mark unregistered
        self.state = state
        self.pending: list[Record] = []

    def record_new(
        self, kind: RecordType, step: str | None, attempt: int, data: str | None
    ) -> None:
        """Apply a new record to the state now; it is committed at the next :meth:`flush`."""
        record = Record(len(self.state.records), kind, time.time(), step, attempt, data)
        self.state.apply(record)
        self.pending.append(record)

    async def flush(self) -> None:
        if self.pending:
            records, self.pending = self.pending, []
            await self.store.append(self.state.id, records, self.state.status)

    async def drive(self) -> SagaResult:
        """Take the instance from wherever its state says to a terminal status."""
        state = self.state
        while True:
            if state.status is SagaStatus.RUNNING:
                await self._forward()
            elif state.status is SagaStatus.COMPENSATING:
                await self._compensate()
            else:
                await self.flush()
                return SagaResult.of(state)

    async def _forward(self) -> None:
        """Run the next step's action once (this is the hot path, so it is written flat)."""
        state, saga = self.state, self.plan.saga
        if state.cursor == len(state.steps):
            self.record_new(RecordType.SAGA_COMPLETED, None, 0, None)
            return
        step_state = state.steps[state.cursor]
        step = saga.steps[state.cursor]
        before_pivot = step.kind is not StepKind.RETRIABLE
        if step_state.status is not StepStatus.RUNNING:  # else: a call cut short by a crash
            if step_state.retry_at is not None:
                await self._wait_for_retry(step_state)
            if before_pivot and state.deadline_at is not None and time.time() >= state.deadline_at:
                self._begin_compensation(str(SagaDeadlineError(saga.name, state.id)))
                return
            self.record_new(_START, step.name, step_state.attempts + 1, None)
        if self.pending:
            await self.flush()
        attempt = step_state.attempts
        key = f"{state.id}:{step.name}:action"
        ctx = StepContext(
            state.id, saga.name, step.name, attempt, key, state.input_json, state.results
        )

        if step.timeout is None and state.deadline_at is None and step.action_is_async:
            try:
                value = await step.action(ctx)
            except Exception as error:
                outcome = _Outcome(error=_describe(error), exception=error)
            else:
                try:
                    result = encode(value)
                except ENCODE_ERRORS:
                    outcome = _recorded(value, saga.name, step.name)  # says why, as a failure
                else:
                    self.record_new(RecordType.STEP_SUCCEEDED, step.name, attempt, result)
                    return
        else:
            timeout, by_deadline = self._timeout(step, before_pivot)
            outcome = await _call(
                step.action, step.action_is_async, ctx, timeout, saga.name, step.name
            )
            if by_deadline and isinstance(outcome.exception, StepTimeoutError):
                late = SagaDeadlineError(saga.name, state.id)
                outcome = _Outcome(error=_describe(late), exception=late)
        if outcome.error is None:
            self.record_new(RecordType.STEP_SUCCEEDED, step.name, attempt, outcome.result)
            return
        retry_at = self._retry_at(step.retry_policy, attempt, outcome)
        failed = _dumps({"error": outcome.error, "retry_at": retry_at})
        self.record_new(RecordType.STEP_FAILED, step.name, attempt, failed)
        if retry_at is not None:
            return
        reason = f"step {step.name!r} failed: {outcome.error['message']}"
        if before_pivot:
            self._begin_compensation(reason)
        else:
            self._needs_attention(reason, [])

    async def _compensate(self) -> None:
        state, saga = self.state, self.plan.saga
        step_state = self._next_to_compensate()
        if step_state is None:
            stuck = [s.name for s in state.steps if s.status is StepStatus.COMPENSATION_FAILED]
            if stuck:
                self._needs_attention(
                    f"{state.reason}; compensation did not finish for {', '.join(stuck)}", stuck
                )
            else:
                self.record_new(RecordType.SAGA_COMPENSATED, None, 0, None)
            return
        step = saga.get(step_state.name)
        if step_state.status is not StepStatus.COMPENSATING:
            await self._wait_for_retry(step_state)
            attempt = step_state.compensation_attempts + 1
            self.record_new(_COMP_START, step.name, attempt, None)
        await self.flush()
        attempt = step_state.compensation_attempts
        ctx = CompensationContext(
            state.id,
            saga.name,
            step.name,
            attempt,
            idempotency_key(state.id, step.name, "compensation"),
            idempotency_key(state.id, step.name),
            state.input_json,
            None if step_state.result is None else decode(step_state.result),
            step_state.error,
            state.results,
        )
        assert step.compensation is not None  # only compensatable steps are picked
        outcome = await _call(
            step.compensation, step.compensation_is_async, ctx, step.timeout, saga.name, step.name
        )
        if outcome.error is None:
            self.record_new(RecordType.COMPENSATION_SUCCEEDED, step.name, attempt, None)
            return
        retry_at = self._retry_at(step.compensation_retry, attempt, outcome)
        failed = _dumps({"error": outcome.error, "retry_at": retry_at})
        self.record_new(RecordType.COMPENSATION_FAILED, step.name, attempt, failed)

    def _next_to_compensate(self) -> StepState | None:
        """The next step to undo: last completed first, a partly done failed step before all."""
        state, saga = self.state, self.plan.saga
        order = list(reversed(state.completed))
        partial = [
            s.name
            for s in state.steps
            if s.error is not None
            and s.name not in state.raw_results
            and saga.get(s.name).compensate_on_failure
        ]
        for name in partial + order:
            step_state = state.by_name[name]
            status = step_state.status
            if status is StepStatus.COMPENSATED or saga.get(name).compensation is None:
                continue
            if status is StepStatus.COMPENSATION_FAILED and step_state.retry_at is None:
                continue
            return step_state
        return None

    def _begin_compensation(self, reason: str) -> None:
        self.record_new(RecordType.SAGA_COMPENSATING, None, 0, _dumps({"reason": reason}))

    def _needs_attention(self, reason: str, failed: list[str]) -> None:
        data = _dumps({"reason": reason, "failed": failed})
        self.record_new(RecordType.SAGA_NEEDS_ATTENTION, None, 0, data)

    def _timeout(self, step: Step, before_pivot: bool) -> tuple[float | None, bool]:
        """The call's time limit, and whether it is the saga's deadline that sets it."""
        deadline = self.state.deadline_at
        if deadline is None or not before_pivot:
            return step.timeout, False
        left = max(deadline - time.time(), 0.0)
        if step.timeout is None or left < step.timeout:
            return left, True
        return step.timeout, False

    @staticmethod
    def _retry_at(policy: Retry, attempt: int, outcome: _Outcome) -> float | None:
        error = outcome.exception
        final = (SerializationError, CompensationImpossible, SagaDeadlineError)
        if error is None or isinstance(error, final):
            return None
        if not policy.allows_another(attempt, error):
            return None
        return time.time() + policy.delay(attempt)

    async def _wait_for_retry(self, step_state: StepState) -> None:
        """Commit the failure, then sleep until the retry's due time (stored, so durable)."""
        if step_state.retry_at is None:
            return
        await self.flush()
        delay = step_state.retry_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def _call(
    fn: Callable[[Any], Any],
    is_async: bool,
    ctx: StepContext | CompensationContext,
    timeout: float | None,
    saga: str,
    step: str,
) -> _Outcome:
    """Call an action or compensation; never raises an ``Exception`` the user code raised."""
    try:
        if timeout is None:
            value = await fn(ctx) if is_async else await asyncio.to_thread(fn, ctx)
        else:
            async with asyncio.timeout(timeout) as scope:
                try:
                    value = await fn(ctx) if is_async else await asyncio.to_thread(fn, ctx)
                except asyncio.CancelledError:
                    if scope.expired():
                        raise StepTimeoutError(saga, step, timeout) from None
                    raise
    except Exception as error:
        return _Outcome(error=_describe(error), exception=error)
    if isinstance(ctx, CompensationContext):
        return _Outcome()
    return _recorded(value, saga, step)


def _recorded(value: Any, saga: str, step: str) -> _Outcome:
    """The outcome of an action that returned ``value``: its JSON, or why it has none."""
    try:
        return _Outcome(result=encode(value))
    except ENCODE_ERRORS as cause:
        refused = SerializationError(saga, "the result", cause, step)
        return _Outcome(error=_describe(refused), exception=refused)


def _describe(error: BaseException) -> dict[str, str]:
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return {"type": name, "message": str(error) or name}


_dumps = encode
