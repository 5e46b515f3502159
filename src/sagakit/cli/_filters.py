"""The filter options ``list`` and the bulk actions share, turned into one :class:`Query`.

Times are ``WHEN``: an ISO 8601 moment (``2026-12-01T09:30``, local time unless it names
its zone) or a duration meaning that long ago (``90s``, ``10m``, ``2h``, ``3d``, ``1w``).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer

from sagakit.cli._common import fail
from sagakit.log import SagaStatus
from sagakit.operations import Query

T = TypeVar("T")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

Statuses = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        help="Only this status (repeat, or comma-separate, for several).",
        show_default=False,
    ),
]
Names = Annotated[list[str] | None, typer.Option("--name", help="Only this saga (repeatable).")]
Versions = Annotated[
    list[int] | None, typer.Option("--version", help="Only this definition version (repeatable).")
]
CreatedAfter = Annotated[str | None, typer.Option("--created-after", metavar="WHEN")]
CreatedBefore = Annotated[str | None, typer.Option("--created-before", metavar="WHEN")]
UpdatedAfter = Annotated[str | None, typer.Option("--updated-after", metavar="WHEN")]
UpdatedBefore = Annotated[str | None, typer.Option("--updated-before", metavar="WHEN")]
DueBefore = Annotated[
    str | None, typer.Option("--due-before", metavar="WHEN", help="Only sagas due by then.")
]
HeldBy = Annotated[
    str | None,
    typer.Option("--held-by", metavar="OWNER", help="Only sagas whose lease OWNER took last."),
]
Inputs = Annotated[
    list[str] | None,
    typer.Option(
        "--input", metavar="FIELD=VALUE", help="Only sagas whose input has it (order_id=42)."
    ),
]
Results = Annotated[
    list[str] | None,
    typer.Option(
        "--result", metavar="STEP.FIELD=VALUE", help="Only sagas in which STEP returned it."
    ),
]
Waiting = Annotated[
    bool, typer.Option("--waiting", help="Only sagas with a step waiting for a signal.")
]
WaitingFor = Annotated[
    str | None, typer.Option("--waiting-for", metavar="SIGNAL", help="Waiting for this signal.")
]
FailingStep = Annotated[
    str | None,
    typer.Option("--failing-step", metavar="STEP", help="Only sagas whose STEP failed last."),
]
ErrorText = Annotated[
    str | None, typer.Option("--error", metavar="TEXT", help="Reason or error contains TEXT.")
]
Stuck = Annotated[
    str | None,
    typer.Option(
        "--stuck",
        metavar="DURATION",
        help="Unfinished sagas that made no progress for this long (10m, 2h).",
    ),
]

_OPTIONS: dict[str, tuple[object, object]] = {
    "status": (Statuses, None),
    "name": (Names, None),
    "version": (Versions, None),
    "created_after": (CreatedAfter, None),
    "created_before": (CreatedBefore, None),
    "updated_after": (UpdatedAfter, None),
    "updated_before": (UpdatedBefore, None),
    "due_before": (DueBefore, None),
    "held_by": (HeldBy, None),
    "input": (Inputs, None),
    "result": (Results, None),
    "waiting": (Waiting, False),
    "waiting_for": (WaitingFor, None),
    "failing_step": (FailingStep, None),
    "error": (ErrorText, None),
    "stuck": (Stuck, None),
}
"""Each :class:`Filters` field's option and default, in the order ``--help`` lists them."""


@dataclass
class Filters:
    """The options as typed; :meth:`query` checks and converts them."""

    status: list[str] | None = None
    name: list[str] | None = None
    version: list[int] | None = None
    created_after: str | None = None
    created_before: str | None = None
    updated_after: str | None = None
    updated_before: str | None = None
    due_before: str | None = None
    held_by: str | None = None
    input: list[str] | None = None
    result: list[str] | None = None
    waiting: bool = False
    waiting_for: str | None = None
    failing_step: str | None = None
    error: str | None = None
    stuck: str | None = None

    def query(self, now: float) -> Query:
        """The query the options ask for; a bad value ends the command (exit 2)."""
        return Query(
            statuses=_statuses(self.status or []),
            names=self.name or (),
            versions=self.version or (),
            created_after=_when("--created-after", self.created_after, now),
            created_before=_when("--created-before", self.created_before, now),
            updated_after=_when("--updated-after", self.updated_after, now),
            updated_before=_when("--updated-before", self.updated_before, now),
            due_before=_when("--due-before", self.due_before, now),
            lease_owner=self.held_by,
            input=_pairs("--input", self.input or []),
            results=_pairs("--result", self.result or []),
            waiting=self.waiting,
            waiting_for=self.waiting_for,
            failing_step=self.failing_step,
            error=self.error,
            stuck_for=None if self.stuck is None else duration("--stuck", self.stuck),
        )

    @property
    def any(self) -> bool:
        """Whether any filter was given (a bulk action refuses to act on every saga)."""
        return any(value not in (None, False, []) for value in vars(self).values())


def duration(option: str, text: str) -> float:
    """Seconds in ``90s``, ``10m``, ``2h``, ``3d``, ``1w`` (or a bare number of seconds)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        fail(f"invalid {option} {text!r}: use a duration such as 90s, 10m, 2h or 3d", 2)
    return float(match.group(1)) * _UNITS[match.group(2)]


def _when(option: str, text: str | None, now: float) -> float | None:
    if text is None:
        return None
    if text.strip().lower() == "now":
        return now
    if _DURATION.fullmatch(text.strip().lower()):
        return now - duration(option, text)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        fail(f"invalid {option} {text!r}: use 2026-12-01T09:30, or a duration ago such as 2h", 2)


def _statuses(values: list[str]) -> list[SagaStatus]:
    statuses = []
    for value in (part.strip() for text in values for part in text.split(",")):
        try:
            statuses.append(SagaStatus(value.lower()))
        except ValueError:
            valid = ", ".join(s.value for s in SagaStatus)
            fail(f"invalid --status {value!r}; use one of: {valid}", 2)
    return statuses


def _pairs(option: str, values: list[str]) -> dict[str, str]:
    pairs = {}
    for text in values:
        path, equals, value = text.partition("=")
        if not equals or not path or any(not key for key in path.split(".")):
            fail(f"invalid {option} {text!r}: use FIELD=VALUE, such as order_id=42", 2)
        pairs[path] = value
    return pairs


def with_filters(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command every filter option; it receives them as one ``filters: Filters``."""
    own = inspect.signature(command, eval_str=True)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in _OPTIONS.items()
    ]
    kept = [p for p in own.parameters.values() if p.name != "filters"]

    @functools.wraps(command)
    def with_options(**options: Any) -> T:
        filters = Filters(**{name: options.pop(name) for name in _OPTIONS})
        return command(filters=filters, **options)

    with_options.__signature__ = own.replace(parameters=[*kept, *extra])  # type: ignore[attr-defined]
    return with_options
