"""An instance's current state, as a fold over its log records.

The engine keeps no state of its own: it applies each record it appends to a
:class:`SagaState`, and recovery rebuilds the same object from the stored records, so a
resumed saga decides exactly as the crashed process would have.

What each record kind carries is typed in :mod:`sagakit.log._payloads`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sagakit.log._codec import decode, encode
from sagakit.log._fast import RecordTypes, SagaStatuses, StepStatuses
from sagakit.log._payloads import (
    Attention,
    CancelRequest,
    Compensating,
    ErrorInfo,
    Failure,
    Migrated,
    OperatorNote,
    Received,
    Skipped,
    StepMeta,
    Waiting,
)
from sagakit.log._records import Record, SagaStatus, StepStatus
from sagakit.log._redaction import NO_REDACTION, Redaction
from sagakit.log._results import Results


@dataclass(slots=True)
class StepState:
    """One step as the log tells it."""

    name: str
    kind: str
    status: StepStatus = StepStatuses.PENDING
    attempts: int = 0
    compensation_attempts: int = 0
    result: str | None = None
    error: ErrorInfo | None = None
    compensation_error: ErrorInfo | None = None
    retry_at: float | None = None
    started_at: float | None = None
    """When the latest call (action or compensation) was started: timeouts count from it."""
    waiting: Waiting | None = None
    """What the current call waits for."""
    retry_base: int = 0
    """Attempts made before an operator's retry; retry policies count from here."""
    compensation_retry_base: int = 0
    skipped_by: OperatorNote | None = None
    """Who marked the failed step done by hand, and why (``operator_skipped``); its result is
    then theirs. Not :attr:`StepStatus.SKIPPED`, which is a step that never ran."""

    def as_dict(self, shown: Redaction = NO_REDACTION) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status.value,
            "attempts": self.attempts,
            "compensation_attempts": self.compensation_attempts,
            "result": None if self.result is None else shown(decode(self.result)),
            "error": self.error,
            "compensation_error": self.compensation_error,
            "retry_at": self.retry_at,
            "waiting": self.waiting,
            "skipped_by": self.skipped_by,
        }


TRACKED_FACTS = frozenset({"event", "source", "event_id", "causation_id"})
"""The keys a tracker puts in each record it makes from a choreographed saga's event."""


@dataclass(slots=True)
class SagaState:
    """An instance's state; build it with :meth:`from_records` or by :meth:`apply`."""

    id: str
    name: str = ""
    version: int = 0
    status: SagaStatus = SagaStatuses.PENDING
    input_json: str = "null"
    deadline_at: float | None = None
    steps: list[StepState] = field(default_factory=list)
    by_name: dict[str, StepState] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    """Step names in the order their actions succeeded: compensation runs it backwards."""
    raw_results: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    failed_compensations: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    signals: dict[str, str] = field(default_factory=dict)
    """Payloads (JSON) of the messages taken, by name; the latest of a name wins."""
    last_message: int = 0
    """Id of the last inbox message taken: newer ones are still to take."""
    cancel: CancelRequest | None = None
    resolution: OperatorNote | None = None
    before_attention: SagaStatus | None = None
    """Whether it was going forward or compensating when it needed attention."""
    reason_before_attention: str | None = None
    """Why it was compensating when it needed attention (None going forward): what an
    operator's retry goes back to, so an old reason neither lingers nor repeats."""
    cursor: int = 0
    """Index of the first step whose action has not succeeded (``len(steps)`` when none)."""
    redaction: Redaction = NO_REDACTION
    """The payload fields its definition named as secret (``saga_started`` carries them):
    what every reader masks before showing a payload."""
    trace: str | None = None
    """The W3C ``traceparent`` the saga was started in (``saga_started`` carries it when
    it was traced): the parent of each drive's span."""

    @property
    def tracked(self) -> bool:
        """Whether a choreography tracker wrote this log from events (its first record
        after ``saga_started`` with a payload carries the event's facts): services drive
        such a saga, so what only a worker does (retry, skip, cancel, a signal) is not for it."""
        for record in self.records[1:]:
            if record.data is not None:
                first = decode(record.data)
                return isinstance(first, dict) and first.keys() >= TRACKED_FACTS
        return False

    @property
    def input(self) -> Any:
        """The saga's input, decoded afresh for each reader, so no step can change what
        the next one (or a resumed run) sees."""
        return decode(self.input_json)

    @property
    def results(self) -> Results:
        """The results recorded so far (a snapshot; each is decoded when it is read)."""
        return Results(self.raw_results)

    @classmethod
    def from_records(
        cls, saga_id: str, records: Iterable[Record], started: dict[str, Any] | None = None
    ) -> SagaState:
        """The state ``records`` fold to; ``started`` may carry the ``saga_started``
        record's fields already read, as :meth:`apply` takes them."""
        state = cls(saga_id)
        for record in records:
            state.apply(record, started)
            started = None
        return state

    @property
    def next_seq(self) -> int:
        return len(self.records)

    def apply(self, record: Record, started: dict[str, Any] | None = None) -> None:
        """Advance the state by one record; the only way the state ever changes.

        ``started`` may carry a ``saga_started`` record's fields already decoded, as the
        engine has them, to save decoding what it has just encoded.
        """
        self.records.append(record)
        kind = record.type
        if kind is RecordTypes.STEP_STARTED:
            step = self.by_name[record.step or ""]
            step.status = StepStatuses.RUNNING
            step.attempts = record.attempt
            step.retry_at = None
            step.started_at = record.at
            if self.status is SagaStatuses.PENDING:
                self.status = SagaStatuses.RUNNING
        elif kind is RecordTypes.STEP_SUCCEEDED:
            step = self.by_name[record.step or ""]
            step.status = StepStatuses.SUCCEEDED
            step.result = result = record.data or "null"
            step.error = None  # an earlier attempt's failure no longer describes the step
            step.waiting = None
            self.raw_results[step.name] = result
            self.completed.append(step.name)
            steps, cursor = self.steps, self.cursor
            while cursor < len(steps) and steps[cursor].status is StepStatuses.SUCCEEDED:
                cursor += 1
            self.cursor = cursor
        elif kind is RecordTypes.STEP_FAILED:
            step = self.by_name[record.step or ""]
            failure: Failure = _payload(record)
            step.status = StepStatuses.FAILED
            step.error = failure["error"]
            step.retry_at = failure["retry_at"]
            step.waiting = None
        elif kind is RecordTypes.COMPENSATION_STARTED:
            step = self.by_name[record.step or ""]
            step.status = StepStatuses.COMPENSATING
            step.compensation_attempts = record.attempt
            step.retry_at = None
            step.started_at = record.at
        elif kind is RecordTypes.COMPENSATION_SUCCEEDED:
            step = self.by_name[record.step or ""]
            step.status = StepStatuses.COMPENSATED
            step.waiting = None
        elif kind is RecordTypes.COMPENSATION_FAILED:
            step = self.by_name[record.step or ""]
            failure = _payload(record)
            step.status = StepStatuses.COMPENSATION_FAILED
            step.compensation_error = failure["error"]
            step.retry_at = failure["retry_at"]
            step.waiting = None
        elif kind is RecordTypes.SAGA_STARTED:
            self.begin(**(started or _started_fields(record.data or "{}")))
        elif kind is RecordTypes.SAGA_COMPENSATING:
            compensating: Compensating = _payload(record)
            self.status = SagaStatuses.COMPENSATING
            self.reason = compensating["reason"]
        elif kind is RecordTypes.SAGA_COMPLETED:
            self.status = SagaStatuses.COMPLETED
        elif kind is RecordTypes.SAGA_COMPENSATED:
            self.status = SagaStatuses.COMPENSATED
            self._skip_pending()
        elif kind is RecordTypes.SAGA_NEEDS_ATTENTION:
            attention: Attention = _payload(record)
            self.before_attention = self.status
            self.reason_before_attention = self.reason
            self.status = SagaStatuses.NEEDS_ATTENTION
            self.reason = attention["reason"]
            self.failed_compensations = list(attention["failed"])
            self._skip_pending()
        else:
            self._apply_rare(record)

    def _apply_rare(self, record: Record) -> None:
        """Waits, messages and operators' actions: off the hot path, so kept apart."""
        kind = record.type
        if kind is RecordTypes.STEP_WAITING:
            step = self.by_name[record.step or ""]
            step.status = StepStatuses.WAITING
            step.waiting = _payload(record)
        elif kind is RecordTypes.MESSAGE_RECEIVED:
            message: Received = _payload(record)
            self.signals[message["name"]] = message["payload"]
            self.last_message = message["id"]
        elif kind is RecordTypes.CANCEL_REQUESTED:
            self.cancel = _payload(record)
        elif kind is RecordTypes.OPERATOR_RETRY:
            self._retry(record.at, record.step)
        elif kind is RecordTypes.OPERATOR_RESOLVED:
            self.resolution = _payload(record)
            forward = self.before_attention in (SagaStatuses.RUNNING, SagaStatuses.PENDING)
            self.status = SagaStatuses.COMPLETED if forward else SagaStatuses.COMPENSATED
        elif kind is RecordTypes.OPERATOR_SKIPPED:
            self._skip(self.by_name[record.step or ""], _payload(record))
        elif kind is RecordTypes.OPERATOR_MIGRATED:
            self._migrate(_payload(record))

    def _retry(self, at: float, from_step: str | None) -> None:
        """An operator's retry: the calls that failed for good are due again, with a fresh
        retry budget, and the saga goes back to what it was doing. ``from_step`` (a failed
        step) gets a fresh budget and is due now even if it was waiting out a back-off."""
        self._reopen()
        for step in self.steps:
            if step.status is StepStatuses.COMPENSATION_FAILED and step.retry_at is None:
                step.retry_at = at
                step.compensation_retry_base = step.compensation_attempts
            elif step.status is StepStatuses.FAILED and (
                step.retry_at is None or step.name == from_step
            ):
                step.retry_at = at
                step.retry_base = step.attempts

    def _skip(self, step: StepState, skipped: Skipped) -> None:
        """An operator did a failed forward step by hand: it succeeded with their result,
        and a saga that needed attention goes forward again from the next step."""
        if self.status is SagaStatuses.NEEDS_ATTENTION:
            self._reopen()
        step.status = StepStatuses.SUCCEEDED
        step.result = result = encode(skipped["result"])
        step.skipped_by = {"by": skipped["by"], "note": skipped["note"]}
        step.error = step.retry_at = step.waiting = None
        self.raw_results[step.name] = result
        self.completed.append(step.name)
        steps = self.steps
        while self.cursor < len(steps) and steps[self.cursor].status is StepStatuses.SUCCEEDED:
            self.cursor += 1

    def _migrate(self, migrated: Migrated) -> None:
        """An operator moved the saga to a newer version at a step boundary: its steps are
        the new version's, those done keep their state and results under their new names,
        and a saga that needed attention goes forward again from the first step not done."""
        if self.status is SagaStatuses.NEEDS_ATTENTION:
            self._reopen()
        renamed = migrated["renamed"]
        done = {renamed[s.name]: s for s in self.steps if s.name in renamed}
        self.version = migrated["to_version"]
        self.steps = [
            replace(done[s["name"]], name=s["name"])
            if s["name"] in done
            else StepState(s["name"], s["kind"])
            for s in migrated["steps"]
        ]
        self.by_name = {s.name: s for s in self.steps}
        self.completed = [renamed[name] for name in self.completed if name in renamed]
        self.raw_results = {
            renamed[name]: result for name, result in self.raw_results.items() if name in renamed
        }
        self.cursor = 0
        while self.cursor < len(self.steps) and self.steps[self.cursor].name in done:
            self.cursor += 1

    def _reopen(self) -> None:
        """Leave ``needs_attention`` for what the saga was doing before, as it was then."""
        self.status = self.before_attention or SagaStatuses.RUNNING
        self.reason = self.reason_before_attention
        self.failed_compensations = []
        if self.status is SagaStatuses.RUNNING:
            for step in self.steps:
                if step.status is StepStatuses.SKIPPED:
                    step.status = StepStatuses.PENDING

    def begin(
        self,
        name: str,
        version: int,
        steps: list[StepMeta],
        deadline_at: float | None,
        input_json: str,
        redact: Sequence[str] = (),
        trace: str | None = None,
    ) -> None:
        """Start the instance as a ``saga_started`` record with these fields says."""
        if redact:
            self.redaction = Redaction(redact)
        self.trace = trace
        self.name = name
        self.version = version
        self.input_json = input_json
        self.deadline_at = deadline_at
        self.status = SagaStatuses.PENDING
        self.steps = [StepState(s["name"], s["kind"]) for s in steps]
        self.by_name = {s.name: s for s in self.steps}

    def _skip_pending(self) -> None:
        for step in self.steps:
            if step.status is StepStatuses.PENDING:
                step.status = StepStatuses.SKIPPED

    def as_dict(self, events: bool = True) -> dict[str, Any]:
        """The JSON shape ``sagakit show --json`` prints (``list --json`` without events)."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "status": self.status.value,
            "input": self.redaction(self.input),
            "reason": self.reason,
            "failed_compensations": self.failed_compensations,
            "cancel": self.cancel,
            "resolution": self.resolution,
            "started_at": self.records[0].at if self.records else None,
            "updated_at": self.records[-1].at if self.records else None,
            "steps": [s.as_dict(self.redaction) for s in self.steps],
        }
        if events:
            out["events"] = [
                {
                    "seq": r.seq,
                    "type": r.type.value,
                    "at": r.at,
                    "step": r.step,
                    "attempt": r.attempt,
                    "data": shown_data(r, self.redaction),
                }
                for r in self.records
            ]
        return out


def shown_data(record: Record, redaction: Redaction) -> Any:
    """A record's payload decoded, its secret fields masked, as a reader may show it.

    A message's payload is JSON text inside the record's JSON: it is masked as JSON too."""
    data = None if record.data is None else decode(record.data)
    if not redaction or data is None:
        return data
    if record.type is RecordTypes.MESSAGE_RECEIVED and isinstance(data.get("payload"), str):
        data["payload"] = encode(redaction(decode(data["payload"])))
    return redaction(data)


def _payload(record: Record) -> Any:
    """The record's payload, decoded; its type is the record kind's (see ``_payloads``)."""
    return None if record.data is None else decode(record.data)


def _started_fields(data: str) -> dict[str, Any]:
    """A ``saga_started`` payload as :meth:`SagaState.begin` takes it."""
    fields: dict[str, Any] = decode(data)
    fields["input_json"] = encode(fields.pop("input"))
    return fields
