"""Finding sagas: one query for the CLI, the dashboard and your own scripts.

A :class:`Query` combines conditions on the instance's row, which the store answers in SQL
with an index where it has one (status, name, times, lease, an input or result field), and
conditions on its folded log, which only the log can answer (a step waiting, a step failing,
an error's text, no progress for a while). The second kind reads the log of each instance
the first kind lets through, so pair them with a status, name or time to keep that set
small: ``Query(names={"order"}, error="timeout")`` reads only orders' logs.

Pages run newest first; a page's :attr:`Page.next` is an opaque cursor for the one after it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sagakit.errors import InvalidArgumentError
from sagakit.log import Instance, RecordType, SagaState, SagaStatus, StepState, StepStatus, Waiting
from sagakit.log._records import UNFINISHED
from sagakit.store import Count, FieldEquals, InstanceFilter, Position, Store

_WAITING_STATUSES = frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING})
_ACTION_FAILING = frozenset({StepStatus.FAILED, StepStatus.RUNNING, StepStatus.WAITING})
_UNDO_FAILING = frozenset({StepStatus.COMPENSATION_FAILED, StepStatus.COMPENSATING})
_SETBACKS = frozenset({RecordType.STEP_FAILED, RecordType.COMPENSATION_FAILED})
_STARTS = frozenset({RecordType.STEP_STARTED, RecordType.COMPENSATION_STARTED})
_LOG_BATCH = 200
"""Instances read per round when a query needs their logs."""


class SagaView(NamedTuple):
    """An instance as an operator looks at it: its row (lease, due time) and its folded log."""

    instance: Instance
    state: SagaState

    @property
    def waiting(self) -> tuple[StepState, Waiting] | None:
        """The step that waits, and for what, if one does."""
        for step in self.state.steps:
            if step.status is StepStatus.WAITING and step.waiting is not None:
                return step, step.waiting
        return None

    @property
    def progress_at(self) -> float:
        """When the saga last moved on: its newest record that is neither a failure nor
        the retry of one (a step failing over and over is not progress)."""
        for record in reversed(self.state.records):
            if record.type in _SETBACKS or (record.type in _STARTS and record.attempt > 1):
                continue
            return record.at
        return self.instance.created_at

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape ``sagakit list --json`` prints: the state without its events,
        and the row's scheduling facts."""
        waiting = self.waiting
        return {
            **self.state.as_dict(events=False),
            "due_at": self.instance.due_at,
            "lease_owner": self.instance.lease_owner,
            "lease_expires": self.instance.lease_expires,
            "waiting": None if waiting is None else {"step": waiting[0].name, **waiting[1]},
            "progress_at": self.progress_at,
        }

    def stuck(self, now: float, longer_than: float) -> bool:
        """Unfinished, not in a wait that is still on time, and no progress for that long.

        A wait without a deadline, or whose deadline is still ahead, is the saga doing what
        it was written to do; past its deadline it should have moved on.
        """
        if self.state.status not in UNFINISHED:
            return False
        waiting = self.waiting
        if waiting is not None and (waiting[1]["until"] is None or waiting[1]["until"] > now):
            return False
        return now - self.progress_at > longer_than


@dataclass(frozen=True)
class Query:
    """Sagas that pass every condition set (an empty query finds them all).

    ``input`` and ``results`` map a dotted field path to the text its value must have
    (see :mod:`sagakit.store._filter` for how values compare): ``input={"order_id": "42"}``,
    ``results={"charge.payment_id": "p-1"}`` (the first key of a result path is the step).
    Times are epoch seconds; ``stuck_for`` is in seconds.
    """

    statuses: Collection[SagaStatus] = ()
    names: Collection[str] = ()
    versions: Collection[int] = ()
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None
    due_before: float | None = None
    lease_owner: str | None = None
    input: Mapping[str, str] = field(default_factory=dict)
    results: Mapping[str, str] = field(default_factory=dict)
    waiting: bool = False
    """Only sagas with a step waiting for a signal (``waiting_for`` names which)."""
    waiting_for: str | None = None
    failing_step: str | None = None
    """Only sagas in which this step's latest call (action or compensation) failed, or
    which are calling it again after a failure."""
    error: str | None = None
    """Only sagas whose reason or a step's current error contains this text (any case)."""
    stuck_for: float | None = None
    """Only unfinished sagas that made no progress for this long (see :meth:`SagaView.stuck`)."""

    @property
    def reads_log(self) -> bool:
        """Whether some condition needs each instance's log (see the module's docstring)."""
        return bool(
            self.waiting
            or self.waiting_for is not None
            or self.failing_step is not None
            or self.error is not None
            or self.stuck_for is not None
        )

    def rows(self, now: float) -> InstanceFilter | None:
        """The conditions a store answers itself, narrowed by what the log conditions
        imply; None when they cannot all hold (say ``--status completed --stuck 1h``)."""
        statuses = frozenset(self.statuses) or frozenset(SagaStatus)
        created_before = self.created_before
        if self.waiting or self.waiting_for is not None:
            statuses &= _WAITING_STATUSES
        if self.stuck_for is not None:
            statuses &= frozenset(UNFINISHED)
            created_before = _earliest(created_before, now - self.stuck_for)
        if not statuses:
            return None
        return InstanceFilter(
            statuses=statuses if statuses != frozenset(SagaStatus) else (),
            names=self.names,
            versions=self.versions,
            created_after=self.created_after,
            created_before=created_before,
            updated_after=self.updated_after,
            updated_before=self.updated_before,
            due_before=self.due_before,
            lease_owner=self.lease_owner,
            fields=[*_fields(self.input, of_input=True), *_fields(self.results, of_input=False)],
        )

    def admits(self, view: SagaView, now: float) -> bool:
        """Whether a saga the store let through passes the log conditions too."""
        state = view.state
        if self.waiting or self.waiting_for is not None:
            waiting = view.waiting
            if waiting is None or self.waiting_for not in (None, waiting[1]["signal"]):
                return False
        if self.failing_step is not None:
            step = state.by_name.get(self.failing_step)
            if step is None or not _failing(step):
                return False
        if self.error is not None and self.error.casefold() not in _error_text(state):
            return False
        return self.stuck_for is None or view.stuck(now, self.stuck_for)


@dataclass(frozen=True)
class Page:
    """One page of a listing, newest first."""

    sagas: list[SagaView]
    next: str | None
    """The cursor of the page after this one (``find(after=...)``); None: there is none."""


async def find(
    store: Store,
    query: Query | None = None,
    *,
    limit: int = 50,
    after: str | None = None,
    now: float | None = None,
) -> Page:
    """The newest ``limit`` sagas that pass ``query``, from the ``after`` cursor on."""
    if limit < 1:
        raise InvalidArgumentError(f"limit must be at least 1, not {limit}")
    query = query or Query()
    now = time.time() if now is None else now
    rows = query.rows(now)
    if rows is None:
        return Page([], None)
    position = position_of(after) if after is not None else None
    batch = max(limit + 1, _LOG_BATCH) if query.reads_log else limit + 1
    found: list[SagaView] = []
    while len(found) <= limit:
        instances = await store.instances(rows, after=position, limit=batch)
        found += [v for v in await views(store, instances) if query.admits(v, now)]
        if len(instances) < batch:
            break
        position = _position(instances[-1])
    if len(found) <= limit:
        return Page(found, None)
    return Page(found[:limit], cursor_of(_position(found[limit - 1].instance)))


async def count(
    store: Store, query: Query | None = None, *, now: float | None = None
) -> list[Count]:
    """How many sagas that pass ``query`` each saga name has in each status.

    Row conditions alone are counted by the store in one statement; log conditions read
    the log of every instance the row conditions let through.
    """
    query = query or Query()
    now = time.time() if now is None else now
    rows = query.rows(now)
    if rows is None:
        return []
    if not query.reads_log:
        return await store.counts(rows)
    tally: collections.Counter[tuple[str, int, SagaStatus]] = collections.Counter()
    position: Position | None = None
    while True:
        instances = await store.instances(rows, after=position, limit=_LOG_BATCH)
        for view in await views(store, instances):
            if query.admits(view, now):
                tally[view.state.name, view.state.version, view.state.status] += 1
        if len(instances) < _LOG_BATCH:
            return [Count(*key, n) for key, n in sorted(tally.items())]
        position = _position(instances[-1])


async def views(store: Store, instances: Iterable[Instance]) -> list[SagaView]:
    """Each instance with its log folded, in the same order (read in one round trip)."""
    loaded = await store.load_many([i.id for i in instances])
    return [
        SagaView(stored.instance, SagaState.from_records(stored.instance.id, stored.records))
        for stored in loaded
    ]


def cursor_of(position: Position) -> str:
    """An opaque, shell-safe spelling of a page's end."""
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def position_of(cursor: str) -> Position:
    """The page end a :func:`cursor_of` cursor spells; a clear error for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, saga_id = json.loads(raw)
        if isinstance(created_at, int | float) and isinstance(saga_id, str):
            return float(created_at), saga_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise InvalidArgumentError(f"invalid cursor {cursor!r}: pass the one a listing printed")


def _position(instance: Instance) -> Position:
    return (instance.created_at, instance.id)


def _fields(wanted: Mapping[str, str], *, of_input: bool) -> list[FieldEquals]:
    fields = []
    for path, text in wanted.items():
        keys = tuple(path.split("."))
        if of_input:
            fields.append(FieldEquals(keys, text))
        elif len(keys) < 2:
            raise InvalidArgumentError(
                f"invalid result field {path!r}: name the step, then the field (STEP.FIELD)"
            )
        else:
            fields.append(FieldEquals(keys[1:], text, step=keys[0]))
    return fields


def _failing(step: StepState) -> bool:
    if step.error is not None and step.status in _ACTION_FAILING:
        return True
    return step.compensation_error is not None and step.status in _UNDO_FAILING


def _error_text(state: SagaState) -> str:
    """Everything that says what went wrong, folded to one case for matching."""
    parts = [state.reason or ""]
    for step in state.steps:
        for error in (step.error, step.compensation_error):
            if error is not None:
                parts += [error["type"], error["message"]]
    return "\n".join(parts).casefold()


def _earliest(bound: float | None, other: float) -> float:
    return other if bound is None else min(bound, other)
