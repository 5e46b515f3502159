"""What the dashboard's pages show of a saga, worked out once from its row and its log.

The templates only lay these values out: every decision (what a record's detail is, which
attempt failed how, who holds the lease, what an operator did) is made here, on the same
folded :class:`SagaState` recovery reads. Every payload in it passed through
:func:`~sagakit.dashboard._payloads.shown`; every other text is escaped by the templates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagakit._graph import instance_graph
from sagakit._timeline import Attempt, attempts, duration, local_time, remaining
from sagakit.dashboard._payloads import shown
from sagakit.log import Record, RecordType, SagaState, StepStatus
from sagakit.operations import SagaView
from sagakit.orchestration import idempotency_key

_SHORT = 160
"""Characters of a payload shown in a timeline row; the payload sections have all of it."""
_TRACKED = frozenset({"event", "source", "event_id", "causation_id"})
OPERATOR_RECORDS = frozenset(
    {
        RecordType.OPERATOR_RETRY,
        RecordType.OPERATOR_RESOLVED,
        RecordType.OPERATOR_SKIPPED,
        RecordType.OPERATOR_MIGRATED,
        RecordType.CANCEL_REQUESTED,
        RecordType.CANCEL_REFUSED,
    }
)
_CLOCK = "%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class Row:
    """One record of the timeline."""

    seq: int
    since: str
    at: str
    event: str
    step: str
    attempt: str
    detail: str
    tone: str


@dataclass(frozen=True, slots=True)
class Try:
    """One attempt of one call."""

    number: int
    outcome: str
    started: str
    took: str
    error: str
    then: str
    traceback: str
    waiting: str


@dataclass(frozen=True, slots=True)
class Call:
    """Every attempt of one step's action, or of its compensation."""

    step: str
    role: str
    key: str
    tries: list[Try]


@dataclass(frozen=True, slots=True)
class Wait:
    step: str
    role: str
    signal: str
    since: str
    until: str
    current: bool


@dataclass(frozen=True, slots=True)
class Act:
    """One operator record: who did what, when and why."""

    at: str
    what: str
    step: str
    by: str
    why: str
    result: str | None


@dataclass(frozen=True, slots=True)
class StepRow:
    name: str
    kind: str
    status: str
    tries: int
    undo_tries: int
    error: str
    undo_error: str
    retry_at: str
    skipped_by: str


@dataclass(frozen=True, slots=True)
class Payload:
    """A payload to show whole: what it belongs to, when, and its pretty JSON."""

    title: str
    text: str
    note: str = ""


@dataclass
class SagaPage:
    """Everything the saga page shows."""

    view: SagaView
    status: str
    resolved: bool
    started: str
    lease: str
    due: str
    progress: list[tuple[str, str]]
    steps: list[StepRow]
    calls: list[Call]
    waits: list[Wait]
    history: list[Act]
    input: str
    results: list[Payload]
    signals: list[Payload]
    timeline: list[Row]
    graph: str
    version: str
    step_names: list[str] = field(default_factory=list)


def saga_page(view: SagaView, now: float) -> SagaPage:
    """The saga page's content for ``view`` as it is at ``now``."""
    state = view.state
    return SagaPage(
        view=view,
        status=state.status.value,
        resolved=state.resolution is not None,
        started=local_time(state.records[0].at) if state.records else "",
        lease=lease_text(view, now),
        due=due_text(view, now),
        progress=progress(state),
        steps=[_step_row(step) for step in state.steps],
        calls=calls(state),
        waits=waits(state),
        history=history(state),
        input=pretty(shown(state, state.input)),
        results=results(state),
        signals=signals(state),
        timeline=timeline(state),
        graph=instance_graph(state),
        version=signature(view),
        step_names=[step.name for step in state.steps],
    )


def signature(view: SagaView) -> str:
    """What changes whenever anything the saga page shows does (for live updates)."""
    instance = view.instance
    parts = (len(view.state.records), instance.status.value, instance.lease_owner)
    return json.dumps([*parts, instance.lease_expires, instance.due_at])


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"


# --------------------------------------------------------------------------- the list


@dataclass(frozen=True, slots=True)
class ListRow:
    id: str
    saga: str
    status: str
    resolved: bool
    steps: str
    updated: str
    next: str


def list_row(view: SagaView, now: float) -> ListRow:
    """A saga as one line of the list: as ``sagakit list`` prints it."""
    state = view.state
    done = sum(s.status is StepStatus.SUCCEEDED for s in state.steps)
    undone = sum(s.status is StepStatus.COMPENSATED for s in state.steps)
    steps = f"{done}/{len(state.steps)}" + (f", {undone} undone" if undone else "")
    updated = state.records[-1].at if state.records else view.instance.updated_at
    return ListRow(
        id=state.id,
        saga=f"{state.name}@{state.version}",
        status=state.status.value,
        resolved=state.resolution is not None,
        steps=steps,
        updated=local_time(updated, _CLOCK),
        next=next_text(view, now),
    )


def next_text(view: SagaView, now: float) -> str:
    """Who or what an unfinished saga waits on: a signal, a worker, a time."""
    instance = view.instance
    if view.state.status.is_terminal:
        return ""
    waiting = view.waiting
    if waiting is not None:
        until = waiting[1]["until"]
        text = f"waits for {waiting[1]['signal']!r}"
        return text + ("" if until is None else f" until {local_time(until, _CLOCK)}")
    if instance.lease_owner is not None and instance.lease_expires is not None:
        verb = "held by" if instance.lease_expires > now else "lease lapsed:"
        return f"{verb} {instance.lease_owner} until {local_time(instance.lease_expires, _CLOCK)}"
    if instance.due_at is not None:
        return "due now" if instance.due_at <= now else f"due {local_time(instance.due_at, _CLOCK)}"
    return "not due"


# --------------------------------------------------------------------------- the header


def lease_text(view: SagaView, now: float) -> str:
    """Who holds the saga until when (and whether that lapsed): ``""`` if nobody needs to."""
    instance, unfinished = view.instance, not view.state.status.is_terminal
    owner, until = instance.lease_owner, instance.lease_expires
    if owner is None:
        return "nobody" if unfinished else ""
    if until is None:
        return owner
    lapsed = " (lapsed)" if until <= now else ""
    return f"{owner} until {local_time(until)}{lapsed}"


def due_text(view: SagaView, now: float) -> str:
    """When a worker should next pick the saga up, or why it has no such time."""
    state, instance = view.state, view.instance
    due = instance.due_at
    if due is not None:
        return local_time(due) + (" (now)" if due <= now else "")
    if state.status.is_terminal:
        return ""
    if instance.lease_owner is not None:
        return "when its holder hands it back"
    if any(step.status is StepStatus.WAITING for step in state.steps):
        return "when a message comes"
    return "not scheduled"


def progress(state: SagaState) -> list[tuple[str, str]]:
    """What stands, what was undone, what could not be, and what is left."""
    steps, not_undone = state.steps, state.failed_compensations
    label, left = remaining(state)
    lines = [
        ("done", [s.name for s in steps if s.status is StepStatus.SUCCEEDED]),
        ("undone", [s.name for s in steps if s.status is StepStatus.COMPENSATED]),
        ("not undone", list(not_undone)),
        (label, [name for name in left if name not in not_undone]),
    ]
    return [(title, ", ".join(names)) for title, names in lines if names]


def _step_row(step: Any) -> StepRow:
    skipped = step.skipped_by
    return StepRow(
        name=step.name,
        kind=step.kind,
        status=step.status.value,
        tries=step.attempts,
        undo_tries=step.compensation_attempts,
        error=error_text(step.error),
        undo_error=error_text(step.compensation_error),
        retry_at="" if step.retry_at is None else local_time(step.retry_at),
        skipped_by="" if skipped is None else f"{skipped['by']}: {skipped['note']}",
    )


def error_text(error: Mapping[str, Any] | None) -> str:
    if not isinstance(error, Mapping):
        return ""
    kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
    return f"{kind}: {error.get('message', '')}"


# --------------------------------------------------------------------------- the calls


def calls(state: SagaState) -> list[Call]:
    """Every attempt of every call, with the call's idempotency key."""
    found = []
    for tries in attempts(state):
        first = tries[0]
        tracked = any(attempt.tracked for attempt in tries)
        key = "" if tracked else idempotency_key(state.id, first.step, first.role)
        found.append(Call(first.step, first.role, key, [_try(attempt) for attempt in tries]))
    return found


def _try(attempt: Attempt) -> Try:
    error = attempt.error
    stack = error.get("traceback") if error is not None else None
    then = ""
    if error is not None:
        then = "final" if attempt.retry_at is None else f"retry at {local_time(attempt.retry_at)}"
    waiting = ""
    if attempt.outcome == "waiting" and attempt.waiting is not None:
        waiting = _wait_text(attempt.waiting)
    took = ""
    if attempt.started is not None and attempt.ended is not None:
        took = duration(attempt.ended - attempt.started)
    return Try(
        number=attempt.number,
        outcome=attempt.outcome,
        started="" if attempt.started is None else local_time(attempt.started),
        took=took,
        error=error_text(error),
        then=then,
        traceback=stack if isinstance(stack, str) else "",
        waiting=waiting,
    )


def _wait_text(waiting: Mapping[str, Any]) -> str:
    until = waiting.get("until")
    when = f" until {local_time(until)}" if isinstance(until, int | float) else ""
    return f"waits for {waiting.get('signal')!r}{when}"


def waits(state: SagaState) -> list[Wait]:
    """Every wait the log records; ``current`` for the ones still going on."""
    found = []
    for record in state.records:
        if record.type is not RecordType.STEP_WAITING or record.step is None:
            continue
        data = _data(record)
        if not isinstance(data, dict):
            continue
        step = state.by_name.get(record.step)
        current = step is not None and step.status is StepStatus.WAITING and step.waiting == data
        until = data.get("until")
        found.append(
            Wait(
                step=record.step,
                role=str(data.get("role", "action")),
                signal=str(data.get("signal", "")),
                since=local_time(record.at),
                until=local_time(until) if isinstance(until, int | float) else "no time limit",
                current=current,
            )
        )
    return found


# --------------------------------------------------------------------------- what operators did


def history(state: SagaState) -> list[Act]:
    """Who did what to the saga, when and why, oldest first."""
    found = []
    for record in state.records:
        if record.type not in OPERATOR_RECORDS:
            continue
        data = _data(record)
        fields = data if isinstance(data, dict) else {}
        result = None
        if record.type is RecordType.OPERATOR_SKIPPED:
            result = pretty(shown(state, fields.get("result")))
        found.append(
            Act(
                at=local_time(record.at),
                what=_act_name(record, fields),
                step=record.step or "",
                by=str(fields.get("by", "someone")),
                why=str(fields.get("note", fields.get("reason", ""))),
                result=result,
            )
        )
    return found


def _act_name(record: Record, fields: Mapping[str, Any]) -> str:
    kind = record.type
    if kind is RecordType.OPERATOR_RETRY:
        return "retry" if record.step is None else "retry from step"
    if kind is RecordType.OPERATOR_MIGRATED:
        return f"migrate v{fields.get('from_version')} -> v{fields.get('to_version')}"
    names = {
        RecordType.OPERATOR_RESOLVED: "resolve",
        RecordType.OPERATOR_SKIPPED: "skip",
        RecordType.CANCEL_REQUESTED: "cancel",
        RecordType.CANCEL_REFUSED: "cancel refused",
    }
    return names.get(kind, kind.value)


# --------------------------------------------------------------------------- payloads


def results(state: SagaState) -> list[Payload]:
    """Each step's recorded result (an operator's, for a step they skipped)."""
    found = []
    for step in state.steps:
        if step.name not in state.raw_results:
            continue
        value = state.results[step.name]
        skipped = step.skipped_by
        note = "" if skipped is None else f"given by {skipped['by']} with skip: {skipped['note']}"
        found.append(Payload(step.name, pretty(shown(state, value)), note))
    return found


def signals(state: SagaState) -> list[Payload]:
    """The messages the saga took, each with its payload."""
    found = []
    for record in state.records:
        if record.type is not RecordType.MESSAGE_RECEIVED:
            continue
        data = _data(record)
        if not isinstance(data, dict):
            continue
        payload = _decoded(data.get("payload"))
        title = str(data.get("name", ""))
        found.append(Payload(title, pretty(shown(state, payload)), local_time(record.at)))
    return found


# --------------------------------------------------------------------------- the timeline


def timeline(state: SagaState) -> list[Row]:
    """Every record in order, with milliseconds from the start and its one fact."""
    start = state.records[0].at if state.records else 0.0
    return [
        Row(
            seq=record.seq,
            since=_since(record.at, start),
            at=local_time(record.at, "%H:%M:%S.%f")[:-3],
            event=record.type.value,
            step=record.step or "",
            attempt=str(record.attempt) if record.attempt else "",
            detail=detail(state, record),
            tone=_tone(record.type),
        )
        for record in state.records
    ]


def _since(at: float, start: float) -> str:
    elapsed = (at - start) * 1000
    return f"{elapsed:.0f}" if abs(elapsed) < 1e12 else f"{at!r}"


def _tone(kind: RecordType) -> str:
    name = kind.value
    if kind is RecordType.SAGA_NEEDS_ATTENTION or name.endswith("_failed"):
        return "bad"
    if name.startswith(("compensation_", "saga_compensat")):
        return "undo"
    if name.endswith(("_succeeded", "_completed")):
        return "ok"
    if kind in OPERATOR_RECORDS:
        return "operator"
    return ""


def detail(state: SagaState, record: Record) -> str:
    """The one fact worth seeing for a record; payloads go through ``shown``, cut short.
    A record whose data has another shape than sagakit writes shows no detail."""
    try:
        return _detail(state, record, _data(record))
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


def _detail(state: SagaState, record: Record, data: Any) -> str:
    kind = record.type
    if isinstance(data, dict) and data.keys() >= _TRACKED and "payload" in data:
        payload = _compact(shown(state, data["payload"]))
        return f"{data['event']} from {data['source']}: {payload}"
    if kind is RecordType.SAGA_STARTED:
        return "input " + _compact(shown(state, data["input"]))
    if kind is RecordType.STEP_SUCCEEDED:
        return "-> " + _compact(shown(state, data))
    if kind is RecordType.MESSAGE_RECEIVED:
        return f"{data['name']!r} " + _compact(shown(state, _decoded(data["payload"])))
    if kind is RecordType.OPERATOR_SKIPPED:
        return f"by {data['by']}: {data['note']} -> " + _compact(shown(state, data["result"]))
    return _plain_detail(kind, data)


def _plain_detail(kind: RecordType, data: Any) -> str:
    """The detail of a record that carries no payload."""
    if kind in (RecordType.STEP_FAILED, RecordType.COMPENSATION_FAILED):
        retry_at = data["retry_at"]
        then = "final" if retry_at is None else f"retry at {local_time(retry_at)}"
        return f"{error_text(data['error'])} ({then})"
    if kind in (RecordType.SAGA_COMPENSATING, RecordType.SAGA_NEEDS_ATTENTION):
        return str(data["reason"] or "")
    if kind in (RecordType.OPERATOR_RETRY, RecordType.OPERATOR_RESOLVED):
        return f"by {data['by']}" + (f": {data['note']}" if data["note"] else "")
    if kind is RecordType.OPERATOR_MIGRATED:
        return f"v{data['from_version']} -> v{data['to_version']} by {data['by']}: {data['note']}"
    if kind is RecordType.CANCEL_REQUESTED:
        return f"by {data['by']}" + (f": {data['reason']}" if data.get("reason") else "")
    if kind is RecordType.CANCEL_REFUSED:
        return f"the cancel by {data['by']}: {data['reason']}"
    if kind is RecordType.CALL_TAKEN_OVER:
        previous = data.get("previous") or "an earlier holder"
        return (
            f"from {previous} (lease lapsed): {data['role']} made again by {data['holder']}, "
            f"key {data['key']}"
        )
    if kind is RecordType.STEP_WAITING:
        return f"{data['role']} " + _wait_text(data)
    return ""


def _data(record: Record) -> Any:
    if record.data is None:
        return None
    try:
        return json.loads(record.data)
    except ValueError:
        return None


def _decoded(payload: Any) -> Any:
    """A message's payload, which the log keeps as JSON text."""
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(payload)
    except ValueError:
        return payload
