"""Drives one saga instance: forward, compensating, waiting, all as a function of its log.

A :class:`Driver` holds an instance's :class:`~sagakit.log.SagaState` and the records not
yet committed. Each decision reads the state, appends records, and applies them. The
write-ahead rule: a ``*_started`` record is durable before its call is made, and an outcome
record is durable before anything depends on it (the next call, a wait, or returning).
Records that can wait are committed with the next ones that cannot, so a three-step saga
costs four commits (three under a worker, whose claim records the first call: see
:class:`~sagakit.store.FirstCall`).

A wait (a retry's back-off, a step waiting for a message) either happens in this process,
or, when the engine hands waits back (workers do), ends the drive with the instance's due
time stored, so that no worker is held and a restart neither forgets nor repeats it.

A driver writes and calls only while it holds the instance's lease: once its expiry
(``lease_until``, pushed on by the engine's renewals) has passed, or a write is refused
because another holder wrote first, it stops with :class:`LeaseLost`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sagakit._retry import Retry
from sagakit.errors import (
    CompensationImpossible,
    ConcurrentUpdateError,
    SagaDeadlineError,
    SerializationError,
    StepTimeoutError,
)
from sagakit.log import Journal, StepState
from sagakit.log._codec import ENCODE_ERRORS, decode, encode
from sagakit.log._fast import RecordTypes, SagaStatuses, StepKinds, StepStatuses
from sagakit.orchestration._context import CompensationContext, StepContext, WaitForMessage
from sagakit.orchestration._definition import Step
from sagakit.orchestration._failure import describe
from sagakit.orchestration._lease import LeaseLost
from sagakit.orchestration._plan import (
    CANCEL,
    SKIP,
    Plan,
    cancel_pending,
    cancel_reason,
    log_fields,
    passed_pivot,
    skip_refusal,
    unsettled,
)
from sagakit.store import Store

if TYPE_CHECKING:
    from sagakit.telemetry._otel import Drive

logger = logging.getLogger("sagakit.orchestration")

_START = RecordTypes.STEP_STARTED
_COMP_START = RecordTypes.COMPENSATION_STARTED
_FINAL = (SerializationError, CompensationImpossible, SagaDeadlineError)
"""Failures no retry can mend."""


class Suspended(Exception):
    """The drive stops here; the instance is due again at ``due_at`` (None: on a message)."""

    def __init__(self, due_at: float | None) -> None:
        super().__init__(due_at)
        self.due_at = due_at


class Driver:
    """One instance being driven: its plan, its state, and records not yet committed."""

    __slots__ = (
        "cancelling",
        "check_inbox",
        "hand_back",
        "journal",
        "late_calls",
        "lease_until",
        "plan",
        "retries",
        "started_by",
        "state",
        "store",
        "tel",
    )

    def __init__(
        self,
        store: Store,
        plan: Plan,
        journal: Journal,
        hand_back: bool,
        retries: tuple[Retry, ...] | None = None,
        late_calls: dict[str, asyncio.Future[Any]] | None = None,
    ) -> None:
        self.store = store
        self.plan = plan
        self.journal = journal
        self.state = journal.state
        self.hand_back = hand_back
        """Hand waits back to the store (a worker) instead of waiting in this process."""
        if retries is None:
            retries = tuple(s.retry_policy for s in plan.saga.steps)
        self.retries = retries
        """Each step's retry policy in force, by position (an engine computes it once)."""
        self.check_inbox = False
        """Set from outside when a message may have come; read at the next step boundary."""
        self.lease_until = math.inf
        """When the lease lapses by this process's clock (``GONE``: it is lost): set when it
        is taken and by each renewal; no write and no call is made from then on."""
        self.late_calls = {} if late_calls is None else late_calls
        """Sync actions still running in their thread after a timeout, by idempotency key
        (the engine shares one dict among its drivers): undoing one waits for it."""
        self.started_by: str | None = None
        """The payload of the ``*_started`` records made here (a ``CallStarted``, as JSON,
        encoded once by the engine): who made the call, for whoever takes it over."""
        self.cancelling: Mapping[str, Any] | None = None
        """A cancel taken while a call's outcome was unknown: carried out (or refused) once
        that call is settled."""
        self.tel: Drive | None = None
        """This drive's spans and call timings, when telemetry is recorded (set by the
        engine); None otherwise, and every hook below is then skipped."""

    async def create(self, owner: str, lease: float) -> bool:
        """Store the new instance, leased to ``owner``, with the records made so far;
        False if an instance with its id exists already."""
        records = self.journal.take()
        self.lease_until = records[0].at + lease
        instance = self.journal.new_instance(lease_owner=owner, lease_expires=self.lease_until)
        return await self.store.create(instance, records)

    async def flush(self) -> None:
        """Store the records made so far, if the lease is still held when the last of them
        was made (just now: records are made right before they are stored)."""
        pending = self.journal.pending
        if pending:
            if pending[-1].at >= self.lease_until:
                raise LeaseLost
            try:
                await self.store.append(self.state.id, self.journal.take(), self.state.status)
            except ConcurrentUpdateError as refused:  # the new holder wrote first
                raise LeaseLost from refused

    async def drive(self) -> float | None:
        """Take the instance as far as it goes now: to a terminal status, or to a wait that
        is handed back, whose due time is returned (None when terminal or message-bound)."""
        state = self.state
        if state.cancel is not None and cancel_pending(state):
            self.cancelling = state.cancel
        try:
            while True:
                if self.check_inbox:
                    await self.take_messages()
                status = state.status
                if status is SagaStatuses.RUNNING or status is SagaStatuses.PENDING:
                    if self.cancelling is None:
                        await self._forward()
                    else:
                        await self._settle_for_cancel(self.cancelling)
                elif status is SagaStatuses.COMPENSATING:
                    await self._compensate()
                else:
                    await self.flush()
                    return None
        except Suspended as suspended:
            await self.flush()
            return suspended.due_at

    async def take_messages(self) -> None:
        """Record the inbox messages not taken yet; a cancel before the pivot compensates,
        an operator's skip marks its failed step done."""
        self.check_inbox = False
        state = self.state
        for message in await self.store.messages(state.id, after=state.last_message):
            data = {"id": message.id, "name": message.name, "payload": message.payload}
            self.journal.add(RecordTypes.MESSAGE_RECEIVED, None, 0, encode(data))
            if message.name == CANCEL:
                self._cancel(decode(message.payload))
            elif message.name == SKIP:
                self._skip(decode(message.payload))

    def _cancel(self, request: dict[str, Any]) -> None:
        """Record a cancel and act on it: compensate; or, while a forward call's outcome is
        unknown, settle that call first (see :meth:`_settle_for_cancel`); past the pivot,
        refuse it, saying so in the log."""
        self.journal.add(RecordTypes.CANCEL_REQUESTED, None, 0, encode(request))
        state = self.state
        if state.status is not SagaStatuses.RUNNING and state.status is not SagaStatuses.PENDING:
            return
        if passed_pivot(state):
            self._refuse_cancel(request, "it has passed its pivot: it only goes forward")
        elif unsettled(state) is not None:
            self.cancelling = request
        else:
            self._begin_compensation(cancel_reason(request))

    async def _settle_for_cancel(self, request: Mapping[str, Any]) -> None:
        """Carry out a cancel that came while a forward call's outcome was unknown.

        The call is made again with its idempotency key (the service de-duplicates, so its
        answer says what the first call did), a pending retry without waiting out its
        back-off, and its outcome recorded as any other's (a retry it schedules is another
        settling call). Once nothing is in doubt, a step
        that succeeded is compensated with the others, and one that failed for good is
        not done; but if the step was the pivot and it succeeded, the saga can only go
        forward, and the cancel is refused. The cancel is durable meanwhile: a resumed
        drive finds it pending in the log and settles the call in the same way.
        """
        state = self.state
        step_state = unsettled(state)
        if step_state is not None:
            if step_state.status is StepStatuses.FAILED:  # at once: a back-off spares a
                # service that struggles, and the saga is to be undone, not pushed on
                attempt = step_state.attempts + 1
                self.journal.add(_START, step_state.name, attempt, self.started_by)
            await self._forward()
            if state.status is not SagaStatuses.RUNNING:  # it failed for good: compensating
                self.cancelling = None
            return
        self.cancelling = None
        if passed_pivot(state):
            settled = state.steps[state.cursor - 1].name
            self._refuse_cancel(
                request,
                f"its pivot {settled!r} was in flight when the cancel came, and succeeded when"
                " made again with its idempotency key: the saga only goes forward",
            )
        else:
            self._begin_compensation(cancel_reason(request))

    def _refuse_cancel(self, request: Mapping[str, Any], why: str) -> None:
        by = str(request.get("by", "someone"))
        refused = encode({"by": by, "reason": why})
        self.journal.add(RecordTypes.CANCEL_REFUSED, None, 0, refused)
        logger.warning(
            "saga %s: the cancel by %s is refused: %s", self.state.id, by, why, extra=self.facts()
        )

    def _skip(self, request: dict[str, Any]) -> None:
        """Apply an operator's skip (see ``Client.skip``) if its step is still failed: its
        next attempt may have succeeded since the operator looked."""
        step = str(request.get("step"))
        refusal = skip_refusal(self.state, step)
        if refusal is not None:
            logger.warning(
                "saga %s: an operator's skip is not applied: step %r %s",
                *(self.state.id, step, refusal),
                extra=self.facts(),
            )
            return
        skipped = {k: request.get(k) for k in ("by", "note", "result")}
        self.journal.add(RecordTypes.OPERATOR_SKIPPED, step, 0, encode(skipped))

    async def _forward(self) -> None:
        """Run the next step's action once (this is the hot path, so it is written flat)."""
        state, saga = self.state, self.plan.saga
        if state.cursor == len(state.steps):
            self.journal.add(RecordTypes.SAGA_COMPLETED, None, 0, None)
            return
        step_state = state.steps[state.cursor]
        step = saga.steps[state.cursor]
        before_pivot = step.kind is not StepKinds.RETRIABLE
        status = step_state.status
        recovered = status is StepStatuses.RUNNING  # a call a crash cut short: made again
        if not recovered and status is not StepStatuses.WAITING:
            if step_state.retry_at is not None and not await self._wait_until(step_state.retry_at):
                return  # a message (a cancel) changed the course
            if before_pivot and state.deadline_at is not None and time.time() >= state.deadline_at:
                self._begin_compensation(str(SagaDeadlineError(saga.name, state.id)))
                return
            self.journal.add(_START, step.name, step_state.attempts + 1, self.started_by)
        if self.journal.pending:
            await self.flush()
        if time.time() >= self.lease_until:  # lapsed while the write waited (a stall)
            raise LeaseLost
        attempt = step_state.attempts
        ctx = StepContext(
            state.id,
            saga.name,
            step.name,
            attempt,
            f"{state.id}:{step.name}:action",
            state.input_json,
            state.results,
            state.signals,
            step_state.waiting,
        )
        tel = self.tel
        if tel is not None:
            kind = step.kind.value
            tel.call("action", step.name, kind, attempt, ctx.idempotency_key, state.id)
        if step.timeout is None and state.deadline_at is None and step.action_is_async:
            try:
                value = await step.action(ctx)
            except Exception as error:
                outcome = _CallResult(error=describe(error), exception=error)
            except WaitForMessage as wait:
                if tel is not None:
                    tel.ended("waiting")
                await self._park(step_state, attempt, wait, "action")
                return
            else:
                try:
                    result = encode(value)
                except ENCODE_ERRORS:
                    outcome = _recorded(value, saga.name, step.name)  # says why, as a failure
                else:
                    self.journal.add(RecordTypes.STEP_SUCCEEDED, step.name, attempt, result)
                    if tel is not None:
                        tel.ended("succeeded")
                    return
        else:
            timeout, by_deadline = self._timeout(step, step_state, before_pivot, recovered)
            try:
                outcome = await _call(
                    step.action, step.action_is_async, ctx, timeout, saga.name, step.name
                )
            except WaitForMessage as wait:
                if tel is not None:
                    tel.ended("waiting")
                await self._park(step_state, attempt, wait, "action")
                return
            if outcome.running is not None:
                self._running_late(ctx.idempotency_key, outcome.running)
            if by_deadline and isinstance(outcome.exception, StepTimeoutError):
                late = SagaDeadlineError(saga.name, state.id)
                outcome = _CallResult(error=describe(late), exception=late)
        if outcome.error is None:
            self.journal.add(RecordTypes.STEP_SUCCEEDED, step.name, attempt, outcome.result)
            if tel is not None:
                tel.ended("succeeded")
            return
        if tel is not None:
            tel.failed(outcome.error, outcome.exception)
        policy, policy_attempt = self.retries[state.cursor], attempt - step_state.retry_base
        retry_at = _retry_at(policy, policy_attempt, outcome)
        failed = encode({"error": outcome.error, "retry_at": retry_at})
        self.journal.add(RecordTypes.STEP_FAILED, step.name, attempt, failed)
        message = outcome.error["message"]
        if retry_at is None and before_pivot:  # one line says both: the failure is the reason
            self._record_compensating(f"step {step.name!r} failed: {message}")
            then = "for good; the saga compensates"
            self._log_failure("step", step.name, attempt, "action", outcome.error, then)
            return
        self._log_failure("step", step.name, attempt, "action", outcome.error, _then(retry_at))
        if retry_at is None:  # past the point of no return: only a person can decide what now
            exhausted = policy.attempts is not None and policy_attempt >= policy.attempts
            self._needs_attention(_gave_up(step.name, attempt, exhausted, message), [])

    async def _compensate(self) -> None:
        state, saga = self.state, self.plan.saga
        step_state = self._next_to_compensate()
        if step_state is None:
            stuck = [s for s in state.steps if s.status is StepStatuses.COMPENSATION_FAILED]
            if stuck:
                names = ", ".join(map(_stuck, stuck))
                reason = f"{state.reason}; compensation did not finish for {names}"
                self._needs_attention(reason, [s.name for s in stuck])
            else:
                self.journal.add(RecordTypes.SAGA_COMPENSATED, None, 0, None)
            return
        step = saga.get(step_state.name)
        late = self.late_calls.get(f"{state.id}:{step.name}:action") if self.late_calls else None
        if late is not None and not await self._outwaited(late, step, step_state):
            return
        recovered = step_state.status is StepStatuses.COMPENSATING
        if not _compensation_in_flight(step_state):
            if step_state.retry_at is not None:
                await self._wait_until(step_state.retry_at)
            attempt = step_state.compensation_attempts + 1
            self.journal.add(_COMP_START, step.name, attempt, self.started_by)
        await self.flush()
        if time.time() >= self.lease_until:
            raise LeaseLost
        attempt = step_state.compensation_attempts
        ctx = CompensationContext(
            state.id,
            saga.name,
            step.name,
            attempt,
            f"{state.id}:{step.name}:compensation",
            f"{state.id}:{step.name}:action",
            state.input_json,
            None if step_state.result is None else decode(step_state.result),
            step_state.error,
            state.results,
            state.signals,
            step_state.waiting,
        )
        assert step.compensation is not None  # only compensatable steps are picked
        timeout = _remaining(step.timeout, step_state) if recovered else step.timeout
        tel = self.tel
        if tel is not None:
            kind = step.kind.value
            tel.call("compensation", step.name, kind, attempt, ctx.idempotency_key, state.id)
        try:
            outcome = await _call(
                step.compensation, step.compensation_is_async, ctx, timeout, saga.name, step.name
            )
        except WaitForMessage as wait:
            if tel is not None:
                tel.ended("waiting")
            await self._park(step_state, attempt, wait, "compensation")
            return
        if outcome.error is None:
            self.journal.add(RecordTypes.COMPENSATION_SUCCEEDED, step.name, attempt, None)
            if tel is not None:
                tel.ended("succeeded")
            return
        if tel is not None:
            tel.failed(outcome.error, outcome.exception)
        policy_attempt = attempt - step_state.compensation_retry_base
        retry_at = _retry_at(step.compensation_retry, policy_attempt, outcome)
        failed = encode({"error": outcome.error, "retry_at": retry_at})
        self.journal.add(RecordTypes.COMPENSATION_FAILED, step.name, attempt, failed)
        then = _then(retry_at)
        self._log_failure("compensation", step.name, attempt, "compensation", outcome.error, then)

    def _running_late(self, key: str, thread: asyncio.Future[Any]) -> None:
        """Remember a timed-out sync action whose thread goes on, until it finishes."""
        calls = self.late_calls
        calls[key] = thread

        def finished(done: asyncio.Future[Any]) -> None:
            if calls.get(key) is done:
                del calls[key]

        thread.add_done_callback(finished)

    async def _outwaited(
        self, late: asyncio.Future[Any], step: Step, step_state: StepState
    ) -> bool:
        """Wait for the thread of a timed-out sync action to finish before undoing it, so
        the undo never runs before the late effect: for as long again as the step's
        timeout, and at least :data:`LATE_ACTION_WAIT`. One that still runs then is not
        undone (its compensation fails for good, naming why) and the saga ends
        ``needs_attention``: an operator retries it once the action is known to be over."""
        wait = max(step.timeout or 0.0, LATE_ACTION_WAIT)
        done, _ = await asyncio.wait({late}, timeout=wait)
        if done:
            return True
        message = (
            f"not undone: its action timed out and was still running {wait:g}s later; it may"
            " still be running, and undoing it now could leave its late effect in place"
        )
        error = {"type": _TIMEOUT_TYPE, "message": message}
        attempt = step_state.compensation_attempts
        failed = encode({"error": error, "retry_at": None})
        self.journal.add(RecordTypes.COMPENSATION_FAILED, step.name, attempt, failed)
        self._log_failure("compensation", step.name, attempt, "compensation", error, "for good")
        return False

    def _next_to_compensate(self) -> StepState | None:
        """The next step to undo: last completed first, a partly done failed step before all."""
        state, saga = self.state, self.plan.saga
        order = list(reversed(state.completed))
        partial = [  # started, never succeeded, and may have done part of its work
            s.name
            for s in state.steps
            if s.attempts > 0
            and s.name not in state.raw_results
            and saga.get(s.name).compensate_on_failure
        ]
        for name in partial + order:
            step_state = state.by_name[name]
            status = step_state.status
            if status is StepStatuses.COMPENSATED or saga.get(name).compensation is None:
                continue
            if status is StepStatuses.COMPENSATION_FAILED and step_state.retry_at is None:
                continue
            return step_state
        return None

    async def _park(
        self, step_state: StepState, attempt: int, wait: WaitForMessage, role: str
    ) -> None:
        """A call waits for a message: record it once, then wait (here, or handed back)."""
        waiting = {"signal": wait.name, "until": wait.until, "role": role}
        if step_state.waiting != waiting or step_state.status is not StepStatuses.WAITING:
            self.journal.add(RecordTypes.STEP_WAITING, step_state.name, attempt, encode(waiting))
        await self._wait_until(wait.until)

    async def _wait_until(self, due_at: float | None) -> bool:
        """Wait for ``due_at`` (None: for ever) or a message, whichever comes first.

        Returns whether the saga still goes the way it went (a message may cancel it, or
        mark the step it waits to retry done).
        Waits here in the process unless they are handed back, in which case the drive
        ends and the store keeps the due time.
        """
        await self.flush()
        status, cursor = self.state.status, self.state.cursor
        if self.hand_back and (due_at is None or due_at - time.time() > _SHORT_WAIT):
            raise Suspended(due_at)
        async with self.store.watch(self.state.id) as change:
            while due_at is None or time.time() < due_at:
                if await self.store.messages(self.state.id, after=self.state.last_message):
                    break
                left = _IDLE_CHECK if due_at is None else min(due_at - time.time(), _IDLE_CHECK)
                if left > 0:
                    await change.wait(left)
        await self.take_messages()
        await self.flush()
        return self.state.status is status and self.state.cursor == cursor

    def _begin_compensation(self, reason: str) -> None:
        self._record_compensating(reason)
        logger.warning("saga %s compensates: %s", self.state.id, reason, extra=self.facts())

    def _record_compensating(self, reason: str) -> None:
        self.journal.add(RecordTypes.SAGA_COMPENSATING, None, 0, encode({"reason": reason}))

    def _needs_attention(self, reason: str, failed: list[str]) -> None:
        data = encode({"reason": reason, "failed": failed})
        self.journal.add(RecordTypes.SAGA_NEEDS_ATTENTION, None, 0, data)
        logger.error("saga %s needs attention: %s", self.state.id, reason, extra=self.facts())

    def facts(self, step: str | None = None, attempt: int = 0, role: str = "") -> dict[str, Any]:
        """The fields every log record of this saga carries (``extra=``), for log search."""
        state = self.state
        return log_fields(state.id, state.name, state.version, step, attempt, role)

    def _log_failure(
        self,
        what: str,
        step: str,
        attempt: int,
        role: str,
        error: dict[str, str],
        then: str,
    ) -> None:
        """One line for a failed call; ``then``: what comes of it (see :func:`_then`)."""
        logger.warning(
            "saga %s: %s %r attempt %d failed (%s): %s: %s",
            *(self.state.id, what, step, attempt, then, error["type"], error["message"]),
            extra=self.facts(step, attempt, role),
        )

    def _timeout(
        self, step: Step, step_state: StepState, before_pivot: bool, recovered: bool
    ) -> tuple[float | None, bool]:
        """The call's time limit, and whether it is the saga's deadline that sets it."""
        limit = _remaining(step.timeout, step_state) if recovered else step.timeout
        deadline = self.state.deadline_at
        if deadline is None or not before_pivot:
            return limit, False
        left = max(deadline - time.time(), 0.0)
        if limit is None or left < limit:
            return left, True
        return limit, False


LATE_ACTION_WAIT = 1.0
"""Least seconds the compensation of a timed-out sync action waits for its thread to end."""
_TIMEOUT_TYPE = f"{StepTimeoutError.__module__}.{StepTimeoutError.__qualname__}"
_SHORT_WAIT = 0.05
"""A wait this short is cheaper to sleep through than to hand back and claim again."""
_IDLE_CHECK = 5.0
"""Longest in-process wait between looks at the inbox (stores also wake waiters early)."""


def _stuck(step_state: StepState) -> str:
    """A step whose compensation did not finish, as the saga's reason names it: one never
    even started was held back because its action may still be running."""
    if step_state.compensation_attempts == 0:
        return f"{step_state.name} (its action may still be running)"
    return step_state.name


def _compensation_in_flight(step_state: StepState) -> bool:
    status = step_state.status
    if status is StepStatuses.COMPENSATING:
        return True
    waiting = step_state.waiting
    return (
        status is StepStatuses.WAITING and waiting is not None and waiting["role"] == "compensation"
    )


def _remaining(timeout: float | None, step_state: StepState) -> float | None:
    """A call's time limit counts from its start: a call made again after a crash gets
    only what is left of it, so a restart does not grant a hung call a second timeout."""
    if timeout is None or step_state.started_at is None:
        return timeout
    return max(step_state.started_at + timeout - time.time(), 0.0)


def _gave_up(step: str, attempts: int, exhausted: bool, message: str) -> str:
    """Why a step after the pivot is not tried again: it used up its attempts (its own
    limit, or the worker's ``max_attempts``), or it failed in a way no retry mends."""
    if not exhausted:
        return f"step {step!r} failed after the pivot: {message}"
    times = "once" if attempts == 1 else f"{attempts} times"
    return f"step {step!r} failed {times} after the pivot: {message}"


def _then(retry_at: float | None) -> str:
    """What comes of a failed call, for its log line."""
    return "for good" if retry_at is None else f"retry in {retry_at - time.time():.2f}s"


def _retry_at(policy: Retry, attempt: int, outcome: _CallResult) -> float | None:
    error = outcome.exception
    if error is None or isinstance(error, _FINAL):
        return None
    if not policy.allows_another(attempt, error):
        return None
    return time.time() + policy.delay(attempt)


class _CallResult:
    """How one call ended: a JSON result, or an error (and whether it may be retried)."""

    __slots__ = ("error", "exception", "result", "running")

    def __init__(
        self,
        result: str | None = None,
        error: dict[str, str] | None = None,
        exception: BaseException | None = None,
        running: asyncio.Future[Any] | None = None,
    ) -> None:
        self.result = result
        self.error = error
        self.exception = exception
        self.running = running
        """A sync call's thread that its timeout left running."""


async def _call(
    fn: Callable[[Any], Any],
    is_async: bool,
    ctx: StepContext | CompensationContext,
    timeout: float | None,
    saga: str,
    step: str,
) -> _CallResult:
    """Call an action or compensation; never raises an ``Exception`` the user code raised.

    A timeout cancels an async call; a sync one runs in a thread, which nothing can stop:
    the result hands its future back (``running``) so that undoing it can wait for it.
    """
    thread: asyncio.Future[Any] | None = None
    try:
        if timeout is None:
            value = await fn(ctx) if is_async else await asyncio.to_thread(fn, ctx)
        else:
            async with asyncio.timeout(timeout) as scope:
                try:
                    if is_async:
                        value = await fn(ctx)
                    else:
                        thread = _in_thread(fn, ctx)
                        value = await asyncio.shield(thread)
                except asyncio.CancelledError:
                    if scope.expired():
                        raise StepTimeoutError(saga, step, timeout) from None
                    raise
    except Exception as error:
        running = thread if thread is not None and not thread.done() else None
        return _CallResult(error=describe(error), exception=error, running=running)
    if isinstance(ctx, CompensationContext):
        return _CallResult()
    return _recorded(value, saga, step)


def _in_thread(
    fn: Callable[[Any], Any], ctx: StepContext | CompensationContext
) -> asyncio.Future[Any]:
    """``fn(ctx)`` in the default executor, in a copy of the context (as ``asyncio.to_thread``
    runs it), as a future that outlives a timeout: shielded, it keeps track of the thread."""
    thread = asyncio.get_running_loop().run_in_executor(
        None, contextvars.copy_context().run, fn, ctx
    )
    thread.add_done_callback(_retrieved)
    return thread


def _retrieved(thread: asyncio.Future[Any]) -> None:
    """Mark a late call's error as seen: it finished after its outcome was recorded."""
    if not thread.cancelled():
        thread.exception()


def _recorded(value: Any, saga: str, step: str) -> _CallResult:
    """The outcome of an action that returned ``value``: its JSON, or why it has none."""
    try:
        return _CallResult(result=encode(value))
    except ENCODE_ERRORS as cause:
        refused = SerializationError(saga, "the result", cause, step)
        return _CallResult(error=describe(refused), exception=refused)
