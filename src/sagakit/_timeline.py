"""A saga instance's story as a rich renderable: who it is, where each step got, what happened.

Used by ``sagakit show`` and the demo. It reads only a :class:`~sagakit.log.SagaState`
(as folded from the log), so it shows exactly what recovery would see. Laid out to stay
readable in a 100-column terminal: long messages wrap inside their column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sagakit.log import Record, RecordType, SagaState, SagaStatus, StepState, StepStatus

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
_TRACKED = frozenset({"event", "source", "event_id", "causation_id"})
"""The keys a tracker puts in the records it rebuilt from a choreographed saga's events."""
_DETAIL_LIMIT = 120
"""Characters of a result or input shown in the timeline; ``show --json`` has the rest."""


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


def render_timeline(state: SagaState) -> RenderableType:
    """Header, step table and event timeline of one instance."""
    return Group(_header(state), Text(), _steps(state), Text(), _events(state))


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
        text.append(printable(state.reason))
    if state.resolution is not None:
        note = state.resolution
        text.append("\nresolved by an operator: ", style="bold yellow")
        text.append(printable(f"{note['by']}: {note['note']}"))
    if state.failed_compensations:
        text.append("\nnot undone: ", style="bold red")
        text.append(printable(", ".join(state.failed_compensations)))
    return text


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


def _events(state: SagaState) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="timeline", title_justify="left", show_edge=False)
    table.add_column("+ms", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("detail", ratio=1)
    start = state.records[0].at if state.records else 0.0
    for record in state.records:
        table.add_row(
            _since(record.at, start),
            Text(record.type.value, style=_event_style(record.type)),
            Text(printable(record.step or "")),
            str(record.attempt) if record.attempt else "",
            _detail(record),
        )
    return table


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


def _detail(record: Record) -> Text:
    """The one fact worth seeing for each kind of record; values are cut to one line."""
    data: Any = None if record.data is None else json.loads(record.data)
    kind = record.type
    if isinstance(data, dict) and data.keys() >= _TRACKED and "payload" in data:
        return _one_line(f"{data['event']} from {data['source']}: {_short(data['payload'])}")
    if kind in (RecordType.STEP_FAILED, RecordType.COMPENSATION_FAILED):
        retry_at = data["retry_at"]
        then = "final" if retry_at is None else f"retry in {_since(retry_at, record.at)} ms"
        return Text(printable(f"{_error(data['error'])} ({then})"))
    if kind in (RecordType.SAGA_COMPENSATING, RecordType.SAGA_NEEDS_ATTENTION):
        return Text(printable(str(data["reason"])))
    if kind is RecordType.SAGA_STARTED:
        return _one_line("input " + _short(data["input"]))
    if kind is RecordType.STEP_SUCCEEDED:
        return _one_line("-> " + _short(data))
    if kind in (RecordType.OPERATOR_RETRY, RecordType.OPERATOR_RESOLVED):
        return Text(printable(f"by {data['by']}" + (f": {data['note']}" if data["note"] else "")))
    if kind is RecordType.CANCEL_REQUESTED:
        why = f": {data['reason']}" if data.get("reason") else ""
        return Text(printable(f"by {data.get('by', 'someone')}{why}"))
    if kind is RecordType.STEP_WAITING:
        until = "" if data["until"] is None else f" until {local_time(data['until'])}"
        return Text(printable(f"{data['role']} waits for {data['signal']!r}{until}"))
    if kind is RecordType.MESSAGE_RECEIVED:
        return _one_line(f"{data['name']!r} " + _short(json.loads(data["payload"])))
    return Text()


def _one_line(text: str) -> Text:
    return Text(printable(text), no_wrap=True, overflow="ellipsis", style="dim")


def _error(error: Mapping[str, object]) -> str:
    kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
    return printable(f"{kind}: {error.get('message', '')}")


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"
