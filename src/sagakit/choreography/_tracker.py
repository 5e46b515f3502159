"""The tracker: rebuilds each choreographed saga's timeline in the saga log, from its events.

Choreography's cost is that nobody sees the whole flow. The tracker pays it once: it
subscribes to the streams as a consumer group of its own, and for every event of a declared
:class:`~sagakit.choreography.Choreography` appends to the saga (id: the event's correlation
id) the records an orchestrated run of the same step would have written: ``step_started``
and ``step_succeeded``/``step_failed``, ``compensation_started`` and
``compensation_succeeded``/``compensation_failed``, ``saga_compensating``, and a terminal
record for the declared ending events. So ``sagakit list/show``, and whatever else reads
the saga log, show a choreographed saga as they show an orchestrated one, with each
record's ``data`` naming the event behind it (``event``, ``event_id``, ``source``,
``causation_id``).

Idempotent: the event ids already in a saga's records are skipped, so a redelivery appends
nothing. One tracker records a saga's events one at a time; two trackers appending to one
saga collide on the log position, and the loser re-reads and retries. Events that arrive
out of order are recorded in arrival order with their own timestamps; a saga first heard of
through a later event is created anyway (its input unknown until then), and the statuses
still end right.

A saga not ended within ``max_gap`` seconds of its last event is marked ``needs_attention``
by :meth:`Tracker.check_stuck`, naming the events it waits for. An event that arrives later
still moves it on: an ending event ends it.

A *forward* event (one that is not a compensation, a failure or an ending of compensation)
for a saga that has begun compensating is not recorded as a step: the saga is marked
``needs_attention`` instead, its reason naming the event (``forward event after
compensation: <type> <id> from <source>``) and its record carrying the event's facts. That is
what a producer re-publishing an event with a new id (outside an outbox) looks like, and the
services may have acted on it. The flag is raised once: a later forward event for a saga that
already needs attention is logged and not recorded, and the compensation events still to
come are recorded but do not end the saga; a person resolves it. A forward event that a
recorded event names as its cause is no re-publish but an earlier event overtaken by its
consequences, and is recorded as any other.

The tracker creates its sagas leased to itself until the end of time, so that workers of
orchestrated sagas on the same database never claim one (they could not drive it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sagakit.bus import Broker, Delivery, Event, Subscription
from sagakit.bus._broker import check_name
from sagakit.choreography._definition import Choreography, Role, StepOutcome
from sagakit.choreography._logging import event_fields, handling_failed, logger, saga_fields
from sagakit.choreography._service import subscribe_all
from sagakit.errors import ConcurrentUpdateError, SagaDefinitionError
from sagakit.log import (
    Attention,
    Journal,
    Record,
    RecordType,
    SagaState,
    SagaStatus,
    Started,
    StepStatus,
)
from sagakit.log._codec import decode, encode
from sagakit.store import Store

TRACKER_GROUP = "sagakit-tracker"
LEASE_OWNER = "sagakit-tracker"
HELD_UNTIL = 253402300799.0
"""9999-12-31T23:59:59Z: the lease on a tracked saga; the terminal record releases it."""
CONFLICT_RETRIES = 20
CACHE_SIZE = 4096
LOCK_STRIPES = 64
OUTCOME_LEVELS = {
    SagaStatus.COMPENSATING: logging.INFO,
    SagaStatus.COMPLETED: logging.INFO,
    SagaStatus.COMPENSATED: logging.WARNING,
    SagaStatus.NEEDS_ATTENTION: logging.WARNING,
}
"""How loud a saga's change of status is logged: an end other than success is a warning,
for an operator to look at; other changes, and events that change no status, are debug."""
_EXPLAINED = (SagaStatus.COMPENSATING, SagaStatus.NEEDS_ATTENTION)
"""The statuses whose log line gives the saga's reason."""
_FORWARD = (StepOutcome.STARTED, StepOutcome.SUCCEEDED)
"""The step outcomes an event moving its saga forward reports."""


LATE_REASON = "forward event after compensation"
"""How the reason of a saga flagged for a forward event heard after it began compensating
starts; the event's type, id and source follow."""


@dataclass(slots=True)
class _Tracked:
    """A saga as this tracker last wrote it, the event ids already in its log, and the ids
    its recorded events name as their causes (an event overtaken by its consequences)."""

    state: SagaState
    seen: set[str] = field(default_factory=set)
    causes: set[str] = field(default_factory=set)

    def note(self, event: Event) -> None:
        """``event`` is in the log now."""
        self.seen.add(event.id)
        if event.causation_id is not None:
            self.causes.add(event.causation_id)


class Tracker:
    """Follows the events of ``choreographies`` on ``streams`` into ``store``'s saga log."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        choreographies: Iterable[Choreography],
        *,
        streams: Sequence[str] = ("events",),
        group: str = TRACKER_GROUP,
        concurrency: int = 1,
        max_attempts: int = 10,
        prefetch: int = 50,
        check_every: float | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.streams = [check_name("stream", s) for s in streams]
        self.group = check_name("group", group)
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.prefetch = prefetch
        self._by_type: dict[str, Choreography] = {}
        self._by_key: dict[tuple[str, int], Choreography] = {}
        for choreography in choreographies:
            self._register(choreography)
        gaps = [c.max_gap for c in self._by_key.values()]
        self.check_every = check_every or max(0.2, min(gaps, default=60.0) / 4)
        self.ready = asyncio.Event()
        """Set once subscribed: events published from then on are tracked."""
        self._cache: OrderedDict[str, _Tracked] = OrderedDict()
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    def _register(self, choreography: Choreography) -> None:
        for event_type in choreography.event_types:
            other = self._by_type.get(event_type)
            if other is not None:
                raise SagaDefinitionError(
                    choreography.name, f"event {event_type!r} also belongs to {other.key}"
                )
            self._by_type[event_type] = choreography
        self._by_key[(choreography.name, choreography.version)] = choreography

    async def handle(self, delivery: Delivery) -> None:
        """The subscriptions' handler: raising makes the broker deliver the event again."""
        try:
            await self.track(delivery.event, stream=delivery.stream)
        except Exception as error:  # the saga log may be briefly unavailable
            fields = event_fields(delivery.event, delivery.stream, self.group, delivery.attempt)
            handling_failed(fields, error, delivery.attempt, self.max_attempts)
            raise

    async def track(self, event: Event, *, stream: str = "") -> bool:
        """Record ``event`` (heard on ``stream``, for the log) in its saga's log; False if
        it is not ours or already there."""
        choreography = self._by_type.get(event.type)
        if choreography is None:
            return False
        async with self._lock(event.correlation_id):
            for _ in range(CONFLICT_RETRIES):
                try:
                    before, state = await self._track_once(choreography, event)
                except ConcurrentUpdateError:
                    self._cache.pop(event.correlation_id, None)  # someone else wrote: re-read
                    continue
                if state is not None:
                    self._recorded(choreography, event, stream, before, state)
                return state is not None
        raise ConcurrentUpdateError(event.correlation_id, -1)

    def _recorded(
        self,
        choreography: Choreography,
        event: Event,
        stream: str,
        before: SagaStatus | None,
        state: SagaState,
    ) -> None:
        """Log what ``event`` did to its saga, as loud as :data:`OUTCOME_LEVELS` says."""
        status = state.status
        changed = status is not before
        level = OUTCOME_LEVELS.get(status, logging.DEBUG) if changed else logging.DEBUG
        if not logger.isEnabledFor(level):  # the hot path builds no fields
            return
        role = choreography.role(event.type)
        fields = event_fields(event, stream, self.group)
        step = role.step if role is not None else None
        fields.update(saga_fields(choreography.name, choreography.version, step))
        news = f"is {status.value}" if changed else f"stays {status.value}"
        why = f": {state.reason}" if changed and state.reason and status in _EXPLAINED else ""
        logger.log(
            level,
            "saga %s (%s) %s after %s %s from %s%s",
            *(state.id, choreography.key, news, event.type, event.id, event.source, why),
            extra=fields,
        )

    def _lock(self, saga_id: str) -> asyncio.Lock:
        """One writer per saga in this process: two appends of one saga in one group commit
        would be computed one on top of the other, and must not be."""
        return self._locks[hash(saga_id) % len(self._locks)]

    async def _track_once(
        self, choreography: Choreography, event: Event
    ) -> tuple[SagaStatus | None, SagaState | None]:
        """The saga's status before ``event`` and its state after, with the state None if
        nothing was recorded (the event was seen before, or belongs to another saga)."""
        saga_id = event.correlation_id
        tracked = await self._load(saga_id)
        if tracked is None:
            return None, await self._create(choreography, event)
        if event.id in tracked.seen:
            return None, None
        state = tracked.state
        if (state.name, state.version) != (choreography.name, choreography.version):
            logger.warning(
                "%s: event %s (%s) of %s is not this saga's; ignored",
                *(saga_id, event.id, event.type, choreography.key),
                extra={
                    **event_fields(event, "", self.group),
                    **saga_fields(state.name, state.version),
                },
            )
            return None, None
        before = state.status
        journal = Journal(state)
        if not _EventRecords(choreography, journal).add(event, event.id in tracked.causes):
            if await self._stale(state):  # an operator may have resolved it: decide again
                raise ConcurrentUpdateError(saga_id, state.next_seq)
            self._late_again(choreography, event, state)
            return None, None
        try:
            await self.store.append(saga_id, journal.take(), state.status)
        except BaseException:
            self._cache.pop(saga_id, None)  # its state already has the records applied
            raise
        tracked.note(event)
        return before, state

    async def _stale(self, state: SagaState) -> bool:
        """Whether the saga's log has records ``state`` lacks: what the tracker decides
        without appending must be decided on the log as it is, not on a cached copy."""
        stored = await self.store.load(state.id)
        return stored is not None and len(stored.records) != len(state.records)

    def _late_again(self, choreography: Choreography, event: Event, state: SagaState) -> None:
        """Say that a forward event came for a saga already in a person's hands: its log
        keeps one flag, so a producer that keeps re-publishing does not flood it."""
        logger.warning(
            "saga %s (%s) already needs attention: %s %s %s from %s not recorded",
            *(state.id, choreography.key, LATE_REASON, event.type, event.id, event.source),
            extra={
                **event_fields(event, "", self.group),
                **saga_fields(choreography.name, choreography.version),
            },
        )

    async def _create(self, choreography: Choreography, event: Event) -> SagaState:
        journal = Journal.begin(
            event.correlation_id, encode(_started(choreography, event)), event.time
        )
        _EventRecords(choreography, journal).add(event)
        state = journal.state
        instance = journal.new_instance(lease_owner=LEASE_OWNER, lease_expires=HELD_UNTIL)
        if not await self.store.create(instance, journal.take()):
            raise ConcurrentUpdateError(state.id, 0)  # created meanwhile: re-read it
        tracked = _Tracked(state)
        tracked.note(event)
        self._remember(tracked)
        return state

    async def _load(self, saga_id: str) -> _Tracked | None:
        tracked = self._cache.get(saga_id)
        if tracked is not None:
            self._cache.move_to_end(saga_id)
            return tracked
        stored = await self.store.load(saga_id)
        if stored is None:
            return None
        tracked = _Tracked(SagaState.from_records(saga_id, stored.records))
        for record in stored.records:
            facts = _facts_of(record)
            if facts is not None:
                tracked.seen.add(facts["event_id"])
                if isinstance(cause := facts.get("causation_id"), str):
                    tracked.causes.add(cause)
        self._remember(tracked)
        return tracked

    def _remember(self, tracked: _Tracked) -> None:
        self._cache[tracked.state.id] = tracked
        self._cache.move_to_end(tracked.state.id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def check_stuck(self, now: float | None = None) -> list[str]:
        """Mark ``needs_attention`` every unfinished tracked saga silent for over its
        ``max_gap``; the ids marked."""
        now = time.time() if now is None else now
        marked = []
        for instance in await self.store.unfinished():
            choreography = self._by_key.get((instance.name, instance.version))
            if choreography is None or now - instance.updated_at <= choreography.max_gap:
                continue
            async with self._lock(instance.id):
                with contextlib.suppress(ConcurrentUpdateError):  # an event came: not stuck
                    if await self._mark_stuck(choreography, instance.id, now):
                        marked.append(instance.id)
        return marked

    async def _mark_stuck(self, choreography: Choreography, saga_id: str, now: float) -> bool:
        self._cache.pop(saga_id, None)
        tracked = await self._load(saga_id)
        if tracked is None or tracked.state.status.is_terminal:
            return False
        state = tracked.state
        gap = now - state.records[-1].at
        if gap <= choreography.max_gap:
            return False
        journal = Journal(state)
        _EventRecords(choreography, journal).stuck(now, gap)
        try:
            await self.store.append(saga_id, journal.take(), state.status)
        except BaseException:
            self._cache.pop(saga_id, None)
            raise
        logger.warning(
            "saga %s (%s) needs attention: %s",
            *(saga_id, choreography.key, state.reason),
            extra={
                "saga_id": saga_id,
                "service": self.group,
                **saga_fields(choreography.name, choreography.version),
            },
        )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe (retrying an unreachable broker) and track until ``stop`` is set,
        looking for stuck sagas every ``check_every`` seconds."""
        subscriptions: list[Subscription] = []
        try:
            if not await subscribe_all(
                self.broker,
                self.streams,
                self.group,
                self.handle,
                stop,
                into=subscriptions,
                copies=self.concurrency,
                max_attempts=self.max_attempts,
                prefetch=self.prefetch,
            ):
                return
            self.ready.set()
            logger.info(
                "%s: tracking %s on %s",
                *(self.group, ", ".join(sorted(c.key for c in self._by_key.values()))),
                ", ".join(self.streams),
                extra={"service": self.group},
            )
            await self._watch(stop)
        finally:
            await asyncio.gather(*(s.close() for s in subscriptions))

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.check_every):
                    await stop.wait()
            if stop.is_set():
                return
            try:
                await self.check_stuck()
            except Exception as error:  # the saga log may be briefly unavailable
                logger.warning(
                    "%s: looking for stuck sagas failed: %r; again in %.1fs",
                    *(self.group, error, self.check_every),
                    extra={"service": self.group},
                )


class _EventRecords:
    """Turns events into saga log records, made through the instance's journal."""

    def __init__(self, choreography: Choreography, journal: Journal) -> None:
        self.choreography = choreography
        self.journal = journal
        self.state = journal.state

    def add(self, event: Event, known_cause: bool = False) -> bool:
        """Make the records ``event`` means for the saga, in order; False if it means none
        (a forward event after compensation, for a saga already needing attention).

        ``known_cause``: a recorded event names ``event`` as its cause, so it happened
        before them and is recorded as it is even if the saga compensates by now."""
        role = self.choreography.role(event.type)
        assert role is not None
        if not known_cause and self._forward(event, role) and _compensation_begun(self.state):
            return self._late(event)
        self._step(event, role)
        self._ending(event, role)
        return True

    def _forward(self, event: Event, role: Role) -> bool:
        """Whether ``event`` moves its saga forward: it reports a step started or done and
        is none of the events that fail the saga or end it otherwise than completed."""
        choreography = self.choreography
        backward = choreography.fails | choreography.compensated | choreography.needs_attention
        return role.outcome in _FORWARD and event.type not in backward

    def _late(self, event: Event) -> bool:
        """Flag the saga for a forward event heard after it began compensating, unless it
        needs attention already (one flag: False, nothing recorded)."""
        if self.state.status is SagaStatus.NEEDS_ATTENTION:
            return False
        reason = f"{LATE_REASON}: {event.type} {event.id} from {event.source}"
        attention: Attention = {"reason": reason, "failed": self._not_undone()}
        self._add(RecordType.SAGA_NEEDS_ATTENTION, event.time, None, 0, attention | _facts(event))
        return True

    def _step(self, event: Event, role: Role) -> None:
        step = self.state.by_name[role.step]
        facts = _facts(event)
        at, outcome = event.time, role.outcome
        if outcome is StepOutcome.STARTED or (
            outcome in (StepOutcome.SUCCEEDED, StepOutcome.FAILED)
            and step.status is not StepStatus.RUNNING
        ):
            data = facts if outcome is StepOutcome.STARTED else None
            self._add(RecordType.STEP_STARTED, at, step.name, step.attempts + 1, data)
        if outcome is StepOutcome.SUCCEEDED:
            result = {**facts, "payload": event.data}
            self._add(RecordType.STEP_SUCCEEDED, at, step.name, step.attempts, result)
        elif outcome is StepOutcome.FAILED:
            failure = {"error": _error(event), "retry_at": None, **facts}
            self._add(RecordType.STEP_FAILED, at, step.name, step.attempts, failure)
        elif outcome in (StepOutcome.COMPENSATED, StepOutcome.COMPENSATION_FAILED):
            self._compensating(event, "compensation began")
            attempt = step.compensation_attempts + 1
            self._add(RecordType.COMPENSATION_STARTED, at, step.name, attempt, None)
            if outcome is StepOutcome.COMPENSATED:
                undone = {**facts, "payload": event.data}
                self._add(RecordType.COMPENSATION_SUCCEEDED, at, step.name, attempt, undone)
            else:
                failure = {"error": _error(event), "retry_at": None, **facts}
                self._add(RecordType.COMPENSATION_FAILED, at, step.name, attempt, failure)

    def _ending(self, event: Event, role: Role) -> None:
        choreography, at = self.choreography, event.time
        if event.type in choreography.fails:
            self._compensating(event, _reason(event) or "failed")
        ended = self.state.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
        if ended or _flagged_late(self.state):  # a flagged saga is a person's to end
            return
        if event.type in choreography.completes:
            self._add(RecordType.SAGA_COMPLETED, at, None, 0, None)
        elif event.type in choreography.compensated:
            self._add(RecordType.SAGA_COMPENSATED, at, None, 0, None)
        elif event.type in choreography.needs_attention:
            failed = [
                s.name for s in self.state.steps if s.status is StepStatus.COMPENSATION_FAILED
            ]
            reason = f"{event.type} from {event.source}: {_reason(event) or 'needs a person'}"
            self._add(
                RecordType.SAGA_NEEDS_ATTENTION, at, None, 0, {"reason": reason, "failed": failed}
            )

    def _compensating(self, event: Event, why: str) -> None:
        if self.state.status in (SagaStatus.PENDING, SagaStatus.RUNNING):
            reason = f"{event.type} from {event.source}: {why}"
            self._add(RecordType.SAGA_COMPENSATING, event.time, None, 0, {"reason": reason})

    def stuck(self, now: float, gap: float) -> None:
        """The ``saga_needs_attention`` record of a saga silent for ``gap`` seconds."""
        state, choreography = self.state, self.choreography
        last = next((r for r in reversed(state.records) if _event_id(r)), None)
        heard = f"; last heard: {decode(last.data)['event']}" if last and last.data else ""
        waiting = self._expected()
        reason = f"stuck: no event for {gap:.0f}s (max_gap {choreography.max_gap:g}s){heard}" + (
            f"; waiting for {' or '.join(waiting)}" if waiting else ""
        )
        undone = self._not_undone() if state.status is SagaStatus.COMPENSATING else []
        attention: Attention = {"reason": reason, "failed": undone}
        self._add(RecordType.SAGA_NEEDS_ATTENTION, now, None, 0, attention)

    def _not_undone(self) -> list[str]:
        """The steps done whose compensation (an event the choreography declares) has not
        been heard: what a compensating saga still waits for."""
        by_name = self.state.by_name
        return [
            s.name
            for s in self.choreography.steps
            if s.events(StepOutcome.COMPENSATED) and by_name[s.name].status is StepStatus.SUCCEEDED
        ]

    def _expected(self) -> list[str]:
        """The event types that would move the saga on from where it is."""
        state = self.state
        if state.status is SagaStatus.COMPENSATING:
            for step in reversed(self.choreography.steps):
                undo = step.events(StepOutcome.COMPENSATED)
                if undo and state.by_name[step.name].status is StepStatus.SUCCEEDED:
                    return sorted(undo)
            return sorted(self.choreography.compensated)
        for step in self.choreography.steps:
            if state.by_name[step.name].status in (StepStatus.PENDING, StepStatus.RUNNING):
                return sorted(step.events(StepOutcome.SUCCEEDED) + step.events(StepOutcome.FAILED))
        return sorted(self.choreography.completes)

    def _add(self, kind: RecordType, at: float, step: str | None, attempt: int, data: Any) -> None:
        self.journal.add(kind, step, attempt, None if data is None else encode(data), at)


def _started(choreography: Choreography, event: Event) -> Started:
    """The ``saga_started`` payload; the input is the event's payload if it starts one."""
    started: Started = {
        "name": choreography.name,
        "version": choreography.version,
        "input": event.data if event.type in choreography.starts else None,
        "steps": choreography.steps_meta,
        "deadline_at": None,
    }
    if choreography.redact:
        started["redact"] = list(choreography.redact)
    return started


def _facts(event: Event) -> dict[str, Any]:
    """What a record keeps of the event it came from; ``event`` first, as the timeline shows
    the start of it."""
    return {
        "event": event.type,
        "source": event.source,
        "event_id": event.id,
        "causation_id": event.causation_id,
    }


def _event_id(record: Record) -> str | None:
    facts = _facts_of(record)
    return None if facts is None else facts["event_id"]


def _facts_of(record: Record) -> dict[str, Any] | None:
    """The facts of the event behind ``record`` (see :func:`_facts`), or None if it has none."""
    if record.data is None or '"event_id"' not in record.data:
        return None
    data = decode(record.data)
    if not isinstance(data, dict) or not isinstance(data.get("event_id"), str):
        return None
    return data


def _compensation_begun(state: SagaState) -> bool:
    """Whether the saga compensates, or did before it needed attention: past the point where
    a forward event can be one of its steps."""
    status = state.status
    if status is SagaStatus.NEEDS_ATTENTION:
        status = state.before_attention or SagaStatus.RUNNING
    return status in (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED)


def _flagged_late(state: SagaState) -> bool:
    """Whether the saga needs attention for a forward event heard after compensation."""
    reason = state.reason
    late = reason is not None and reason.startswith(LATE_REASON)
    return late and state.status is SagaStatus.NEEDS_ATTENTION


def _reason(event: Event) -> str:
    payload = event.data
    if isinstance(payload, dict):
        for key in ("reason", "error", "message"):
            if key in payload:
                return str(payload[key])
    return ""


def _error(event: Event) -> dict[str, str]:
    return {"type": event.type, "message": _reason(event) or f"reported by {event.source}"}
