"""The list's filters, as the query string spells them, turned into one :class:`Query`.

The HTML list and ``GET /api/sagas`` take the same parameters, named as ``sagakit list``'s
options (``status``, ``name``, ``version``, ``input=FIELD=VALUE``, ``result``, ``waiting``,
``waiting_for``, ``failing_step``, ``error``, ``stuck``, the ``created_*``, ``updated_*``
and ``due_before`` windows, ``held_by``). A form sends every field, filled in or not, so
an empty value means "no condition". Times are ``WHEN``: an ISO 8601 moment (local time
unless it names its zone), ``now``, or a duration meaning that long ago (``90s``, ``10m``,
``2h``, ``3d``, ``1w``). A value that cannot work is an :class:`InvalidArgumentError`,
which the app answers with 422 and one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Annotated

from fastapi import Query as Param

from sagakit.errors import InvalidArgumentError
from sagakit.log import SagaStatus
from sagakit.operations import Query

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_WHEN = "An ISO 8601 time, `now`, or a duration ago (`90s`, `10m`, `2h`, `3d`, `1w`)."
STATUSES = [status.value for status in SagaStatus]

Texts = list[str] | None


@dataclass
class Filters:
    """The filters as typed in the form or the query string, blanks and all."""

    status: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    version: list[str] = field(default_factory=list)
    input: list[str] = field(default_factory=list)
    result: list[str] = field(default_factory=list)
    waiting: bool = False
    waiting_for: str = ""
    failing_step: str = ""
    error: str = ""
    stuck: str = ""
    created_after: str = ""
    created_before: str = ""
    updated_after: str = ""
    updated_before: str = ""
    due_before: str = ""
    held_by: str = ""

    def query(self, now: float) -> Query:
        """The query these filters ask for; :class:`InvalidArgumentError` for a bad one."""
        return Query(
            statuses=_statuses(self.status),
            names=_listed(self.name),
            versions=[_version(text) for text in _listed(self.version)],
            created_after=_when("created_after", self.created_after, now),
            created_before=_when("created_before", self.created_before, now),
            updated_after=_when("updated_after", self.updated_after, now),
            updated_before=_when("updated_before", self.updated_before, now),
            due_before=_when("due_before", self.due_before, now),
            lease_owner=self.held_by or None,
            input=_pairs("input", self.input),
            results=_result_pairs(self.result),
            waiting=self.waiting,
            waiting_for=self.waiting_for or None,
            failing_step=self.failing_step or None,
            error=self.error or None,
            stuck_for=_duration("stuck", self.stuck) if self.stuck.strip() else None,
        )

    @property
    def any(self) -> bool:
        """Whether any condition is set."""
        return any(_set(getattr(self, f.name)) for f in fields(self))

    def items(self) -> list[tuple[str, str]]:
        """The filters set, as query-string pairs (for the next page's link)."""
        pairs: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                pairs += [(f.name, text) for text in value if text.strip()]
            elif value is True:
                pairs.append((f.name, "true"))
            elif isinstance(value, str) and value.strip():
                pairs.append((f.name, value))
        return pairs


def filters(
    status: Annotated[
        Texts, Param(description=f"Only these statuses: {', '.join(STATUSES)}.")
    ] = None,
    name: Annotated[Texts, Param(description="Only these saga names.")] = None,
    version: Annotated[Texts, Param(description="Only these definition versions.")] = None,
    input: Annotated[Texts, Param(description="`FIELD=VALUE`: the input has it.")] = None,
    result: Annotated[Texts, Param(description="`STEP.FIELD=VALUE`: STEP returned it.")] = None,
    waiting: Annotated[bool, Param(description="Only sagas with a step waiting.")] = False,
    waiting_for: Annotated[str, Param(description="Waiting for this signal.")] = "",
    failing_step: Annotated[str, Param(description="This step failed last.")] = "",
    error: Annotated[str, Param(description="The reason or an error contains it.")] = "",
    stuck: Annotated[str, Param(description="No progress for this long (`10m`).")] = "",
    created_after: Annotated[str, Param(description=_WHEN)] = "",
    created_before: Annotated[str, Param(description=_WHEN)] = "",
    updated_after: Annotated[str, Param(description=_WHEN)] = "",
    updated_before: Annotated[str, Param(description=_WHEN)] = "",
    due_before: Annotated[str, Param(description=_WHEN)] = "",
    held_by: Annotated[str, Param(description="The lease's last holder.")] = "",
) -> Filters:
    """The filters of a request (a FastAPI dependency, so the API's schema lists them)."""
    return Filters(
        status=status or [],
        name=name or [],
        version=version or [],
        input=input or [],
        result=result or [],
        waiting=waiting,
        waiting_for=waiting_for,
        failing_step=failing_step,
        error=error,
        stuck=stuck,
        created_after=created_after,
        created_before=created_before,
        updated_after=updated_after,
        updated_before=updated_before,
        due_before=due_before,
        held_by=held_by,
    )


def _set(value: object) -> bool:
    if isinstance(value, list):
        return any(text.strip() for text in value)
    if isinstance(value, str):
        return bool(value.strip())
    return value is True


def _filled(values: list[str]) -> list[str]:
    return [text.strip() for text in values if text.strip()]


def _listed(values: list[str]) -> list[str]:
    """Names or versions, each value possibly several, comma-separated (as the form has them)."""
    return _filled([part for value in values for part in value.split(",")])


def _statuses(values: list[str]) -> list[SagaStatus]:
    found = []
    for text in (part.strip() for value in values for part in value.split(",")):
        if not text:
            continue
        try:
            found.append(SagaStatus(text.lower()))
        except ValueError:
            raise InvalidArgumentError(
                f"invalid status {text!r}; use one of: {', '.join(STATUSES)}"
            ) from None
    return found


def _version(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise InvalidArgumentError(f"invalid version {text!r}: use a whole number such as 1")
    return int(text)


def _duration(name: str, text: str) -> float:
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or len(match.group(1)) > 12:
        raise InvalidArgumentError(
            f"invalid {name} {text!r}: use a duration such as 90s, 10m, 2h or 3d"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _when(name: str, text: str, now: float) -> float | None:
    text = text.strip()
    if not text:
        return None
    if text.lower() == "now":
        return now
    if _DURATION.fullmatch(text.lower()):
        return now - _duration(name, text)
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise InvalidArgumentError(
            f"invalid {name} {text!r}: use 2026-12-01T09:30, now, or a duration ago such as 2h"
        ) from None


def _pairs(name: str, values: list[str]) -> dict[str, str]:
    pairs = {}
    for text in _filled(values):
        path, equals, value = text.partition("=")
        if not equals or not path or any(not key for key in path.split(".")):
            raise InvalidArgumentError(
                f"invalid {name} {text!r}: use FIELD=VALUE, such as order_id=42"
            )
        pairs[path] = value
    return pairs


def _result_pairs(values: list[str]) -> dict[str, str]:
    pairs = _pairs("result", values)
    for path in pairs:
        if "." not in path:
            raise InvalidArgumentError(
                f"invalid result {path!r}: name the step, then the field (STEP.FIELD=VALUE)"
            )
    return pairs
