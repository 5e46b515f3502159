"""The saga log's vocabulary: statuses and the records every transition appends.

The log is append-only; an instance's current state is a fold over its records
(:class:`~sagakit.log.SagaState`). Record payloads are JSON text, written by the engine once, so a
store never has to encode, and nothing is ever unpickled.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class SagaStatus(StrEnum):
    """Where a saga instance is in its lifecycle (see shared/DESIGN.md)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_ATTENTION = "needs_attention"

    @property
    def is_terminal(self) -> bool:
        """Nothing will happen to the instance unless an operator acts."""
        return self in TERMINAL


TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.NEEDS_ATTENTION})
"""Statuses in which nothing happens unless an operator acts (``status in TERMINAL`` is
the fast spelling of ``status.is_terminal`` for hot paths)."""
UNFINISHED = (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)


class StepStatus(StrEnum):
    """Where one step is; derived from the log, never stored on its own."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    SKIPPED = "skipped"


class StepKind(StrEnum):
    """Garcia-Molina & Salem's step kinds, as Richardson names them."""

    COMPENSATABLE = "compensatable"
    """May be undone by its compensation if a later step fails."""
    PIVOT = "pivot"
    """The go/no-go point: once it succeeds the saga only goes forward."""
    RETRIABLE = "retriable"
    """After the pivot; never compensated, retried until it succeeds."""


class RecordType(StrEnum):
    """What a log record says happened."""

    SAGA_STARTED = "saga_started"
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    SAGA_COMPENSATING = "saga_compensating"
    COMPENSATION_STARTED = "compensation_started"
    COMPENSATION_SUCCEEDED = "compensation_succeeded"
    COMPENSATION_FAILED = "compensation_failed"
    SAGA_COMPLETED = "saga_completed"
    SAGA_COMPENSATED = "saga_compensated"
    SAGA_NEEDS_ATTENTION = "saga_needs_attention"
    STEP_WAITING = "step_waiting"
    MESSAGE_RECEIVED = "message_received"
    CANCEL_REQUESTED = "cancel_requested"
    OPERATOR_RETRY = "operator_retry"
    OPERATOR_RESOLVED = "operator_resolved"
    OPERATOR_SKIPPED = "operator_skipped"
    CALL_TAKEN_OVER = "call_taken_over"
    CANCEL_REFUSED = "cancel_refused"
    OPERATOR_MIGRATED = "operator_migrated"


class Record(NamedTuple):
    """One transition of one saga instance.

    ``seq`` numbers an instance's records from 0 with no gaps; a store refuses a second
    record at the same position, which is how two writers of one instance are caught.
    A named tuple, not a dataclass: the engine makes several per step, and it is immutable
    and three times cheaper to build.
    ``data`` is JSON text or None: for ``step_succeeded`` the step's result itself, for
    the other types an object whose fields are listed in :mod:`sagakit.log._state`.
    """

    seq: int
    type: RecordType
    at: float
    step: str | None = None
    attempt: int = 0
    data: str | None = None


class Instance(NamedTuple):
    """The current-state row of one instance, kept beside the log for queries and scheduling.

    ``due_at`` is when a worker should next pick the instance up (a retry's back-off, a
    wait's timeout, or now for a new or signalled one); None while it is being driven or
    waits for nothing. ``lease_owner`` holds it until ``lease_expires``: the owner renews
    the lease while it works, and another worker may take the instance once it lapses.
    """

    id: str
    name: str
    version: int
    status: SagaStatus
    created_at: float
    updated_at: float
    due_at: float | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None


class Message(NamedTuple):
    """Something sent to one instance from outside: a signal, or an operator's command.

    Messages wait in the instance's inbox until its engine records them in the log
    (``message_received``), which is how a message is taken exactly once.
    """

    id: int
    saga_id: str
    name: str
    payload: str
    """JSON text."""
    at: float
