"""A saga instance's story as a rich renderable: who it is, where each step got, what happened.

Used by ``sagakit show`` and the demo. It reads a :class:`~sagakit.log.SagaState` (as
folded from the log), so it shows exactly what recovery would see, and, when given, the
store's :class:`~sagakit.log.Instance` row, which alone knows who holds the saga and when
it is next due. Laid out to stay readable at 80 columns: long messages wrap inside their
column. Every stored text goes through :func:`printable` and into a :class:`Text`, never
through rich markup.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from sagakit.log import (
    NO_REDACTION,
    TRACKED_FACTS,
    Instance,
    Record,
    RecordType,
    Redaction,
    SagaState,
    SagaStatus,
    StepKind,
    StepState,
    StepStatus,
    shown_data,
)

SAGA_STYLES: dict[SagaStatus, str] = {
    SagaStatus.PENDING: "dim",
    SagaStatus.RUNNING: "bold cyan",
    SagaStatus.COMPENSATING: "bold magenta",
    SagaStatus.COMPLETED: "bold green",
    SagaStatus.COMPENSATED: "bold yellow",
    SagaStatus.NEEDS_ATTENTION: "bold white on red",
}
STEP_STYLES: dict[StepStatus, str] = {
    StepStatus.PENDING: "dim",
    StepStatus.RUNNING: "cyan",
    StepStatus.WAITING: "blue",
    StepStatus.SUCCEEDED: "green",
    StepStatus.FAILED: "red",
    StepStatus.COMPENSATING: "magenta",
    StepStatus.COMPENSATED: "yellow",
    StepStatus.COMPENSATION_FAILED: "bold red",
    StepStatus.SKIPPED: "dim",
}
_TRACKED = TRACKED_FACTS
_DETAIL_LIMIT = 120
"""Characters of a result or input shown in the timeline; ``show --json`` has the rest."""
_MESSAGE_LIMIT = 1000
"""Characters of an error message or a reason shown; ``show --json`` has the rest."""
TRACEBACK_LINES = 6
"""Lines of a stored traceback shown under a failed attempt: its end, where it was raised;
``show --json`` has all of it."""
KeyOf = Callable[[str, str, str], str]
"""(saga id, step, role) -> the call's idempotency key. Derived by the orchestration
package, which this layer may not import, so a caller hands the function in."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every terminal control character shown escaped (``\\x1b``), so a
    stored event field can neither clear the screen nor retitle the window."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def local_time(at: float, format: str = "%Y-%m-%d %H:%M:%S") -> str:
    """``at`` (epoch seconds) as local time; one no calendar can show stays a raw number."""
    try:
        return datetime.fromtimestamp(at).strftime(format)
    except (OverflowError, OSError, ValueError):
        return f"{at!r}"


def status_text(status: SagaStatus | StepStatus) -> Text:
    """A status in its colour: green done, yellow undone, red needs a human."""
    if isinstance(status, SagaStatus):
        return Text(status.value, style=SAGA_STYLES[status])
    return Text(status.value, style=STEP_STYLES[status])


def render_timeline(
    state: SagaState,
    instance: Instance | None = None,
    key: KeyOf | None = None,
    now: float | None = None,
) -> RenderableType:
    """Header, steps, every attempt of every call, and the event timeline of one instance.

    ``instance`` adds who holds the lease until when and when the saga is next due (and
    whether that has passed, by ``now``); ``key`` adds each call's idempotency key.
    """
    header = _header(state)
    if instance is not None:
        header.append_text(_schedule(state, instance, time.time() if now is None else now))
    header.append_text(_progress(state))
    parts: list[RenderableType] = [header, Text(), _steps(state)]
    calls = attempts(state)
    if calls:
        parts += [Text(), _attempts(state.id, calls, key)]
    return Group(*parts, Text(), _events(state))


def _header(state: SagaState) -> Text:
    text = Text.assemble(
        ("saga ", "bold"),
        (printable(state.id), "bold"),
        "  ",
        (printable(f"{state.name}@{state.version}"), "cyan"),
        "  ",
        status_text(state.status),
    )
    if state.records:
        text.append(f"  started {local_time(state.records[0].at)}", style="dim")
    if state.reason:
        text.append("\nreason: ", style="bold")
        text.append(printable(_clip(state.reason)))
    if state.resolution is not None:
        note = state.resolution
        text.append("\nresolved by an operator: ", style="bold yellow")
        text.append(printable(f"{note['by']}: {note['note']}"))
    return text


def _schedule(state: SagaState, instance: Instance, now: float) -> Text:
    """Who holds the saga until when, and when it is next due: all that tells a saga being
    worked on from one whose worker died (its lease lapsed, nobody took it over)."""
    text = Text()
    unfinished = not state.status.is_terminal
    owner, until, due = instance.lease_owner, instance.lease_expires, instance.due_at
    if owner is not None or unfinished:
        text.append("\nlease: ", style="bold")
        text.append("nobody" if owner is None else printable(owner))
        if owner is not None and until is not None:
            text.append(f" until {local_time(until)}")
            if until <= now:
                text.append(" (lapsed)", style="bold red")
    if due is not None or unfinished:
        text.append("\nnext due: ", style="bold")
        text.append(_unscheduled(state, owner) if due is None else local_time(due))
        if due is not None and due <= now:
            text.append(" (now)", style="bold")
    return text


def _unscheduled(state: SagaState, owner: str | None) -> str:
    """Why an unfinished saga has no due time: someone drives it, or it waits for nothing
    but a message (or, with neither, nothing will pick it up: a saga to look into)."""
    if owner is not None:
        return "when its holder hands it back"
    if any(step.status is StepStatus.WAITING for step in state.steps):
        return "when a message comes"
    return "not scheduled"


def _progress(state: SagaState) -> Text:
    """What stands, what was undone, what could not be, and what is left to do or undo."""
    steps = state.steps
    not_undone = state.failed_compensations
    label, left = remaining(state)
    lines = [
        ("done", [s.name for s in steps if s.status is StepStatus.SUCCEEDED], "bold"),
        ("undone", [s.name for s in steps if s.status is StepStatus.COMPENSATED], "bold"),
        ("not undone", not_undone, "bold red"),
        (label, [name for name in left if name not in not_undone], "bold"),
    ]
    text = Text()
    for title, names, style in lines:
        if names:
            text.append(f"\n{title}: ", style=style)
            text.append(printable(", ".join(names)))
    return text


def remaining(state: SagaState) -> tuple[str, list[str]]:
    """The steps still to run, or, for a saga going back, still to compensate: none for a
    saga that ended, nor for one flagged after it ended (a late event, say)."""
    status = state.status
    ended = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
    if status in ended or (
        status is SagaStatus.NEEDS_ATTENTION and state.before_attention in ended
    ):
        return "", []
    if status is SagaStatus.COMPENSATING or (
        status is SagaStatus.NEEDS_ATTENTION and state.before_attention is SagaStatus.COMPENSATING
    ):
        return "to undo", [s.name for s in state.steps if _undo_left(s)]
    return "to do", [s.name for s in state.steps if s.status is not StepStatus.SUCCEEDED]


def _undo_left(step: StepState) -> bool:
    status = step.status
    if status is StepStatus.COMPENSATING or status is StepStatus.COMPENSATION_FAILED:
        return True
    if status is StepStatus.WAITING:
        return step.waiting is not None and step.waiting.get("role") == "compensation"
    return status is StepStatus.SUCCEEDED and step.kind == StepKind.COMPENSATABLE


def _steps(state: SagaState) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="steps", title_justify="left", show_edge=False)
    table.add_column("step", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("tries", justify="right")
    table.add_column("undo", justify="right")
    table.add_column("error", ratio=1)
    for step in state.steps:
        table.add_row(
            Text(printable(step.name)),
            Text(printable(step.kind)),
            status_text(step.status),
            str(step.attempts or ""),
            str(step.compensation_attempts or ""),
            _step_error(step),
        )
    return table


def _step_error(step: StepState) -> Text:
    text = Text()
    if step.error is not None:
        text.append(_error(step.error), style="red")
    if step.compensation_error is not None:
        if text:
            text.append("\n")
        text.append("undo: " + _error(step.compensation_error), style="bold red")
    return text


@dataclass(slots=True)
class Attempt:
    """One call of a step's action or compensation, as its records tell it."""

    step: str
    role: str
    """``action`` or ``compensation``."""
    number: int
    outcome: str = "running"
    """``running``, ``waiting``, ``succeeded`` or ``failed``."""
    started: float | None = None
    ended: float | None = None
    error: Mapping[str, Any] | None = None
    retry_at: float | None = None
    waiting: Mapping[str, Any] | None = None
    tracked: bool = False
    """Rebuilt by a tracker from a choreographed saga's events: sagakit made no call."""


_CALLS: dict[RecordType, tuple[str, str]] = {
    RecordType.STEP_STARTED: ("action", "running"),
    RecordType.STEP_WAITING: ("action", "waiting"),
    RecordType.STEP_SUCCEEDED: ("action", "succeeded"),
    RecordType.STEP_FAILED: ("action", "failed"),
    RecordType.COMPENSATION_STARTED: ("compensation", "running"),
    RecordType.COMPENSATION_SUCCEEDED: ("compensation", "succeeded"),
    RecordType.COMPENSATION_FAILED: ("compensation", "failed"),
}
"""The records about one call: the role they are about, and what they say of it."""


def attempts(state: SagaState) -> list[list[Attempt]]:
    """Each call's attempts in order; calls by step as defined, an action before its undo."""
    calls: dict[tuple[str, str], dict[int, Attempt]] = {}
    for record in state.records:
        call = _CALLS.get(record.type)
        if call is None or record.step is None:
            continue
        role, outcome = call
        data = shown_data(record, state.redaction)
        if outcome == "waiting" and isinstance(data, dict):
            role = str(data.get("role", role))
        tries = calls.setdefault((record.step, role), {})
        attempt = tries.setdefault(record.attempt, Attempt(record.step, role, record.attempt))
        _advance(attempt, record.at, outcome, data)
    order = {step.name: i for i, step in enumerate(state.steps)}
    ranked = sorted(calls, key=lambda call: (order.get(call[0], len(order)), call[1] != "action"))
    return [[calls[call][n] for n in sorted(calls[call])] for call in ranked]


def _advance(attempt: Attempt, at: float, outcome: str, data: Any) -> None:
    """Apply one record about ``attempt``; foreign data of the wrong shape is ignored."""
    fields = data if isinstance(data, dict) else {}
    attempt.tracked = attempt.tracked or fields.keys() >= _TRACKED
    if outcome == "running":
        attempt.started = at
        return
    attempt.outcome = outcome
    if outcome == "waiting":
        attempt.waiting = fields
        return
    attempt.ended = at
    error, retry_at = fields.get("error"), fields.get("retry_at")
    attempt.error = error if isinstance(error, dict) else None
    attempt.retry_at = retry_at if isinstance(retry_at, int | float) else None


def _attempts(saga_id: str, calls: list[list[Attempt]], key: KeyOf | None) -> Group:
    parts: list[RenderableType] = [Text("attempts", style="table.title")]
    for tries in calls:
        call = tries[0]
        head = Text.assemble((printable(call.step), "bold"), " ", call.role)
        if key is not None and not any(attempt.tracked for attempt in tries):
            head.append("  key ", style="dim")
            head.append(printable(key(saga_id, call.step, call.role)))
        parts += [head, Padding(_tries(tries), (0, 0, 0, 2))]
    return Group(*parts)


def _tries(tries: list[Attempt]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(justify="right", no_wrap=True, min_width=3)
    table.add_column(no_wrap=True, min_width=len(StepStatus.SUCCEEDED.value))
    table.add_column(justify="right", no_wrap=True, min_width=len("999 ms"))
    table.add_column(ratio=1)
    before: object = None
    for attempt in tries:
        stack = None if attempt.error is None else attempt.error.get("traceback")
        table.add_row(
            Text(f"#{attempt.number}"),
            status_text(StepStatus(attempt.outcome)),
            Text(_took(attempt)),
            _what(attempt, stack if isinstance(stack, str) else None, stack == before),
        )
        before = stack
    return table


def _took(attempt: Attempt) -> str:
    if attempt.started is None or attempt.ended is None:
        return ""
    return duration(attempt.ended - attempt.started)


def duration(seconds: float) -> str:
    """How long a call took, short; a span no clock could have measured, as the raw number."""
    if not abs(seconds) < 1e9:
        return f"{seconds!r} s"
    if abs(seconds) < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if abs(seconds) < 10:
        return f"{seconds * 1000:.0f} ms"
    if abs(seconds) < 600:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if abs(seconds) < 36000 else f"{seconds / 3600:.1f} h"


def _what(attempt: Attempt, stack: str | None, repeated: bool) -> Text:
    """An attempt's error and the end of its traceback, or what it waits for."""
    text = Text(overflow="fold")
    if attempt.waiting is not None and attempt.outcome == "waiting":
        until = attempt.waiting.get("until")
        when = f" until {local_time(until)}" if isinstance(until, int | float) else ""
        text.append(printable(f"waits for {attempt.waiting.get('signal')!r}{when}"))
    if attempt.error is None:
        return text
    text.append(_error(attempt.error), style="red")
    retry_at, ended = attempt.retry_at, attempt.ended or 0.0
    then = "final" if retry_at is None else f"retry in {_since(retry_at, ended)} ms"
    text.append(f" ({then})", style="dim")
    if stack and repeated:
        text.append("\n(the same traceback as the attempt before)", style="dim")
    elif stack:
        for line in _tail(stack):
            text.append("\n" + printable(line), style="dim")
    return text


def _tail(stack: str) -> list[str]:
    """The last lines of a traceback, from a frame's ``File`` line if one is among them,
    rather than from the middle of a frame whose ``File`` line was cut."""
    lines = stack.rstrip("\n").splitlines()[-TRACEBACK_LINES:]
    frame = next((i for i, line in enumerate(lines) if line.startswith("  File ")), 0)
    return lines[frame:] if all(line.startswith("    ") for line in lines[:frame]) else lines


def _events(state: SagaState) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="timeline", title_justify="left", show_edge=False)
    table.add_column("+ms", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("detail", ratio=1)
    start = state.records[0].at if state.records else 0.0
    for record in state.records:
        table.add_row(*event_cells(record, start, state.redaction))
    return table


def event_cells(record: Record, start: float, redaction: Redaction = NO_REDACTION) -> list[Text]:
    """A timeline row: milliseconds since ``start``, the event, its step and attempt, and
    the one fact worth seeing, its saga's secret fields masked."""
    return [
        Text(_since(record.at, start)),
        Text(record.type.value, style=_event_style(record.type)),
        Text(printable(record.step or "")),
        Text(str(record.attempt) if record.attempt else ""),
        _detail(record, redaction),
    ]


def event_line(record: Record, start: float, redaction: Redaction = NO_REDACTION) -> Text:
    """A timeline row as one line (``show --follow`` prints them as records land)."""
    since, event, step, attempt, detail = event_cells(record, start, redaction)
    event.pad_right(_EVENT_WIDTH - len(event))
    parts = [Text(since.plain.rjust(7)), event, step]
    if attempt:
        parts.append(Text("#") + attempt)
    line = Text("  ").join(part for part in [*parts, detail] if part)
    line.rstrip()
    return line


_EVENT_WIDTH = max(len(kind.value) for kind in RecordType)


def _since(at: float, start: float) -> str:
    """Milliseconds from the saga's start; a foreign time far out of range, as it is."""
    elapsed = (at - start) * 1000
    return f"{elapsed:.0f}" if abs(elapsed) < 1e12 else f"{at!r}"


def _event_style(kind: RecordType) -> str:
    name = kind.value
    if kind is RecordType.SAGA_NEEDS_ATTENTION or name.endswith("_failed"):
        return "red"
    if name.startswith(("compensation_", "saga_compensat")):
        return "yellow"
    if name.endswith(("_succeeded", "_completed")):
        return "green"
    return ""


def _detail(record: Record, redaction: Redaction) -> Text:
    """The one fact worth seeing for each kind of record; values are cut to one line."""
    data = shown_data(record, redaction)
    kind = record.type
    if isinstance(data, dict) and data.keys() >= _TRACKED and "payload" in data:
        return _one_line(f"{data['event']} from {data['source']}: {_short(data['payload'])}")
    if kind in (RecordType.STEP_FAILED, RecordType.COMPENSATION_FAILED):
        retry_at = data["retry_at"]
        then = "final" if retry_at is None else f"retry in {_since(retry_at, record.at)} ms"
        return Text(printable(f"{_error(data['error'])} ({then})"))
    if kind in (RecordType.SAGA_COMPENSATING, RecordType.SAGA_NEEDS_ATTENTION):
        return Text(printable(_clip(str(data["reason"]))))
    if kind is RecordType.SAGA_STARTED:
        return _one_line("input " + _short(data["input"]))
    if kind is RecordType.STEP_SUCCEEDED:
        return _one_line("-> " + _short(data))
    if kind in (RecordType.OPERATOR_RETRY, RecordType.OPERATOR_RESOLVED):
        return Text(printable(f"by {data['by']}" + (f": {data['note']}" if data["note"] else "")))
    if kind is RecordType.OPERATOR_SKIPPED:
        note = f": {data['note']}" if data.get("note") else ""
        return Text(printable(f"by {data.get('by')}{note} -> {_short(data.get('result'))}"))
    if kind is RecordType.OPERATOR_MIGRATED:
        moved = f"v{data.get('from_version')} -> v{data.get('to_version')}"
        note = f": {data['note']}" if data.get("note") else ""
        return Text(printable(_clip(f"{moved} by {data.get('by')}{note}")))
    if kind is RecordType.CANCEL_REQUESTED:
        why = f": {data['reason']}" if data.get("reason") else ""
        return Text(printable(f"by {data.get('by', 'someone')}{why}"))
    if kind is RecordType.CANCEL_REFUSED:
        text = f"the cancel by {data.get('by', 'someone')}: {data.get('reason', '')}"
        return Text(printable(_clip(text)), style="bold")
    if kind is RecordType.CALL_TAKEN_OVER:
        return _taken_over(data)
    if kind is RecordType.STEP_WAITING:
        until = "" if data["until"] is None else f" until {local_time(data['until'])}"
        return Text(printable(f"{data['role']} waits for {data['signal']!r}{until}"))
    if kind is RecordType.MESSAGE_RECEIVED:
        return _one_line(f"{data['name']!r} " + _short(json.loads(data["payload"])))
    return Text()


def _taken_over(data: Mapping[str, Any]) -> Text:
    """Whose call a new holder makes again, after the lease of the one that started it
    lapsed: how recovery shows in the log."""
    previous = data.get("previous") or "an earlier holder"
    text = f"from {previous} (lease lapsed): {data.get('role')} made again by"
    return Text(printable(f"{text} {data.get('holder')}, key {data.get('key')}"))


def _one_line(text: str) -> Text:
    return Text(printable(text), no_wrap=True, overflow="ellipsis", style="dim")


def _error(error: Mapping[str, object]) -> str:
    kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
    return printable(_clip(f"{kind}: {error.get('message', '')}"))


def _clip(text: str) -> str:
    """A message cut to what a person reads on a screen; ``show --json`` has all of it."""
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"
