"""The payload of each kind of log record, as a type: what ``Record.data`` holds, as JSON.

================================  ==========================================================
``saga_started``                  :class:`Started`
``step_started``                  :class:`CallStarted`, or null (written before the holder
                                  was kept); the idempotency key is derived, see
                                  :func:`sagakit.orchestration.idempotency_key`
``step_succeeded``                the step's result itself
``step_failed``                   :class:`Failure`; ``retry_at`` null: the failure is final
``saga_compensating``             :class:`Compensating`
``compensation_started``          :class:`CallStarted`, or null
``compensation_succeeded``        null
``compensation_failed``           :class:`Failure`
``saga_completed``, ``saga_compensated``  null
``saga_needs_attention``          :class:`Attention`
``step_waiting``                  :class:`Waiting`
``message_received``              :class:`Received`: an inbox message taken
``cancel_requested``              :class:`CancelRequest`
``operator_retry``                :class:`OperatorNote`: try the failed calls again (with
                                  the record's ``step`` set: from that failed step)
``operator_resolved``             :class:`OperatorNote`: a person finished the saga by hand
``operator_skipped``              :class:`Skipped`: a person did the record's failed step
``call_taken_over``               :class:`TakenOver`: a holder resumes the record's call that
                                  another started, making it again with the same key
``cancel_refused``                :class:`CancelRefused`: a cancel that came too late
``operator_migrated``             :class:`Migrated`: a person moved it to a newer version
================================  ==========================================================

A tracker adds the facts of the event behind a record (``event``, ``source``, ``event_id``,
``causation_id``) to these; readers ignore keys they do not know.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class StepMeta(TypedDict):
    """A step as ``saga_started`` lists it: enough to refuse a changed definition."""

    name: str
    kind: str


class Started(TypedDict):
    name: str
    version: int
    input: Any
    steps: list[StepMeta]
    deadline_at: float | None
    redact: NotRequired[list[str]]
    """The payload fields the definition names as secret, when it names any."""
    trace: NotRequired[str]
    """The W3C ``traceparent`` of the span the saga was started in (OpenTelemetry installed
    and configured): every drive of the instance continues that trace."""


class ErrorInfo(TypedDict):
    """An exception as the log keeps it: its qualified type name and its message."""

    type: str
    message: str
    traceback: NotRequired[str]
    """Where it was raised, as Python formats it, bounded (its last frames and the exception
    line, after a first line saying how much was cut); absent in logs written before it
    was kept, and for errors sagakit makes up rather than catches."""


class Failure(TypedDict):
    error: ErrorInfo
    retry_at: float | None


class Compensating(TypedDict):
    reason: str


class Attention(TypedDict):
    reason: str | None
    failed: list[str]
    """The steps whose compensation did not finish."""


class Waiting(TypedDict):
    """The call (``role``: action or compensation) waits for ``signal`` until ``until``."""

    signal: str
    until: float | None
    role: str


class Received(TypedDict):
    id: int
    name: str
    payload: str
    """The message's payload, JSON text."""


class CancelRequest(TypedDict):
    by: str
    reason: str


class OperatorNote(TypedDict):
    by: str
    note: str


class Skipped(OperatorNote):
    """An operator marked a failed forward step done: ``result`` stands for what it returns."""

    result: Any


class Migrated(OperatorNote):
    """An operator moved an unfinished saga to a newer version of its definition at a step
    boundary: its steps become ``steps``; the steps done keep their state and results
    under the names ``renamed`` gives them (old name to new, every step done listed)."""

    from_version: int
    to_version: int
    steps: list[StepMeta]
    renamed: dict[str, str]


class CallStarted(TypedDict):
    """Who made the call: the lease holder (``host:pid:tag``), so that the holder who takes
    it over after a crash can say whose call it makes again."""

    holder: str
    drive: NotRequired[str]
    """The ``traceparent`` of the drive that made the call, when it was traced: the next
    drive's span links to it."""


class TakenOver(TypedDict):
    """The record's call (``role``: action or compensation, its ``step`` and ``attempt``)
    was started by ``previous`` (None: not recorded), whose lease lapsed before it recorded
    an outcome; ``holder`` makes it again with the idempotency key ``key``."""

    previous: str | None
    holder: str
    role: str
    key: str


class CancelRefused(TypedDict):
    """A cancel by ``by`` was not carried out, and why (the saga went past its pivot)."""

    by: str
    reason: str
