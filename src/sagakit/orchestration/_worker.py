"""Workers: claim due saga instances from a shared store and drive them.

Run as many as you like, on as many machines, against one database: each claims instances
with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), renews it while it works, and hands
each instance back with its next due time when the saga waits (a back-off, a message), so
waiting holds no worker. A worker killed outright stops renewing; its instances become due
for the others when the leases lapse. There is no coordinator to lose.

A database that goes away (a restart, a failover) is waited for, not an exit: the worker
tries again with a jittered back-off, says once that it lost the database and once that it
is back, and meanwhile its drives go on as far as they can. A drive cut short by the outage
is handed back once the database answers, due at once, so that no saga waits out a lease;
then the worker renews its leases at once and gives back any it holds without driving (a
claim whose answer was lost). Only ``give_up_after`` seconds of outage, or a store error
that waiting cannot mend (bad credentials, a newer schema), end :meth:`Worker.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import Any

from sagakit._retry import Outage
from sagakit.errors import InvalidArgumentError, StoreUnavailableError
from sagakit.log import Instance
from sagakit.orchestration._background import Complaint, beside
from sagakit.orchestration._definition import Saga
from sagakit.orchestration._engine import (
    DEFAULT_LEASE,
    DriveReport,
    Engine,
    LeaseProgress,
    SagaResult,
)
from sagakit.orchestration._heartbeat import reporting
from sagakit.orchestration._plan import log_fields
from sagakit.store import ANY_INSTANCE, ANY_MESSAGE, Store, StoredSaga, Watch

logger = logging.getLogger("sagakit.orchestration")

Report = Callable[[DriveReport], None]


class Worker:
    """Drives up to ``concurrency`` instances at once, claiming more as slots free up."""

    def __init__(
        self,
        store: Store,
        sagas: Iterable[Saga],
        *,
        concurrency: int = 16,
        lease: float = DEFAULT_LEASE,
        poll: float = 1.0,
        owner: str | None = None,
        report: Report | None = None,
        max_attempts: int | None = None,
        queues: Collection[str] | None = None,
        give_up_after: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, not {concurrency}")
        if give_up_after is not None and not give_up_after > 0:
            raise InvalidArgumentError(f"give_up_after must be positive, not {give_up_after}")
        self.queues = frozenset(queues) if queues is not None else None
        served = on_queues(sagas, self.queues)
        self.engine = Engine(
            store, served, owner=owner, lease=lease, hand_back=True, max_attempts=max_attempts
        )
        self.concurrency = concurrency
        self.poll = poll
        self.report = report or (lambda outcome: None)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._held: set[str] = set()
        """The instances claimed here and not yet done with."""
        self.outage = Outage(logger, f"worker {self.owner}", give_up_after=give_up_after)

    @property
    def owner(self) -> str:
        return self.engine.owner

    async def run(self, stop: asyncio.Event, *, grace: float = 10.0) -> None:
        """Claim and drive until ``stop`` is set; then finish in-flight sagas for up to
        ``grace`` seconds and hand the rest back (a later claim repeats their calls with
        the same idempotency keys, as after a crash).

        While the database is away (:class:`StoreUnavailableError`) it waits, as the
        module says; after ``give_up_after`` seconds of that it raises the error.

        What exists when it starts (modules, sagas, the store's pool) lives about as long
        as the process, so it is frozen out of garbage collection (:func:`gc.freeze`): no
        collection walks it again while sagas come and go."""
        gc.freeze()
        try:
            engine = self.engine
            queues = self.queues or {s.queue for s in engine.registered}
            async with reporting(engine.store, self.owner, engine.known, queues):
                while not stop.is_set():
                    try:
                        await self._serve(stop)
                    except StoreUnavailableError as error:
                        await self._wait_out(error, stop)
        finally:
            await self._shutdown(grace)

    async def _serve(self, stop: asyncio.Event) -> None:
        """Claim and drive until ``stop``, or until the database goes away."""
        # Watch for news of due work before looking, so work created in between is not
        # missed until the next poll.
        async with hearing_messages(self.engine), self.engine.store.watch(ANY_INSTANCE) as news:
            while not stop.is_set():
                if self.outage.since is not None or self.engine.unreleased:
                    await self._recover()  # drives may see an outage this loop did not
                free = self.concurrency - len(self._tasks)
                claimed = await self._claim(free) if free > 0 else []
                for stored in claimed:
                    self._spawn(stored)
                if claimed and len(claimed) == free:
                    continue  # maybe more due work: claim again as soon as a slot frees
                await self._idle(stop, news)

    async def _wait_out(self, error: StoreUnavailableError, stop: asyncio.Event) -> None:
        """Wait a back-off before the next try (or until ``stop``); raise ``error`` once
        the outage has lasted ``give_up_after``."""
        delay = self.outage.failed(error)
        if delay is None:
            raise error
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def _recover(self) -> None:
        """The database answers again (after this loop, or only some drives, found it away):
        make the hand-backs that failed, renew the leases held here at once, and give back
        those held without a drive (a claim that committed but whose answer was lost), so
        that none of them waits for a lease to lapse."""
        engine = self.engine
        handed = await engine.retry_hand_backs()
        strays = [
            row.id
            for row in await engine.store.unfinished()
            if row.lease_owner == self.owner and row.id not in self._held
        ]
        for saga_id in strays:
            await engine.store.release(self.owner, saga_id, time.time())
        engine.renew_now()
        done = f"handed back {handed + len(strays)} saga(s); driving {len(self._held)}"
        if self.outage.back(done) is None:
            logger.info("worker %s: the database was away for some drives; %s", self.owner, done)

    async def _claim(self, limit: int) -> list[StoredSaga]:
        engine = self.engine
        return await engine.store.claim(
            self.owner, limit, engine.lease, known=engine.known, first_calls=engine.first_calls()
        )

    def _spawn(self, claimed: StoredSaga) -> None:
        task = asyncio.get_running_loop().create_task(self._drive(claimed))
        self._tasks.add(task)
        self._held.add(claimed.instance.id)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    async def _drive(self, claimed: StoredSaga) -> None:
        """Drive and report; a drive the database's going away cut short is not reported:
        the saga is handed back, and reported by whoever drives it next."""
        try:
            outcome = await drive_reported(self.engine, claimed)
        finally:
            self._held.discard(claimed.instance.id)
        if not isinstance(outcome.error, StoreUnavailableError):
            self.report(outcome)

    async def _idle(self, stop: asyncio.Event, news: Watch) -> None:
        """Wait for a reason to claim again: a freed slot when full, else news of due work
        from the store (or the poll, for what a store cannot announce); or stop."""
        self._slot_freed.clear()
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(news.wait(self.poll)),
        ]
        if len(self._tasks) >= self.concurrency:
            waits.append(asyncio.ensure_future(self._slot_freed.wait()))
        try:
            await asyncio.wait(waits, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _shutdown(self, grace: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in set(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def hearing_messages(engine: Engine) -> AsyncIterator[None]:
    """While in the block, every message sent to any saga makes the sagas driven here read
    their inboxes at their next step, so a cancel lands before the next step starts instead
    of at the next lease renewal."""
    async with engine.store.watch(ANY_MESSAGE) as inbox, beside(_hear(engine, inbox)):
        yield


async def _hear(engine: Engine, inbox: Watch) -> None:
    complaint = Complaint(logger, f"worker {engine.owner}: listening for messages")
    while True:
        try:
            await inbox.wait(HEARD_EVERY)
        except Exception as error:  # the store is away: renewals still read inboxes
            complaint.failed(error)
            await asyncio.sleep(HEARD_EVERY)  # a back-off, not a wait for something
            continue
        complaint.worked()
        told = engine.poke_all()
        if told:
            logger.info("a message came: %d saga(s) here read their inbox at their next step", told)


HEARD_EVERY = 30.0
"""Longest wait for news of a message before waiting again (a store's watch of the inbox
returns at a new message; this only bounds how long one wait lasts)."""


def on_queues(sagas: Iterable[Saga], queues: Collection[str] | None) -> list[Saga]:
    """The sagas a worker serving ``queues`` (None: all of them) registers; none is an error,
    since such a worker would idle for ever."""
    sagas = list(sagas)
    served = [s for s in sagas if queues is None or s.queue in queues]
    if sagas and not served:
        offered = ", ".join(sorted({s.queue for s in sagas}))
        raise InvalidArgumentError(
            f"no saga is on queue {', '.join(sorted(queues or ()))}: the sagas are on {offered}"
        )
    return served


async def drive_reported(engine: Engine, claimed: StoredSaga) -> DriveReport:
    """Drive a claimed instance; its trouble is logged and reported, never raised, so one
    saga cannot stop a worker or a pass."""
    try:
        result = await engine.drive_claimed(claimed)
    except StoreUnavailableError as error:  # the worker says so, once for every saga
        instance = claimed.instance
        logger.debug(
            "saga %s: the drive stopped, the database is away: %s",
            *(instance.id, error),
            extra=log_fields(instance.id, instance.name, instance.version),
        )
        return DriveReport(instance.id, error=error)
    except Exception as error:
        instance = claimed.instance
        logger.exception(
            "saga %s: the drive failed, its lease is handed back",
            instance.id,
            extra=log_fields(instance.id, instance.name, instance.version),
        )
        return DriveReport(instance.id, error=error)
    return DriveReport(claimed.instance.id, result=result)


DUE_SOON = 5.0
"""Seconds of short waits (a back-off) one pass of :func:`resume_all` sees a saga through,
from its first drive in the pass; a saga due later is left to the next worker."""


async def resume_all(
    store: Store,
    sagas: Iterable[Saga],
    *,
    lease: float = DEFAULT_LEASE,
    report: Report,
    concurrency: int = 16,
    max_attempts: int | None = None,
    soon: float = DUE_SOON,
    queues: Collection[str] | None = None,
) -> list[SagaResult]:
    """One pass over the log, then return: ``sagakit worker --once``, for after a crash.

    Takes every unfinished instance nobody holds and drives it as far as it goes now; one
    that would wait (a back-off, a ``wait_for``, a message) is handed back with its due
    time, and driven again in this pass only if that is within ``soon`` seconds. Leases
    others hold are waited for up to one ``lease`` (a dead holder's lapse), saying whose.
    Every drive is reported as it ends; returns each instance's outcome as the pass left
    it, the unfinished ones with what they wait for and until when. No lease is kept.
    With ``queues``, only the sagas on those queues are registered (see :class:`Worker`).
    """
    if concurrency < 1:
        raise InvalidArgumentError(f"concurrency must be at least 1, not {concurrency}")
    served = on_queues(sagas, queues)
    engine = Engine(store, served, lease=lease, hand_back=True, max_attempts=max_attempts)
    return await _Pass(engine, concurrency, soon, report).run()


class _Pass:
    """The state of one :func:`resume_all`: what it drove, when first, and what failed."""

    def __init__(self, engine: Engine, concurrency: int, soon: float, report: Report) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.soon = soon
        self.report = report
        self.started = time.time()
        self.first: dict[str, float] = {}
        """When each instance was first driven in this pass: its short waits count from then."""
        self.outcomes: dict[str, SagaResult] = {}
        self.failed: set[str] = set()
        """Instances whose drive raised: handed back due, but not driven again here."""

    async def run(self) -> list[SagaResult]:
        engine = self.engine
        store, owner = engine.store, engine.owner
        progress = LeaseProgress(owner)
        queues = {saga.queue for saga in engine.registered}
        # Watch before looking, so work made due in between wakes the wait.
        async with reporting(store, owner, engine.known, queues), store.watch(ANY_INSTANCE) as news:
            await self._sweep(engine.ours(await store.unfinished()))
            while True:
                limit = self.concurrency + len(self.failed)
                claimed = await store.claim(owner, limit, engine.lease, known=engine.known)
                fresh = [c for c in claimed if c.instance.id not in self.failed]
                for stale in (c for c in claimed if c.instance.id in self.failed):
                    await store.release(owner, stale.instance.id, time.time())
                if fresh:
                    await asyncio.gather(*(self._drive(stored) for stored in fresh))
                    continue
                rows = engine.ours(await store.unfinished())
                lapse = progress.next_lapse(rows, self.started + engine.lease)
                wakes = [t for t in (lapse, self._next_due(rows)) if t is not None]
                if not wakes:
                    return list(self.outcomes.values())
                await progress.wait(news, min(wakes))

    async def _sweep(self, rows: list[Instance]) -> None:
        """Drive, ``concurrency`` at a time, every unfinished instance nobody else holds."""
        store, owner, lease = self.engine.store, self.engine.owner, self.engine.lease
        now, slots = time.time(), asyncio.Semaphore(self.concurrency)

        async def one(saga_id: str) -> None:
            async with slots:
                if not await store.acquire(owner, saga_id, lease):
                    return  # someone took it meanwhile
                stored = await store.load(saga_id)
                if stored is not None:
                    await self._drive(stored)

        free = [r.id for r in rows if r.lease_owner is None or _lapsed(r, now)]
        await asyncio.gather(*(one(saga_id) for saga_id in free))

    async def _drive(self, claimed: StoredSaga) -> None:
        saga_id = claimed.instance.id
        self.first.setdefault(saga_id, time.time())
        outcome = await drive_reported(self.engine, claimed)
        if outcome.result is None:
            self.failed.add(saga_id)
            self.outcomes.pop(saga_id, None)
        else:
            self.outcomes[saga_id] = outcome.result
        self.report(outcome)

    def _next_due(self, rows: list[Instance]) -> float | None:
        """The soonest due time among instances nobody holds that this pass still sees to:
        each within ``soon`` of its first drive here (or of the pass's start)."""
        owner, due = self.engine.owner, []
        for row in rows:
            if row.due_at is None or row.id in self.failed:
                continue
            if row.lease_owner in (None, owner) and row.due_at <= self._horizon(row.id):
                due.append(row.due_at)
        return min(due, default=None)

    def _horizon(self, saga_id: str) -> float:
        return self.first.get(saga_id, self.started) + self.soon


def _lapsed(row: Instance, now: float) -> bool:
    return row.lease_expires is not None and row.lease_expires <= now
