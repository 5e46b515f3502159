"""What every run of a registered saga shares, and the facts both the engine and the client
derive from a saga's log: ids, idempotency keys, the cancel and skip messages, the point of no
return, and when a step may be skipped."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from typing import Any

from sagakit.errors import SagaIdConflictError, SerializationError, StepTimeoutError
from sagakit.log import ErrorInfo, Instance, Journal, Record, SagaState, StepMeta, StepState
from sagakit.log._codec import ENCODE_ERRORS, decode, encode, is_last_value
from sagakit.log._fast import RecordTypes, SagaStatuses, StepKinds, StepStatuses
from sagakit.orchestration._definition import Saga
from sagakit.store import FirstCall

CANCEL = "sagakit.cancel"
"""The inbox message that asks a running saga to compensate."""
SKIP = "sagakit.skip"
"""The inbox message that tells a running saga an operator did its failing step by hand."""


def passed_pivot(state: SagaState) -> bool:
    """Has the saga gone past its point of no return (the pivot, or any retriable step)?"""
    return any(
        (s.kind == StepKinds.PIVOT.value and s.status is StepStatuses.SUCCEEDED)
        or (s.kind == StepKinds.RETRIABLE.value and s.attempts > 0)
        for s in state.steps
    )


def unsettled(state: SagaState) -> StepState | None:
    """The forward step whose outcome is unknown, if there is one: it must be settled (its
    action made again with the same key) before a cancel may compensate the saga.

    That is a call started with no outcome recorded (its process died, or lost its lease,
    mid-call), and a failure with a retry pending that may have applied the action: a
    timeout, which cut the call off without an answer. A service that answered with an
    error is taken at its word (it did nothing); a step that may do part of its work
    before it fails says so with ``compensate_on_failure`` and is undone either way.
    A step parked in ``wait_for`` is not in flight: a cancel compensates it at once.
    """
    if state.cursor == len(state.steps):
        return None
    step = state.steps[state.cursor]
    status = step.status
    if status is StepStatuses.RUNNING:
        return step
    if status is StepStatuses.FAILED and step.retry_at is not None and _cut_off(step.error):
        return step
    return None


def _cut_off(error: ErrorInfo | None) -> bool:
    return error is not None and error["type"] == _TIMEOUT


_TIMEOUT = f"{StepTimeoutError.__module__}.{StepTimeoutError.__qualname__}"


def cancel_pending(state: SagaState) -> bool:
    """Was the saga's latest cancel taken but neither carried out nor refused yet (a call
    it waits to settle was still in flight when the process driving it stopped)?"""
    if state.cancel is None or state.status not in (SagaStatuses.RUNNING, SagaStatuses.PENDING):
        return False
    for record in reversed(state.records):
        kind = record.type
        if kind is RecordTypes.CANCEL_REQUESTED:
            return True
        if kind is RecordTypes.CANCEL_REFUSED or kind is RecordTypes.SAGA_COMPENSATING:
            return False
    return False


def cancel_reason(request: Mapping[str, Any]) -> str:
    """Why a cancelled saga compensates, as its ``saga_compensating`` record says."""
    by, why = request.get("by", "someone"), request.get("reason", "")
    return f"cancelled by {by}" + (f": {why}" if why else "")


def skip_refusal(state: SagaState, step: str) -> str | None:
    """Why an operator may not mark ``step`` done now (a phrase that follows "step 'x'"),
    or None if they may.

    Only a forward step whose latest call failed can be skipped: one retrying (its saga
    running) or failed for good (its saga needing attention). A call in flight or waiting
    may still succeed, and a compensating saga is undoing steps, not doing them.
    """
    target = state.by_name.get(step)
    if target is None:
        return f"is not one of its steps ({', '.join(state.by_name)})"
    status = state.status
    going = state.before_attention if status is SagaStatuses.NEEDS_ATTENTION else status
    if going is SagaStatuses.COMPENSATING:
        return "cannot be skipped while the saga compensates: only steps going forward can"
    if status is not SagaStatuses.RUNNING and status is not SagaStatuses.NEEDS_ATTENTION:
        return f"cannot be skipped: the saga is {status.value}"
    if target.status is not StepStatuses.FAILED:
        return f"did not fail (it is {target.status.value})"
    return None


class Plan:
    """A registered saga with what every run of it needs computed once."""

    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        self.steps_meta: list[StepMeta] = [
            {"name": s.name, "kind": s.kind.value} for s in saga.steps
        ]
        self._untimed_fields: dict[str, Any] = {  # as SagaState.begin takes them
            "name": saga.name,
            "version": saga.version,
            "steps": self.steps_meta,
            "deadline_at": None,
        }
        if saga.redact:
            self._untimed_fields["redact"] = saga.redact
        secret = f'"redact":{encode(list(saga.redact))},' if saga.redact else ""
        self.head = (
            f'{{"name":{encode(saga.name)},"version":{saga.version},'
            f'"steps":{encode(self.steps_meta)},{secret}'
        )
        self.untimed = f'{self.head}"deadline_at":null,"input":'
        """How a ``saga_started`` payload that :meth:`begin` wrote for this definition, with
        no deadline and no trace, begins: all of it but the input and the closing brace."""

    def first_call(self, started_by: str) -> FirstCall | None:
        """What a claim may record for a fresh instance of this saga before its driver
        runs (``started_by``: the claimer's ``CallStarted``): its first step started, as
        the driver would record it first, unless the saga has a deadline to check first."""
        if self.saga.deadline is not None:
            return None
        return FirstCall(self.untimed, self.saga.steps[0].name, started_by)

    def started_fields(self, data: str) -> dict[str, Any] | None:
        """A ``saga_started`` payload's fields as :meth:`SagaState.begin` takes them, if
        :meth:`begin` wrote it for this definition with no deadline or trace (None
        otherwise): the definition's own, and the input's text as it stands, scanned but
        neither decoded into the state nor encoded again, as a worker resumes every saga."""
        untimed = self.untimed
        if not data.startswith(untimed) or not is_last_value(data, len(untimed)):
            return None
        return {**self._untimed_fields, "input_json": data[len(untimed) : -1]}

    def begin(self, saga_id: str, input: Any, trace: str | None = None) -> Journal:
        """A new instance's journal holding its ``saga_started`` record; raises
        :class:`SerializationError` if ``input`` is not JSON, having recorded nothing.
        ``trace``: the ``traceparent`` the saga was started in, kept when given."""
        encoded, data, now, deadline_at = self._started(input, trace)
        started = {**self._untimed_fields, "deadline_at": deadline_at, "input_json": encoded}
        if trace is not None:
            started["trace"] = trace
        return Journal.begin(saga_id, data, now, started)

    def opening(
        self, saga_id: str, input: Any, trace: str | None = None
    ) -> tuple[Instance, Record]:
        """What :meth:`begin` records, as a new instance's row (due now) and its
        ``saga_started`` record, with no state folded: a client starting a saga for a
        worker to drive stores these two and reads nothing back."""
        _, data, now, _ = self._started(input, trace)
        return Journal.opening(saga_id, self.saga.name, self.saga.version, data, now)

    def _started(self, input: Any, trace: str | None) -> tuple[str, str, float, float | None]:
        """The input's JSON, the ``saga_started`` payload around it, when, and the deadline."""
        try:
            encoded = encode(input)
        except ENCODE_ERRORS as error:
            raise SerializationError(self.saga.name, "the input", error) from error
        now = time.time()
        deadline_at = None if self.saga.deadline is None else now + self.saga.deadline
        head = self.head if trace is None else f'{self.head}"trace":{encode(trace)},'
        return (
            encoded,
            f'{head}"deadline_at":{encode(deadline_at)},"input":{encoded}}}',
            now,
            deadline_at,
        )


def same_start(existing: SagaState, asked: SagaState) -> None:
    """Refuse a start whose saga id is already an instance of another saga or input.

    The version may differ: an operator may have moved the instance to a newer one, and the
    caller repeating its start still means that instance.
    """
    if existing.name != asked.name:
        raise SagaIdConflictError(
            asked.id, f"an instance of {existing.name!r}", f"of {asked.name!r}"
        )
    if decode(existing.input_json) != decode(asked.input_json):
        raise SagaIdConflictError(
            asked.id, f"an instance of {existing.name!r} with another input", "this one"
        )


def _reseed() -> None:
    _ids.seed(os.urandom(32))


_ids = random.Random(os.urandom(32))
"""The random half of saga ids: seeded from the OS (and again in a forked child, so parent
and child never draw the same ids), private so that no ``random.seed`` of the application
repeats them, and not a system call per id as ``os.urandom`` is (an id 0.75 to 0.51 us).
An id must be unique, not unguessable: nothing is authorised by knowing one."""
os.register_at_fork(after_in_child=_reseed)


def new_saga_id() -> str:
    """A fresh id: 12 hex digits of milliseconds since the epoch, then 80 random bits.

    Ids in creation order keep a database's primary-key index appending at its right edge
    (as UUIDv7 does) instead of touching a random page per new saga, which roughly halved
    the pages each SQLite group commit writes.
    """
    return f"{time.time_ns() // 1_000_000:012x}{_ids.getrandbits(80):020x}"


def log_fields(
    saga_id: str, name: str, version: int, step: str | None = None, attempt: int = 0, role: str = ""
) -> dict[str, Any]:
    """The ``extra=`` fields of a log record about a saga (and one call of a step), so logs
    can be searched by saga, step and idempotency key."""
    fields: dict[str, Any] = {"saga_id": saga_id, "saga_name": name, "saga_version": version}
    if step is not None:
        fields.update(step=step, attempt=attempt, key=idempotency_key(saga_id, step, role))
    return fields


def idempotency_key(saga_id: str, step: str, role: str = "action") -> str:
    """The key handed to every call of ``step``'s action or compensation in this instance.

    It is derived, never stored: the same in every attempt, process and worker.
    """
    return f"{saga_id}:{step}:{role}"
