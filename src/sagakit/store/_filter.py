"""Which instances a listing wants: the part of a query a store answers from its own rows.

A store filters on the columns of its ``sagas`` row (status, name, version, times, lease)
and on a field of the saga's input or of a step's result, each in one SQL statement with
cursor paging. What needs the whole log folded (is it waiting? which step fails? stuck
for how long?) is :mod:`sagakit.operations`' job, on top of this.

A field's value is compared as text, so that ``order_id=42`` finds the number 42 and the
string ``"42"`` alike: a string is itself, a number is its JSON spelling, ``true`` and
``false`` are those words. Null, objects, arrays and missing fields match nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from sagakit.errors import InvalidArgumentError
from sagakit.log import Instance, Record, RecordType, SagaStatus

Position: TypeAlias = tuple[float, str]
"""Where a page of instances ended: the last one's ``(created_at, id)``. Listings run
newest first by that pair, so the next page is everything before it."""


@dataclass(frozen=True, slots=True)
class FieldEquals:
    """A field whose value, as text, is ``text``: of the saga's input (``step`` None) or
    of the result that step ``step`` recorded. ``path`` is the keys from the top down."""

    path: tuple[str, ...]
    text: str
    step: str | None = None

    def __post_init__(self) -> None:
        if not self.path or any(not key or '"' in key for key in self.path):
            raise InvalidArgumentError(
                f"invalid field path {'.'.join(self.path)!r}: keys must be non-empty, "
                "without double quotes"
            )

    @property
    def log_path(self) -> tuple[str, ...]:
        """The keys from the top of the record's payload: ``input`` is inside
        ``saga_started``; a result is the whole ``step_succeeded`` payload."""
        return self.path if self.step is not None else ("input", *self.path)


@dataclass(frozen=True, slots=True)
class InstanceFilter:
    """Instances that pass every condition set here (an empty filter passes all).

    Times are epoch seconds; ``*_after`` and ``*_before`` bounds are exclusive.
    """

    statuses: Collection[SagaStatus] = frozenset()
    names: Collection[str] = frozenset()
    versions: Collection[int] = frozenset()
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None
    due_before: float | None = None
    """Only instances due by then (``due_at`` set and not later)."""
    lease_owner: str | None = None
    """Only instances whose lease this owner took last (lapsed or not)."""
    fields: Sequence[FieldEquals] = ()

    def __post_init__(self) -> None:
        for name in ("statuses", "names", "versions"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        object.__setattr__(self, "fields", tuple(self.fields))

    def admits(self, instance: Instance) -> bool:
        """Whether the row passes the row conditions (the fields are checked apart, on
        the log): the reference every store's SQL must agree with."""
        return (
            (not self.statuses or instance.status in self.statuses)
            and (not self.names or instance.name in self.names)
            and (not self.versions or instance.version in self.versions)
            and _above(instance.created_at, self.created_after)
            and _below(instance.created_at, self.created_before)
            and _above(instance.updated_at, self.updated_after)
            and _below(instance.updated_at, self.updated_before)
            and (
                self.due_before is None
                or (instance.due_at is not None and instance.due_at <= self.due_before)
            )
            and (self.lease_owner is None or instance.lease_owner == self.lease_owner)
        )


ALL = InstanceFilter()


class Count(NamedTuple):
    """How many instances (``total``) of saga ``name`` at ``version`` are in ``status``."""

    name: str
    version: int
    status: SagaStatus
    total: int


def field_text(value: Any) -> str | None:
    """A JSON value as a field filter compares it (None: it matches nothing)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def fields_match(fields: Sequence[FieldEquals], records: Sequence[Record]) -> bool:
    """Whether an instance's log has every field: the reference for a store with no SQL."""
    return all(_has(field, records) for field in fields)


def _has(field: FieldEquals, records: Sequence[Record]) -> bool:
    for record in records:
        if field.step is None:
            found = record.seq == 0
        else:
            found = record.type is RecordType.STEP_SUCCEEDED and record.step == field.step
        if found and record.data is not None:
            value = field_text(field_at(json.loads(record.data), field.log_path))
            if value == field.text:
                return True
    return False


def field_values(text: str) -> list[object]:
    """Every JSON value whose text is ``text``: the string itself, and the number or
    boolean it spells if it spells one."""
    values: list[object] = [text]
    if text in ("true", "false"):
        values.append(text == "true")
    else:
        try:
            number = json.loads(text)
        except ValueError:
            return values
        if isinstance(number, int | float) and math.isfinite(number):
            values.append(number)
    return values


def field_at(payload: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` inside a decoded payload, or None if there is none."""
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _above(value: float, bound: float | None) -> bool:
    return bound is None or value > bound


def _below(value: float, bound: float | None) -> bool:
    return bound is None or value < bound
