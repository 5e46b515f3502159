"""The engine: starts saga instances, drives them, and resumes them after a crash.

Everything the engine knows about an instance is a :class:`~sagakit.log.SagaState`
folded from its log, driven by a :class:`~sagakit.orchestration._driver.Driver`; so
resuming only has to rebuild the state from the store. An engine holds a lease on every
instance it drives and renews it while it works, so that other engines and workers sharing
the store leave the instance alone, and take it over if this process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagakit._retry import Retry
from sagakit.errors import (
    InvalidArgumentError,
    SagaDefinitionError,
    StoreUnavailableError,
    UnknownSagaError,
    UnregisteredSagaError,
)
from sagakit.log import Attention, Instance, Journal, Results, SagaState, SagaStatus
from sagakit.log._codec import encode
from sagakit.log._fast import RecordTypes, SagaStatuses, StepStatuses
from sagakit.log._records import TERMINAL
from sagakit.orchestration._definition import Saga
from sagakit.orchestration._driver import Driver
from sagakit.orchestration._lease import GONE, LagWatch, LeaseLost, after_lost_lease, held_until
from sagakit.orchestration._plan import Plan, log_fields, new_saga_id, same_start
from sagakit.orchestration._takeover import TakeoverNotes
from sagakit.store import ANY_INSTANCE, FirstCall, Store, StoredSaga, Watch
from sagakit.telemetry._switch import active as active_telemetry

if TYPE_CHECKING:
    from sagakit.telemetry._otel import Drive, Telemetry

logger = logging.getLogger("sagakit.orchestration")

DEFAULT_LEASE = 30.0
"""Seconds an engine holds an instance without renewing; renewed every third of it."""
PROGRESS_EVERY = 5.0
"""Seconds between the lines that say whose leases a resume is waiting for."""


@dataclass(slots=True)
class SagaResult:
    """What became of a saga instance (so far, if ``status`` is not terminal)."""

    saga_id: str
    name: str
    version: int
    status: SagaStatus
    results: Results
    """The recorded result of every step whose action succeeded."""
    reason: str | None = None
    """Why the saga compensated or needs attention."""
    failed_compensations: tuple[str, ...] = ()
    due_at: float | None = None
    """For an unfinished saga handed back to the store: when it is due again."""
    waiting_for: str | None = None
    """For an unfinished saga: the signal a step waits for (``ctx.wait_for``), if any."""
    retrying: str | None = None
    """For an unfinished saga: the step whose next attempt (or compensation's) is due."""
    lost_lease: str | None = None
    """Set when this engine stopped driving because its lease was gone: what became of the
    saga (``"lost the lease to host:pid:…; the new holder carries it on"``); the rest is
    the log as the store holds it."""

    @classmethod
    def of(cls, state: SagaState, due_at: float | None = None) -> SagaResult:
        signal = retrying = None
        if state.status not in TERMINAL:
            signal, retrying = _awaited(state)
        return cls(
            state.id,
            state.name,
            state.version,
            state.status,
            state.results,
            state.reason,
            tuple(state.failed_compensations),
            due_at,
            signal,
            retrying,
        )


def _awaited(state: SagaState) -> tuple[str | None, str | None]:
    """What an unfinished instance waits for: a signal (its name), or a retry (the step)."""
    for step in state.steps:
        if step.status is StepStatuses.WAITING and step.waiting is not None:
            return step.waiting["signal"], None
        if step.retry_at is not None:
            return None, step.name
    return None, None


@dataclass(frozen=True, slots=True)
class DriveReport:
    """How driving one instance ended: its result, or the error that stopped it."""

    saga_id: str
    result: SagaResult | None = None
    error: Exception | None = None


def default_owner() -> str:
    """``host:pid:random``: who holds a lease, readable by an operator."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Engine:
    """Runs and resumes instances of registered sagas against one :class:`Store`.

    ``hand_back=True`` (what workers use) ends a drive at every wait longer than a moment
    (a retry's back-off, a wait for a message) and leaves the due time to the store, so no
    coroutine and no worker is held; otherwise the engine waits in this process.

    ``max_attempts`` caps the retriable steps (after the pivot) whose policy has no limit:
    one that fails that often leaves its saga ``needs_attention``, where an operator sees
    it, instead of retrying for ever; ``Client.retry`` grants it as many again.
    """

    def __init__(
        self,
        store: Store,
        sagas: Iterable[Saga] = (),
        *,
        owner: str | None = None,
        lease: float = DEFAULT_LEASE,
        hand_back: bool = False,
        max_attempts: int | None = None,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise InvalidArgumentError(f"max_attempts must be at least 1, not {max_attempts}")
        self.store = store
        self.owner = owner or default_owner()
        self.lease = lease
        self.hand_back = hand_back
        self.max_attempts = max_attempts
        self._sagas: dict[tuple[str, int], Plan] = {}
        self.registered: list[Saga] = []
        self.known: set[str] = set()
        """The keys (``name@version``) of the sagas registered here: all it ever claims."""
        self._first_calls: dict[str, FirstCall] = {}
        self._retries: dict[tuple[str, int], tuple[Retry, ...]] = {}
        self._active: dict[str, list[asyncio.Future[SagaResult]]] = {}
        self._drivers: dict[str, Driver] = {}
        self._renewal: asyncio.TimerHandle | None = None
        self._renewing: set[asyncio.Task[None]] = set()
        self._lag = LagWatch(lease, self._drivers, self._sagas)
        self._late_calls: dict[str, asyncio.Future[Any]] = {}
        self._started_by = encode({"holder": self.owner})
        """What each ``*_started`` record made here carries (a ``CallStarted``)."""
        self._takeovers = TakeoverNotes()
        """Timed-out sync actions whose threads still run, shared by the drivers here."""
        self.unreleased: dict[str, float | None] = {}
        """Hand-backs that failed (the database was away): instance id to its due time, for
        :meth:`retry_hand_backs`."""
        self._telemetry = active_telemetry()
        """Spans and metrics (``sagakit.telemetry``); None without the OpenTelemetry API."""
        for saga in sagas:
            self.register(saga)

    def register(self, saga: Saga) -> None:
        """Make ``saga`` known, so instances of it can be resumed; re-registering is a no-op."""
        known = self._sagas.get((saga.name, saga.version))
        if known is not None:
            if known.saga is not saga:
                raise SagaDefinitionError(
                    saga.name, f"another definition is already registered as {saga.key}"
                )
            return
        if not saga.steps:
            raise SagaDefinitionError(saga.name, "a saga needs at least one step")
        plan = self._sagas[(saga.name, saga.version)] = Plan(saga)
        self.known.add(saga.key)
        first = plan.first_call(self._started_by)
        if first is not None:
            self._first_calls[saga.key] = first
        self.registered.append(saga)
        policies = tuple(step.retry_capped(self.max_attempts) for step in saga.steps)
        self._retries[(saga.name, saga.version)] = policies

    async def run(self, saga: Saga, input: Any = None, *, saga_id: str | None = None) -> SagaResult:
        """Start an instance and drive it to a terminal status (or, handing waits back,
        as far as it goes now).

        Starting is idempotent on ``saga_id``: if that instance exists already, nothing runs
        twice (a :class:`SagaIdConflictError` if it is of another saga or input); you get
        its outcome (awaited, if this engine is running it now), or, if it
        is unfinished and nobody here drives it, its state as it stands: :meth:`resume`
        is what carries on instances left by a crash.
        Raises :class:`SerializationError` if ``input`` is not JSON, recording nothing.
        """
        self.register(saga)
        plan = self._sagas[(saga.name, saga.version)]
        saga_id = saga_id or new_saga_id()
        if saga_id in self._active:
            return await self._join(saga_id)
        tel = self._telemetry
        if tel is not None and not tel.recording():  # asked once per saga: then skipped
            tel = None
        trace = None if tel is None else tel.start_trace(saga.name, saga_id)
        driver = self._driver(plan, plan.begin(saga_id, input, trace))
        return await self._track(saga_id, self._start(driver, tel))

    async def resume(
        self, *, wait: float = 0.0, report: Callable[[DriveReport], None] | None = None
    ) -> list[SagaResult]:
        """Carry on every unfinished instance nobody else holds, concurrently; their results.

        Instances whose holder stopped renewing (it died) are taken once the lease lapses;
        ``wait`` is how long to wait for such lapses, from now, saying every few seconds
        whose leases it waits for (an ``INFO`` record). One instance's error does not stop
        the others: with ``report`` every outcome is reported as it comes, errors
        included; without it the first error is raised once all are done.
        """
        deadline = time.time() + wait
        progress = LeaseProgress(self.owner)
        outcomes: list[DriveReport] = []

        async def one(claimed: StoredSaga) -> None:
            saga_id = claimed.instance.id
            try:
                outcome = DriveReport(saga_id, result=await self.drive_claimed(claimed))
            except Exception as error:
                outcome = DriveReport(saga_id, error=error)
            outcomes.append(outcome)
            if report is not None:
                report(outcome)

        async with self.store.watch(ANY_INSTANCE) as news:
            while True:
                claimed = await self.store.claim(
                    self.owner, 1_000, self.lease, due_only=False, known=self.known
                )
                if claimed:
                    await asyncio.gather(*(one(stored) for stored in claimed))
                    continue
                lapse = progress.next_lapse(self.ours(await self.store.unfinished()), deadline)
                if lapse is None:
                    break
                await progress.wait(news, lapse)
        errors = [o.error for o in outcomes if o.error is not None]
        if errors and report is None:
            raise errors[0]
        return [o.result for o in outcomes if o.result is not None]

    async def resume_saga(self, saga_id: str) -> SagaResult:
        """Carry on one instance from its log, if nobody else holds it; a terminal one, or
        one another engine holds, is returned as it stands."""
        if saga_id in self._active:
            return await self._join(saga_id)
        if not await self.store.acquire(self.owner, saga_id, self.lease):
            return SagaResult.of(await self.status(saga_id))
        stored = await self.store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        return await self.drive_claimed(stored)

    async def drive_claimed(self, claimed: StoredSaga) -> SagaResult:
        """Drive an instance this engine has just leased (by ``claim``, or ``acquire`` and
        ``load``), from its log as it was read then."""
        saga_id = claimed.instance.id
        if saga_id in self._active:
            return await self._join(saga_id)
        return await self._track(saga_id, self._resume(claimed))

    async def status(self, saga_id: str) -> SagaState:
        """The instance's state as its log tells it now."""
        stored = await self.store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        return SagaState.from_records(saga_id, stored.records)

    def first_calls(self) -> dict[str, FirstCall] | None:
        """The first calls a claim may record for the sagas registered here (see
        :class:`~sagakit.store.FirstCall`); None while telemetry is recorded, whose drive
        names its span in the ``*_started`` records it makes."""
        tel = self._telemetry
        if tel is not None and tel.recording():
            return None
        return self._first_calls

    def ours(self, rows: Iterable[Instance]) -> list[Instance]:
        """The rows of sagas registered here: the only ones this engine waits for."""
        return [row for row in rows if f"{row.name}@{row.version}" in self.known]

    def poke_all(self) -> int:
        """Tell every driver here to read its inbox at its next step boundary (a message
        came for one of them, or may have); returns how many were told."""
        for driver in self._drivers.values():
            driver.check_inbox = True
        return len(self._drivers)

    def poke(self, saga_id: str) -> None:
        """Tell the driver of ``saga_id`` (if it is here) that a message may have come."""
        driver = self._drivers.get(saga_id)
        if driver is not None:
            driver.check_inbox = True

    def _driver(self, plan: Plan, journal: Journal) -> Driver:
        key = (plan.saga.name, plan.saga.version)
        retries = self._retries[key]
        driver = Driver(self.store, plan, journal, self.hand_back, retries, self._late_calls)
        driver.started_by = self._started_by
        return driver

    async def _join(self, saga_id: str) -> SagaResult:
        """Wait for the outcome of an instance this engine is already driving."""
        waiter: asyncio.Future[SagaResult] = asyncio.get_running_loop().create_future()
        self._active[saga_id].append(waiter)
        return await waiter

    async def _track(self, saga_id: str, work: Awaitable[SagaResult]) -> SagaResult:
        """Run ``work`` as the one drive of ``saga_id`` here; hand the lease back after."""
        waiters: list[asyncio.Future[SagaResult]] = []
        self._active[saga_id] = waiters
        self.unreleased.pop(saga_id, None)  # leased here again: that hand-back is void
        if self._renewal is None:
            self._schedule_renewal()
        self._lag.start()
        try:
            result = await work
        except BaseException as error:
            for waiter in waiters:
                if not waiter.done():  # a joiner may have been cancelled
                    waiter.set_exception(error)
            await self._hand_back(saga_id, time.time())
            raise
        finally:
            del self._active[saga_id]
            ended = self._drivers.pop(saga_id, None)
            if ended is not None:
                self._lag.ended(ended.state)
        if result.status not in TERMINAL:
            await self._hand_back(saga_id, result.due_at)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)
        return result

    async def _hand_back(self, saga_id: str, due_at: float | None) -> None:
        """Release the lease so the instance is picked up when due; never masks an error.
        One that fails (the database is away) is kept for :meth:`retry_hand_backs`, so that
        the instance, due at once, does not wait out its lease."""
        try:
            await asyncio.shield(self.store.release(self.owner, saga_id, due_at))
        except Exception:
            self.unreleased[saga_id] = due_at

    async def retry_hand_backs(self) -> int:
        """Make the hand-backs that failed, oldest first, skipping an instance driven here
        again since; returns how many were made. :class:`StoreUnavailableError` is raised
        (the database is still away) and the rest are kept for the next call; a hand-back
        that fails otherwise is dropped, and that instance waits for its lease to lapse."""
        done = 0
        for saga_id, due_at in list(self.unreleased.items()):
            if saga_id not in self._active:
                try:
                    await self.store.release(self.owner, saga_id, due_at)
                except StoreUnavailableError:
                    raise
                except Exception as error:
                    logger.warning("saga %s: the hand-back failed again: %s", saga_id, error)
                else:
                    done += 1
            self.unreleased.pop(saga_id, None)
        return done

    def renew_now(self) -> None:
        """Renew the leases of what is driven here at once, not a third of a lease later:
        after the database was away, renewals may have failed, and the sooner the drivers
        know whether they still hold their leases, the better."""
        if self._renewal is not None:
            self._renewal.cancel()
        self._renewal_due()

    def _schedule_renewal(self) -> None:
        """Renew every third of a lease while anything is driven here (a timer, not a task,
        so an idle engine leaves nothing running)."""
        loop = asyncio.get_running_loop()
        self._renewal = loop.call_later(self.lease / 3, self._renewal_due)

    def _renewal_due(self) -> None:
        self._renewal = None
        if not self._active:
            return
        task = asyncio.get_running_loop().create_task(self._renew(list(self._active)))
        self._renewing.add(task)
        task.add_done_callback(self._renewing.discard)
        self._schedule_renewal()

    async def _renew(self, held: list[str]) -> None:
        """Keep the leases of the instances being driven here; tell their drivers to look at
        their inbox while at it, so a cancel reaches a busy saga within a renewal period.

        A driver learns when its lease now lapses, or that it is gone (the store no longer
        counts it as ours: another holder took it), and stops before its next write or call.
        """
        drivers = [(saga_id, self._drivers.get(saga_id)) for saga_id in held]
        asked = time.time()  # the store's new expiry counts from this moment or later
        with contextlib.suppress(Exception):  # a store hiccup: the next round retries
            kept = set(await self.store.renew(self.owner, held, self.lease))
            for saga_id, driver in drivers:
                if driver is not None:
                    driver.lease_until = asked + self.lease if saga_id in kept else GONE
        for driver in self._drivers.values():
            driver.check_inbox = True

    async def _start(self, driver: Driver, tel: Telemetry | None) -> SagaResult:
        """Create the instance, leased to us, with its first ``step_started``; drive it
        (``tel``: the telemetry it records to, None if nothing is recorded)."""
        if tel is not None:
            self._traced(driver, tel, False)
        first = driver.plan.saga.steps[0].name
        driver.journal.add(RecordTypes.STEP_STARTED, first, 1, driver.started_by)
        if not await driver.create(self.owner, self.lease):
            if driver.tel is not None:
                driver.tel.finish(driver.state)
            return await self._existing(driver.state)
        if tel is not None:
            tel.saga_started(driver.state.name, driver.state.version)
        return await self._drive(driver)

    def _traced(self, driver: Driver, tel: Telemetry, resumed: bool) -> None:
        """Begin the drive's span and timings; its ``*_started`` records name the span."""
        drive = driver.tel = tel.drive(driver.state, resumed)
        if drive is not None and drive.traceparent is not None:
            driver.started_by = encode({"holder": self.owner, "drive": drive.traceparent})

    async def _drive(self, driver: Driver) -> SagaResult:
        self._drivers[driver.state.id] = driver
        if driver.tel is not None:
            return await self._drive_traced(driver, driver.tel)
        try:
            due_at = await driver.drive()
        except LeaseLost:
            return await self._lost(driver)
        state = driver.state
        ended = state.status is SagaStatuses.COMPLETED or state.status is SagaStatuses.COMPENSATED
        if ended and logger.isEnabledFor(logging.INFO):  # the hot path builds no fields
            logger.info("saga %s %s", state.id, state.status.value, extra=driver.facts())
        return SagaResult.of(state, due_at)

    async def _drive_traced(self, driver: Driver, drive: Drive) -> SagaResult:
        try:
            due_at = await driver.drive()
        except LeaseLost as lost:
            drive.finish(driver.state, lost)
            return await self._lost(driver)
        except BaseException as error:
            drive.finish(driver.state, error)
            raise
        drive.finish(driver.state)
        state = driver.state
        ended = state.status is SagaStatuses.COMPLETED or state.status is SagaStatuses.COMPENSATED
        if ended and logger.isEnabledFor(logging.INFO):
            logger.info("saga %s %s", state.id, state.status.value, extra=driver.facts())
        return SagaResult.of(state, due_at)

    async def _existing(self, asked: SagaState) -> SagaResult:
        stored = await self.store.load(asked.id)
        if stored is None:  # pragma: no cover - create said it exists
            raise UnknownSagaError(asked.id)
        existing = SagaState.from_records(asked.id, stored.records)
        same_start(existing, asked)
        return SagaResult.of(existing)

    async def _lost(self, driver: Driver) -> SagaResult:
        """The drive stopped for a lost lease: the log as stored, saying what became of it.
        Handed back due at once, which changes nothing if another holder has it."""
        state, note = await after_lost_lease(self.store, driver.state, self.owner)
        result = SagaResult.of(state, None if state.status.is_terminal else time.time())
        result.lost_lease = note
        return result

    def _note_takeover(self, journal: Journal) -> None:
        """Record (before the call is made again: the drive's next flush writes it) that
        the call in flight was started by another holder, if it was."""
        taken = self._takeovers.record(journal.state, self.owner)
        if taken is not None:
            if self._telemetry is not None:
                self._telemetry.takeover(journal.state)
            started, payload = taken
            journal.add(RecordTypes.CALL_TAKEN_OVER, started.step, started.attempt, payload)

    async def _resume(self, stored: StoredSaga) -> SagaResult:
        instance, records = stored.instance, stored.records
        saga_id = instance.id
        registered = self._sagas.get((instance.name, instance.version))
        started = None
        if registered is not None and records and records[0].data is not None:
            started = registered.started_fields(records[0].data)  # None: as any reader does
        journal = Journal(SagaState.from_records(saga_id, records, started))
        state = journal.state
        if state.status in TERMINAL:
            return SagaResult.of(state)
        plan = self._sagas.get((state.name, state.version))
        if plan is None:  # never claimed as such; asked for by id: touch nothing
            known = sorted(self.known)
            raise UnregisteredSagaError(state.name, state.version, known)
        fits = started is not None and plan is registered  # it was started as registered
        reason = None if fits else _unfit(state, plan)
        if reason is not None:
            attention: Attention = {"reason": reason, "failed": []}
            journal.add(RecordTypes.SAGA_NEEDS_ATTENTION, data=encode(attention))
            await self.store.append(saga_id, journal.take(), state.status)
            if self._telemetry is not None:
                self._telemetry.saga_ended(state)
            logger.error(
                "saga %s needs attention: %s",
                *(saga_id, reason),
                extra=log_fields(saga_id, state.name, state.version),
            )
            return SagaResult.of(state)
        driver = self._driver(plan, journal)
        driver.lease_until = held_until(stored.instance.lease_expires, self.lease)
        tel = self._telemetry
        if tel is not None and tel.recording():
            self._traced(driver, tel, True)
        last = state.records[-1]
        if last.type is not RecordTypes.SAGA_STARTED and last.data != self._started_by:
            self._note_takeover(journal)  # a call in flight started by another holder
        driver.check_inbox = stored.last_message > state.last_message  # woken by a message?
        return await self._drive(driver)


def _unfit(state: SagaState, plan: Plan) -> str | None:
    """Why this engine must not drive the instance: the registered definition of its
    version has other steps than the instance was started with."""
    recorded = [(s.name, s.kind) for s in state.steps]
    registered = [(s["name"], s["kind"]) for s in plan.steps_meta]
    if recorded != registered:
        return (
            f"saga {plan.saga.key} was started with steps {recorded} but is registered with "
            f"{registered}: changing a definition needs a new version"
        )
    return None


class LeaseProgress:
    """Waiting for the leases others hold to lapse (a holder that died stops renewing),
    saying at most every :data:`PROGRESS_EVERY` seconds whose leases, and how long."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.held: dict[str, list[float]] = {}
        """Lease expiries by holder, as last read: those lapsing by the deadline."""
        self._say_at = 0.0

    def next_lapse(self, rows: Iterable[Instance], deadline: float) -> float | None:
        """When the first lease another holder has on ``rows`` lapses, if one lapses by
        ``deadline`` (a live holder renews past it, so it is not waited for)."""
        held: dict[str, list[float]] = {}
        for row in rows:
            holder, expires = row.lease_owner, row.lease_expires
            if holder is None or holder == self.owner or expires is None or expires > deadline:
                continue
            held.setdefault(holder, []).append(expires)
        self.held = held
        return min((min(expiries) for expiries in held.values()), default=None)

    async def wait(self, news: Watch, until: float) -> None:
        """Wait for ``until`` or news of due work, saying whose leases hold things up if
        it is time to; returns early, at the next line due, to say it."""
        now = time.time()
        if self.held and now >= self._say_at:
            self._say_at = now + PROGRESS_EVERY
            for holder, expiries in sorted(self.held.items()):
                left = max(math.ceil(max(expiries) - now), 0)
                logger.info(
                    "waiting %d s for the lease of %d saga(s) held by %s",
                    *(left, len(expiries), holder),
                    extra={"lease_owner": holder, "sagas": len(expiries), "seconds": left},
                )
        if self.held:
            until = min(until, self._say_at)
        await news.wait(max(until - now, 0.0))
