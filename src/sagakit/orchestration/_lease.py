"""A driver's lease: noticing that it is gone, and the event-loop stalls that lose it.

An engine renews its leases on a timer of the event loop, so an ``async def`` step that
blocks the loop (``time.sleep``, CPU work) starves the renewals, and past its lease another
worker takes the saga over. The engine cannot stop such a step, but it can make sure that
the driver that lost the lease stops at its next write or call (the new holder's run is
then the only one), say so in words an operator reads as what it is (not as a corrupt
log), and name the step that blocked the loop, from a light timer that measures how late
it fires.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Protocol

from sagakit.errors import UnknownSagaError
from sagakit.log import Record, SagaState
from sagakit.log._fast import RecordTypes
from sagakit.orchestration._plan import Plan, log_fields
from sagakit.store import Store

logger = logging.getLogger("sagakit.orchestration")

GONE = -math.inf
"""A driver's ``lease_until`` once the engine learnt that its lease is gone: every clock
reading is past it."""
LAG_TICKS = 12
"""Ticks of the lag timer per lease: a stall is measured to within a twelfth of a lease."""


class LeaseLost(Exception):
    """The driver stops here: its lease lapsed or another holder took the instance over."""


def held_until(lease_expires: float | None, lease: float) -> float:
    """When a lease just taken lapses, by this process's clock: the store's expiry, but no
    later than a full lease from now (PostgreSQL stamps it with the database's clock)."""
    mine = time.time() + lease
    return mine if lease_expires is None else min(lease_expires, mine)


async def after_lost_lease(store: Store, lost: SagaState, owner: str) -> tuple[SagaState, str]:
    """The instance as stored once its driver stopped for a lost lease, and what became of
    it (logged as a warning, with who holds it now): the log is the new holder's to write.

    An instance still leased to ``owner`` had its lease lapse with nobody taking it yet:
    the caller hands it back, due at once.
    """
    stored = await store.load(lost.id)
    if stored is None:  # pragma: no cover - instances are never deleted
        raise UnknownSagaError(lost.id)
    state = SagaState.from_records(lost.id, stored.records)
    holder = stored.instance.lease_owner
    if state.status.is_terminal:
        tail = f"; it has ended meanwhile ({state.status.value})"
    elif holder is not None and holder != owner:
        tail = f" to {holder}; the new holder carries it on"
    else:
        tail = " (it lapsed before a renewal could keep it); it is handed back"
    fields = log_fields(lost.id, lost.name, lost.version)
    logger.warning(
        "lost the lease of saga %s%s", lost.id, tail, extra=fields | {"lease_owner": holder}
    )
    return state, "lost the lease" + tail


class _Driving(Protocol):
    @property
    def state(self) -> SagaState: ...


class LagWatch:
    """A timer that fires every twelfth of a lease while sagas are driven and measures how
    late it fired: later than a third of the lease means the loop was blocked that long,
    renewals waited, and the lease of every saga here came that much nearer to lapsing. It
    warns, naming each call that was in flight when the stall began.

    A drive that ends while the timer is overdue (the stall has just ended: its saga may
    be the one that caused it) is kept for the next tick, which may need to name it.
    """

    def __init__(
        self,
        lease: float,
        drivers: Mapping[str, _Driving],
        plans: Mapping[tuple[str, int], Plan],
    ) -> None:
        self.lease = lease
        self._plans = plans
        self.period = lease / LAG_TICKS
        self.limit = lease / 3
        self._drivers = drivers
        self._ended: list[SagaState] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        """When the timer is due, by the loop's clock."""
        self._due_wall = 0.0
        """The same moment by the clock that stamps records."""

    def start(self) -> None:
        """Watch from now on, if not already watching (on this loop: an engine may outlive
        the loop it first ran on)."""
        loop = asyncio.get_running_loop()
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._schedule()

    def ended(self, state: SagaState) -> None:
        """A drive ended; keep its state if a stall may have just ended (see the class)."""
        loop = self._loop
        if self._timer is not None and loop is not None and loop.time() > self._due + self.limit:
            self._ended.append(state)

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.period
        self._due_wall = time.time() + self.period
        self._timer = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        late = self._loop.time() - self._due
        ended, self._ended = self._ended, []
        self._timer = None
        if late > self.limit:
            states = [driver.state for driver in self._drivers.values()] + ended
            self._warn(late, states)
        if self._drivers:
            self._schedule()

    def _warn(self, late: float, states: list[SagaState]) -> None:
        named = 0
        for state in states:
            call = in_flight(state, self._due_wall)
            if call is None or call.step is None:
                continue
            named += 1
            role = "action" if call.type is RecordTypes.STEP_STARTED else "compensation"
            cause = _STALL_CAUSES[self._runs_on_loop(state, call.step, role)]
            logger.warning(
                "saga %s: the event loop was blocked for %.2f s, more than a third of the"
                " %g s lease, while step %r (%s, attempt %d) was in flight: %s",
                *(state.id, late, self.lease, call.step, role, call.attempt, cause),
                extra=log_fields(state.id, state.name, state.version, call.step, call.attempt, role)
                | {"seconds": round(late, 3)},
            )
        if not named:
            logger.warning(
                "the event loop was blocked for %.2f s, more than a third of the %g s lease,"
                " while no step was being called: leases may lapse and other workers take"
                " sagas over",
                *(late, self.lease),
                extra={"seconds": round(late, 3)},
            )

    def _runs_on_loop(self, state: SagaState, step: str, role: str) -> bool:
        """Whether the call is an ``async def`` (it runs on the loop, so it may be what
        blocked it); a step this engine does not know is taken for one."""
        plan = self._plans.get((state.name, state.version))
        if plan is None:
            return True
        try:
            known = plan.saga.get(step)
        except KeyError:
            return True
        return known.action_is_async if role == "action" else known.compensation_is_async


_STALL_CAUSES = {
    True: "a blocking call in an async def (time.sleep, CPU work) starves lease renewals, so"
    " another worker may take the saga over; make the step a plain def (it runs in a"
    " thread) or await instead",
    False: "the step is a plain def running in a thread, so something else held the loop"
    " (another async def, a thread holding the GIL) or the process was starved (an"
    " overloaded machine, a paused VM); another worker may take the saga over; find the"
    " blocker, give the worker CPU, or lengthen the lease",
}
"""Why the loop may have stalled, by whether the call in flight ran on the loop."""


def in_flight(state: SagaState, since: float) -> Record | None:
    """The ``*_started`` record of the call the instance was in at ``since``, if it was in
    one: its last record stamped before then started a call (what came after, an outcome
    included, was made once the stall was over)."""
    for record in reversed(state.records):
        if record.at < since:
            kind = record.type
            if kind is RecordTypes.STEP_STARTED or kind is RecordTypes.COMPENSATION_STARTED:
                return record
            return None
    return None
