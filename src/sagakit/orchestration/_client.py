"""The client: start sagas for workers to run, wait for outcomes, signal them, and act on
them as an operator. It drives nothing itself, so it fits in a web request handler.

Operators' actions are records in the saga's log, naming who and why. A client appends
them only while it holds the instance's lease, as an engine would, so it never writes over
a worker: that is how a saga that needs attention is retried, resolved or skipped (no worker
drives it). A running saga has a driver, now or as soon as it is due, which is the one
writer of its log, so it is told through its inbox instead (``store.send``, which also makes
it due now): a skip always, a cancel when a worker holds it. The driver takes the message at
its next step boundary or wait, and decides again on the state it has then.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sagakit._retry import Outage
from sagakit.errors import (
    InvalidArgumentError,
    OperatorActionError,
    ResultTimeoutError,
    SerializationError,
    StepActionError,
    StoreUnavailableError,
    UnknownSagaError,
)
from sagakit.log import Journal, RecordType, SagaState
from sagakit.log._codec import ENCODE_ERRORS, encode
from sagakit.log._fast import RecordTypes, SagaStatuses, StepKinds, StepStatuses
from sagakit.log._records import TERMINAL
from sagakit.orchestration._definition import Saga
from sagakit.orchestration._engine import SagaResult, default_owner
from sagakit.orchestration._migration import migration
from sagakit.orchestration._plan import (
    CANCEL,
    SKIP,
    Plan,
    new_saga_id,
    passed_pivot,
    same_start,
    skip_refusal,
    unsettled,
)
from sagakit.store import Store
from sagakit.telemetry._switch import active as active_telemetry

logger = logging.getLogger("sagakit.orchestration")
T = TypeVar("T")

_ACT_LEASE = 30.0
"""How long an operator's action may hold an instance (it takes milliseconds)."""
_WAKE = 30.0
"""Longest wait between looks at an outcome; stores also wake waiters when it changes."""

_Records = list[tuple[RecordType, str | None, Any]]
"""Records for an operator to append: (type, step, payload before encoding)."""


def default_operator() -> str:
    """``user@host``: who an operator's action is recorded as, unless told otherwise."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


class Client:
    """Talks to the sagas in one store; workers (or an :class:`~sagakit.Engine`) drive them.

    While the store's database is away (restarting, unreachable), :meth:`start` raises
    :class:`~sagakit.errors.StoreUnavailableError` at once, so that a web handler can answer
    "try again"; with ``wait_for_store=SECONDS`` it tries again with a jittered back-off for
    that long first (a start is idempotent on its id, so a retry never starts a saga twice).
    :meth:`result` rides out an outage within its own ``timeout``. Every other call raises
    the error at once: an operator's action is best retried by the operator.
    """

    def __init__(
        self, store: Store, *, operator: str | None = None, wait_for_store: float = 0.0
    ) -> None:
        if not wait_for_store >= 0:
            raise InvalidArgumentError(f"wait_for_store must be >= 0, not {wait_for_store}")
        self.store = store
        self.operator = operator or default_operator()
        self.owner = f"client:{default_owner()}"
        self.wait_for_store = wait_for_store
        self._telemetry = active_telemetry()
        self._plans: dict[Saga, Plan] = {}
        """Each saga's plan, made at its first start (a step added since makes it anew)."""

    async def start(self, saga: Saga, input: Any = None, *, saga_id: str | None = None) -> str:
        """Record a new instance, due now for any worker, and return its id at once.

        Idempotent on ``saga_id``: starting an id that exists changes nothing and returns
        the id; :class:`SagaIdConflictError` if that instance is of another saga or input.
        Raises :class:`SerializationError` if ``input`` is not JSON, and
        :class:`StoreUnavailableError` if the database is away (for longer than
        ``wait_for_store``); the saga may then have been recorded or not, and starting it
        again with the same ``saga_id`` is safe either way.
        """
        saga_id = saga_id or new_saga_id()
        tel = self._telemetry
        if tel is not None and not tel.recording():
            tel = None
        trace = None if tel is None else tel.start_trace(saga.name, saga_id)
        row, record = self._plan(saga).opening(saga_id, input, trace)
        deadline = time.monotonic() + self.wait_for_store
        if not await self._patiently(lambda: self.store.create(row, [record]), deadline):
            existing = await self._patiently(lambda: self.state(saga_id), deadline)
            same_start(existing, SagaState.from_records(saga_id, [record]))
        elif tel is not None:
            tel.saga_started(saga.name, saga.version)
        return saga_id

    def _plan(self, saga: Saga) -> Plan:
        plan = self._plans.get(saga)
        if plan is None or len(plan.steps_meta) != len(saga.steps):
            plan = self._plans[saga] = Plan(saga)
        return plan

    async def result(self, saga_id: str, timeout: float | None = None) -> SagaResult:
        """Wait until the saga is terminal and return its outcome.

        Waits on the store's change notices (LISTEN/NOTIFY on PostgreSQL), not in a busy
        loop, and through an outage of the database. Raises :class:`ResultTimeoutError`
        after ``timeout`` seconds, or :class:`StoreUnavailableError` if the database was
        still away then.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        return await self._patiently(lambda: self._result(saga_id, timeout, deadline), deadline)

    async def _patiently(self, call: Callable[[], Awaitable[T]], deadline: float | None) -> T:
        """``call()``, made again after a back-off while the store is unavailable, until
        ``deadline`` (``time.monotonic``; None: no end), past which the error is raised."""
        outage = None  # made at the first failure: most calls have none
        while True:
            try:
                value = await call()
            except StoreUnavailableError as error:
                left = math.inf if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise
                outage = outage or Outage(logger, self.owner)
                await asyncio.sleep(min(outage.failed(error) or 0.0, left))  # a back-off
            else:
                if outage is not None:
                    outage.back()
                return value

    async def _result(
        self, saga_id: str, timeout: float | None, deadline: float | None
    ) -> SagaResult:
        # Watch before looking, so a change made in between still wakes us.
        async with self.store.watch(saga_id) as change:
            while True:
                state = await self.state(saga_id)
                if state.status in TERMINAL:
                    return SagaResult.of(state)
                left = _WAKE if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeoutError(saga_id, timeout or 0.0, state.status.value)
                await change.wait(min(left, _WAKE))

    async def state(self, saga_id: str) -> SagaState:
        """The instance's state as its log tells it now."""
        stored = await self.store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        return SagaState.from_records(saga_id, stored.records)

    async def signal(self, saga_id: str, name: str, payload: Any = None) -> None:
        """Send a message to the saga; a step's ``ctx.wait_for(name)`` gets ``payload``.

        Refused with :class:`OperatorActionError` if the saga is already completed,
        compensated or needing attention: nothing would ever read the message. (One that
        ends while the message is on its way simply never takes it.)
        """
        try:
            encoded = encode(payload)
        except ENCODE_ERRORS as error:
            raise SerializationError(saga_id, f"the {name!r} signal's payload", error) from error
        stored = await self.store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        status = stored.instance.status
        if status in TERMINAL:
            why = f"it is {status.value}, so nothing would read the {name!r} message"
            raise OperatorActionError(saga_id, "signal", why)
        _check_driven(saga_id, "signal", SagaState.from_records(saga_id, stored.records))
        await self.store.send(saga_id, name, encoded)

    async def cancel(self, saga_id: str, *, reason: str = "", by: str | None = None) -> bool:
        """Ask an unfinished saga that has not passed its pivot to compensate; True if it
        is compensating now, False if the request went to its driver.

        A saga a worker holds, or whose step's outcome is unknown (a call in flight when its
        worker died, or a timeout with a retry pending), is told through its inbox: its
        driver takes it at its next step boundary, makes an unknown call again with the same
        idempotency key first, so what it did is undone too; and if that was the pivot and
        it succeeded, the cancel is refused, as a ``cancel_refused`` record in the log says."""
        request = {"by": by or self.operator, "reason": reason}
        state = await self.state(saga_id)
        _check_cancel(saga_id, state)
        if not await self.store.acquire(self.owner, saga_id, _ACT_LEASE):
            # a worker is driving it: it reads the request at its next step or wait
            await self.store.send(saga_id, CANCEL, encode(request))
            return False
        try:
            state = await self.state(saga_id)
            _check_cancel(saga_id, state)
            if unsettled(state) is not None:  # settled by the next driver, then cancelled
                await self.store.send(saga_id, CANCEL, encode(request))
                return False
            why = f"cancelled by {request['by']}" + (f": {reason}" if reason else "")
            await self._append(
                state,
                [
                    (RecordTypes.CANCEL_REQUESTED, None, request),
                    (RecordTypes.SAGA_COMPENSATING, None, {"reason": why}),
                ],
            )
        finally:
            await self.store.release(self.owner, saga_id, time.time())
        return True

    async def retry(
        self,
        saga_id: str,
        *,
        from_step: str | None = None,
        note: str = "",
        by: str | None = None,
    ) -> None:
        """Try a ``needs_attention`` saga's failed calls again, each with a fresh retry
        budget and the same idempotency key as before: going forward, the step it stopped
        at; compensating, every compensation that did not finish.

        ``from_step`` names the step to run again, and must be the failed step a saga going
        forward stopped at: it then runs at once with a fresh budget, even if it was still
        waiting out a back-off (as when the saga stopped because its version was not
        registered). Any other step is refused with :class:`StepActionError`:

        - an earlier step, since it succeeded. Steps run in order, so running one again
          means running every step after it again. Past the pivot (and a saga going forward
          fails for good only past it) those include the pivot or a retriable step that
          succeeded, which never run twice. Before it, the step's effect still stands and
          is what its compensation would undo: called with its idempotency key, the
          service would only repeat its first answer; with a new key, it would do the work
          twice, and only the second would ever be undone. To redo succeeded work, end the
          saga (resolve it) and start a new one;
        - a later step, which has not run; and the step the saga stopped at if its call did
          not fail (in flight, waiting, or never started): a plain retry carries it on;
        - any step of a saga that was compensating: its retry has no from step.

        Refused, it records nothing.
        """
        note_data = {"by": by or self.operator, "note": note}

        def check(state: SagaState) -> None:
            _check_driven(saga_id, "retry", state)
            _check_attention(saga_id, "retry", state)
            if from_step is not None:
                _check_retry_from(saga_id, state, from_step)

        records: _Records = [(RecordTypes.OPERATOR_RETRY, from_step, note_data)]
        await self._operate(saga_id, "retry", check, records)

    async def resolve(self, saga_id: str, *, note: str, by: str | None = None) -> None:
        """Record that a person finished a ``needs_attention`` saga by hand (with ``note``)."""
        if not note.strip():
            raise OperatorActionError(saga_id, "resolve", "say what was done (a note)")
        records: _Records = [
            (RecordTypes.OPERATOR_RESOLVED, None, {"by": by or self.operator, "note": note})
        ]
        await self._operate(
            saga_id, "resolve", lambda state: _check_attention(saga_id, "resolve", state), records
        )

    async def skip(
        self, saga_id: str, step: str, *, result: Any, note: str, by: str | None = None
    ) -> None:
        """Mark a failed forward step done by hand, ``result`` standing for what its action
        would have returned: the saga goes on from the next step, whose ``ctx.results``
        hold it (as does the step's compensation, should the saga compensate later).

        For an operator who did the step's work another way (sent the e-mail by hand while
        the mail server is down). Allowed for the step a saga going forward stopped at,
        when its latest call failed: for good (the saga needs attention), or while it is
        being retried (the saga runs: typically a retriable step after the pivot, retried
        until it succeeds). Refused with :class:`StepActionError` for any other step or
        state, with :class:`OperatorActionError` without a note, and with
        :class:`SerializationError` if ``result`` is not JSON; refused, it records nothing.

        A saga that needs attention is written at once, under a lease, as :meth:`retry`
        does. A running saga is told through its inbox, which makes it due now: its driver
        applies the skip when it takes the message, or drops it with a warning in its log
        if the step's next attempt succeeded in the meantime.
        """
        if not note.strip():
            raise OperatorActionError(saga_id, "skip", "say what was done instead (a note)")
        try:
            encode(result)
        except ENCODE_ERRORS as error:
            raise SerializationError(saga_id, "the skipped step's result", error, step) from error
        request = {"by": by or self.operator, "note": note, "result": result}
        state = await self.state(saga_id)
        _check_skip(saga_id, state, step)
        if state.status is SagaStatuses.RUNNING:
            await self.store.send(saga_id, SKIP, encode({"step": step, **request}))
            return
        records: _Records = [(RecordTypes.OPERATOR_SKIPPED, step, request)]
        await self._operate(
            saga_id, "skip", lambda state: _check_skip(saga_id, state, step), records
        )

    async def migrate(
        self,
        saga_id: str,
        to: Saga,
        *,
        map_steps: Mapping[str, str] | None = None,
        note: str,
        by: str | None = None,
    ) -> None:
        """Move an unfinished saga to ``to``, a newer version of its definition, at a step
        boundary: the steps it has done stay done, and ``to``'s steps run from there. For
        when the old version's code must go; otherwise an instance finishes on its version.

        Allowed while nobody drives the saga (its lease is taken, as :meth:`retry` does)
        and it goes forward: pending, running, or needing attention on its way forward
        (it then goes on, due now, from the first step not done). Refused with
        :class:`OperatorActionError`, recording nothing, for a saga that compensates, has
        finished, or is held by a worker; for a ``to`` of another name, or of the same or
        an older version; and without a note. Refused with :class:`StepActionError`
        naming the step:

        - a call in flight (started, its outcome not recorded), or parked in ``wait_for``,
          or timed out with a retry pending: what it did is not known, nor is it known
          under which step's key to make it again;
        - a step done that does not map onto ``to``: the steps done, in order, must be
          ``to``'s first steps, each of the same kind, by name or renamed through
          ``map_steps`` (old name to new);
        - a compensatable step done, renamed before the pivot: its compensation is handed
          the key the action was made with, and keys derive from step names, so the undo
          would name a key under which nothing was done. Past the pivot nothing done is
          ever compensated, and any step may be renamed;
        - a step of ``to`` not done, named as a done step that was renamed: it would make
          its calls with that step's key and get its answer back.

        What carries over: each step done keeps its result (later steps read it in
        ``ctx.results`` under its new name) and its attempts; its compensation is called
        with the key its action was made with, since its name is kept while it may be
        undone. The steps not done start afresh in ``to`` (one of the same name has the
        same key, as a retry would). ``operator_migrated`` records who,
        why, both versions, ``to``'s steps and the names, and the instance's row moves
        to ``to.version`` in the same transaction, so only workers that registered
        ``to`` claim it (it is due at once).
        """
        if not note.strip():
            raise OperatorActionError(saga_id, "migrate", "say why it moves (a note)")
        if not await self.store.acquire(self.owner, saga_id, _ACT_LEASE):
            await self.state(saga_id)  # an unknown id says so
            raise OperatorActionError(saga_id, "migrate", "it is being driven; try again shortly")
        try:
            state = await self.state(saga_id)
            _check_driven(saga_id, "migrate", state)
            migrated = migration(state, to, map_steps or {}, by or self.operator, note)
            journal = Journal(state)
            journal.add(RecordTypes.OPERATOR_MIGRATED, data=encode(migrated))
            await self.store.append_migrated(saga_id, journal.take(), state.status, to.version)
        finally:
            await self.store.release(self.owner, saga_id, time.time())

    async def _operate(
        self,
        saga_id: str,
        action: str,
        check: Callable[[SagaState], None],
        records: _Records,
    ) -> None:
        """Append ``records`` while holding the instance's lease, if ``check`` (which raises
        to refuse) still passes on the state read under it."""
        if not await self.store.acquire(self.owner, saga_id, _ACT_LEASE):
            await self.state(saga_id)  # an unknown id says so
            raise OperatorActionError(saga_id, action, "it is being driven; try again shortly")
        try:
            state = await self.state(saga_id)
            check(state)
            await self._append(state, records)
        finally:
            await self.store.release(self.owner, saga_id, time.time())

    async def _append(self, state: SagaState, records: _Records) -> None:
        journal = Journal(state)
        for kind, step, data in records:
            journal.add(kind, step, data=encode(data))
        await self.store.append(state.id, journal.take(), state.status)


def _check_driven(saga_id: str, action: str, state: SagaState) -> None:
    """Refuse what only a worker carries out on a saga that services drive."""
    if state.tracked:
        why = (
            "it is a choreographed saga, driven by its services, not by workers: "
            "fix what the services did, then resolve it with a note"
        )
        raise OperatorActionError(saga_id, action, why)


def _check_attention(saga_id: str, action: str, state: SagaState) -> None:
    if state.status is not SagaStatuses.NEEDS_ATTENTION:
        raise OperatorActionError(
            saga_id, action, f"it is {state.status.value}, not needs_attention"
        )


def _check_skip(saga_id: str, state: SagaState, step: str) -> None:
    _check_driven(saga_id, "skip", state)
    why = skip_refusal(state, step)
    if why is not None:
        raise StepActionError(saga_id, "skip", step, why)


def _check_retry_from(saga_id: str, state: SagaState, step: str) -> None:
    why = _retry_from_refusal(state, step)
    if why is not None:
        raise StepActionError(saga_id, "retry", step, why)


def _retry_from_refusal(state: SagaState, step: str) -> str | None:
    """Why a ``needs_attention`` saga cannot be retried from ``step`` (a phrase following
    "step 'x'"), or None; :meth:`Client.retry` says why each case is refused."""
    target = state.by_name.get(step)
    if target is None:
        return f"is not one of its steps ({', '.join(state.by_name)})"
    if state.before_attention is SagaStatuses.COMPENSATING:
        return "cannot be retried from: the saga was compensating (retry it without a step)"
    if target.status is StepStatuses.SUCCEEDED:
        return _why_not_again(state, target.kind)
    stopped = state.steps[state.cursor]  # not past the end: ``target`` has not succeeded
    if target is not stopped:
        return f"has not run: the saga stopped at {stopped.name!r}"
    if target.status is not StepStatuses.FAILED:
        return f"did not fail (it is {target.status.value}): retry without a step"
    return None


def _why_not_again(state: SagaState, kind: str) -> str:
    if kind != StepKinds.COMPENSATABLE.value:
        return f"succeeded, and a {kind} step never runs twice"
    if passed_pivot(state):
        return "succeeded, and running again from it would repeat the pivot and what followed"
    return (
        "succeeded and its effect stands: run again, the work would be done twice "
        "and only the second time ever undone"
    )


def _check_cancel(saga_id: str, state: SagaState) -> None:
    _check_driven(saga_id, "cancel", state)
    if state.status not in (SagaStatuses.PENDING, SagaStatuses.RUNNING):
        raise OperatorActionError(saga_id, "cancel", f"it is {state.status.value}")
    if passed_pivot(state):
        raise OperatorActionError(saga_id, "cancel", "it has passed its pivot: only forward")
