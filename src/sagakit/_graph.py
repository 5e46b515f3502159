"""Sagas drawn as Mermaid flowcharts: a definition's shape, or one instance's progress.

Used by ``sagakit graph``. A definition shows its steps in order, each compensatable step's
compensation hanging off it by a dashed ``undo`` edge, the pivot as a hexagon, the
retriable tail after it, and the compensation path running back. An instance (a
:class:`~sagakit.log.SagaState` folded from the log) is drawn the same way, each step
coloured by its status. A choreography has no coordinator, so it is drawn as its steps
(each one service's local transaction) passing events to one another.

Nothing from user code or the log ever reaches the text as it is: node ids are generated
(``n0``, ``n1``, ...), labels keep only letters, digits and `` _-.,@()`` and write every other
character as a Mermaid entity (``#34;``), and the title is a YAML string with the same
characters escaped; so no name can close its label, start a directive (``%%{...}%%``) or
add a line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from sagakit.choreography import Choreography, StepOutcome
from sagakit.log import SagaState, StepKind, StepStatus
from sagakit.orchestration import Saga

Definition = Saga | Choreography
"""What ``sagakit graph MODULE:ATTR`` can draw."""

STATUS_STYLES: dict[StepStatus, str] = {
    StepStatus.PENDING: "fill:#f1f3f5,stroke:#868e96,color:#495057",
    StepStatus.RUNNING: "fill:#c5f6fa,stroke:#0b7285,color:#000",
    StepStatus.WAITING: "fill:#d0ebff,stroke:#1864ab,color:#000",
    StepStatus.SUCCEEDED: "fill:#d3f9d8,stroke:#2b8a3e,color:#000",
    StepStatus.FAILED: "fill:#ffe3e3,stroke:#c92a2a,color:#000",
    StepStatus.COMPENSATING: "fill:#f3d9fa,stroke:#862e9c,color:#000",
    StepStatus.COMPENSATED: "fill:#fff3bf,stroke:#e67700,color:#000",
    StepStatus.COMPENSATION_FAILED: "fill:#ffe3e3,stroke:#c92a2a,stroke-width:3px,color:#000",
    StepStatus.SKIPPED: "fill:#f1f3f5,stroke:#868e96,color:#495057",
}
"""A Mermaid ``classDef`` per step status: green done, yellow undone, red failed, blue
waiting, cyan running, grey not run (as ``sagakit show`` colours them)."""
KIND_STYLES = {
    "pivot": "stroke-width:4px",
    "compensation": "stroke-dasharray:5 5",
}
_BOX = ("[", "]")
_SHAPES: dict[str, tuple[str, str]] = {
    StepKind.PIVOT: ("{{", "}}"),
    StepKind.RETRIABLE: ("([", "])"),
}
"""Node shapes by step kind (a compensatable step is a rectangle): the pivot a hexagon,
a retriable step a stadium."""
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,@()")
"""Characters that mean nothing inside a quoted Mermaid label or a YAML string."""


def label(text: str) -> str:
    """``text`` as a quoted Mermaid label: every character but ``_SAFE`` as an entity."""
    return '"' + "".join(c if c in _SAFE else f"#{ord(c)};" for c in text) + '"'


def title(text: str) -> str:
    """``text`` as a YAML double-quoted string with every unsafe character escaped."""
    escaped = (
        c if c in _SAFE else (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        for c in text
    )
    return '"' + "".join(escaped) + '"'


@dataclass(slots=True)
class _Chart:
    """Lines being written, and the next generated node id."""

    lines: list[str] = field(default_factory=list)
    classes: dict[str, list[str]] = field(default_factory=dict)
    """Class name -> the ids of its nodes, in the order they were drawn."""
    count: int = 0
    indent: str = "    "

    def node(self, text: str, shape: tuple[str, str] = _BOX, *classes: str) -> str:
        node_id = f"n{self.count}"
        self.count += 1
        self.lines.append(f"{self.indent}{node_id}{shape[0]}{label(text)}{shape[1]}")
        for name in classes:
            self.classes.setdefault(name, []).append(node_id)
        return node_id

    def edge(self, source: str, target: str, text: str | None = None, dashed: bool = False) -> None:
        arrow = "-.->" if dashed else "-->"
        tag = "" if text is None else f"|{label(text)}|"
        self.lines.append(f"{self.indent}{source} {arrow}{tag} {target}")

    def text(self, heading: str | None, styles: dict[str, str]) -> str:
        head = [] if heading is None else ["---", f"title: {title(heading)}", "---"]
        tail = [f"    class {','.join(ids)} {name}" for name, ids in self.classes.items()]
        tail += [f"    classDef {name} {styles[name]}" for name in styles if name in self.classes]
        return "\n".join([*head, "flowchart TD", *self.lines, *tail]) + "\n"


@dataclass(frozen=True, slots=True)
class _Step:
    """What a drawing needs of one step, from a definition or from the log."""

    name: str
    kind: str
    undo: str | None
    """The compensation's label, or None if the step has none."""
    status: StepStatus | None = None


def definition_graph(definitions: Sequence[Definition]) -> str:
    """One flowchart of ``definitions``; several are drawn side by side, a subgraph each."""
    chart = _Chart()
    if len(definitions) == 1:
        _draw(chart, definitions[0])
        return chart.text(definitions[0].key, KIND_STYLES)
    for definition in definitions:
        group = f"n{chart.count}"
        chart.count += 1
        chart.lines.append(f"    subgraph {group}[{label(definition.key)}]")
        chart.indent = "        "
        _draw(chart, definition)
        chart.indent = "    "
        chart.lines.append("    end")
    return chart.text(None, KIND_STYLES)


def instance_graph(state: SagaState) -> str:
    """One instance's steps as its log tells them, each coloured by its status; the title
    names the saga, the instance and its status."""
    steps = [
        _Step(
            s.name,
            s.kind,
            f"undo {s.name}" if _undoable(s.kind, s.status) else None,
            s.status,
        )
        for s in state.steps
    ]
    chart = _Chart()
    _orchestrated(chart, steps)
    heading = f"{state.name}@{state.version} {state.id} ({state.status.value})"
    styles = {**KIND_STYLES, **{status.value: style for status, style in STATUS_STYLES.items()}}
    return chart.text(heading, styles)


def _undoable(kind: str, status: StepStatus) -> bool:
    """Whether the log shows a compensation for the step: every compensatable step has
    one; another kind only if it was compensated (``compensate_on_failure``)."""
    undone = (StepStatus.COMPENSATING, StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED)
    return kind == StepKind.COMPENSATABLE or status in undone


def _draw(chart: _Chart, definition: Definition) -> None:
    if isinstance(definition, Saga):
        steps = [
            _Step(s.name, s.kind.value, None if s.compensation is None else _name(s.compensation))
            for s in definition.steps
        ]
        _orchestrated(chart, steps)
    else:
        _choreographed(chart, definition)


def _name(compensation: object) -> str:
    name = getattr(compensation, "__name__", None)
    return name if isinstance(name, str) else type(compensation).__name__


def _orchestrated(chart: _Chart, steps: Sequence[_Step]) -> None:
    """Steps in order; each compensation below its step by an ``undo`` edge; the
    compensations chained backwards, the order they run in."""
    ids: list[str] = []
    for step in steps:
        classes = ["pivot"] if step.kind == StepKind.PIVOT else []
        if step.status is not None:
            classes.append(step.status.value)
        shape = _SHAPES.get(step.kind, _BOX)
        about = step.kind if step.status is None else f"{step.kind}, {step.status.value}"
        ids.append(chart.node(f"{step.name} ({about})", shape, *classes))
    undos = [
        (step_id, chart.node(f"{step.undo} (compensation)", ("(", ")"), "compensation"))
        for step, step_id in zip(steps, ids, strict=True)
        if step.undo is not None
    ]
    for before, after in pairwise(ids):
        chart.edge(before, after)
    for step_id, undo_id in undos:
        chart.edge(step_id, undo_id, "undo", dashed=True)
    backwards = [undo_id for _, undo_id in reversed(undos)]
    for later, earlier in pairwise(backwards):
        chart.edge(later, earlier, dashed=True)


def _choreographed(chart: _Chart, choreography: Choreography) -> None:
    """Each step a node; each event an edge from the step that emits it to the one that
    reacts: a success to the next step, a failure or a compensation back to the nearest
    earlier compensatable step, and the events that end the saga to its end."""
    steps = choreography.steps
    ids = [
        chart.node(
            f"{s.name} ({s.kind})",
            _SHAPES.get(str(s.kind), _BOX),
            *(["pivot"] if s.kind == StepKind.PIVOT else []),
        )
        for s in steps
    ]
    edges = [
        (index, event, outcome, _reactor(choreography, index, event, outcome))
        for index, event, outcome in _events(choreography)
    ]
    nodes: dict[int | str, str] = dict(enumerate(ids))
    for *_, target in edges:
        if target not in nodes:
            nodes[target] = chart.node(str(target), ("((", "))"))
    for index, event, outcome, target in edges:
        forward = outcome in (StepOutcome.STARTED, StepOutcome.SUCCEEDED)
        chart.edge(ids[index], nodes[target], event, dashed=not forward)


def _events(choreography: Choreography) -> Iterable[tuple[int, str, StepOutcome]]:
    """``(step index, event type, outcome)`` of every declared event, step by step."""
    for index, step in enumerate(choreography.steps):
        for outcome in StepOutcome:
            for event in step.events(outcome):
                yield index, event, outcome


def _reactor(choreography: Choreography, index: int, event: str, outcome: StepOutcome) -> int | str:
    """The index of the step that reacts to ``event``, or the name of the end it leads to."""
    if event in choreography.completes:
        return "completed"
    if event in choreography.compensated:
        return "compensated"
    if event in choreography.needs_attention or outcome is StepOutcome.COMPENSATION_FAILED:
        return "needs attention"
    if outcome is StepOutcome.STARTED:
        return index
    if outcome is StepOutcome.SUCCEEDED:
        return index + 1 if index + 1 < len(choreography.steps) else "completed"
    earlier = [i for i in range(index) if choreography.steps[i].kind == StepKind.COMPENSATABLE]
    return earlier[-1] if earlier else "compensated"
