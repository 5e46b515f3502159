"""Workers: claim due saga instances from a shared store and drive them.

Run as many as you like, on as many machines, against one database: each claims instances
with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), renews it while it works, and hands
each instance back with its next due time when the saga waits (a back-off, a message), so
waiting holds no worker. A worker killed outright stops renewing; its instances become due
for the others when the leases lapse. There is no coordinator to lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from sagakit.errors import InvalidArgumentError
from sagakit.orchestration._definition import Saga
from sagakit.orchestration._engine import DEFAULT_LEASE, DriveReport, Engine
from sagakit.orchestration._plan import log_fields
from sagakit.store import ANY_INSTANCE, Store, StoredSaga, Watch

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
    ) -> None:
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, not {concurrency}")
        self.engine = Engine(store, sagas, owner=owner, lease=lease, hand_back=True)
        self.concurrency = concurrency
        self.poll = poll
        self.report = report or (lambda outcome: None)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    @property
    def owner(self) -> str:
        return self.engine.owner

    async def run(self, stop: asyncio.Event, *, grace: float = 10.0) -> None:
        """Claim and drive until ``stop`` is set; then finish in-flight sagas for up to
        ``grace`` seconds and hand the rest back (a later claim repeats their calls with
        the same idempotency keys, as after a crash)."""
        try:
            # Watch for news of due work before looking, so work created in between is not
            # missed until the next poll.
            async with self.engine.store.watch(ANY_INSTANCE) as news:
                while not stop.is_set():
                    free = self.concurrency - len(self._tasks)
                    claimed = await self._claim(free) if free > 0 else []
                    for stored in claimed:
                        self._spawn(stored)
                    if claimed and len(claimed) == free:
                        continue  # maybe more due work: claim again as soon as a slot frees
                    await self._idle(stop, news)
        finally:
            await self._shutdown(grace)

    async def _claim(self, limit: int) -> list[StoredSaga]:
        store = self.engine.store
        return await store.claim(self.owner, limit, self.engine.lease)

    def _spawn(self, claimed: StoredSaga) -> None:
        task = asyncio.get_running_loop().create_task(self._drive(claimed))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    async def _drive(self, claimed: StoredSaga) -> None:
        try:
            result = await self.engine.drive_claimed(claimed)
        except Exception as error:  # one saga's trouble must not stop the worker
            instance = claimed.instance
            logger.exception(
                "saga %s: the drive failed, its lease is handed back",
                instance.id,
                extra=log_fields(instance.id, instance.name, instance.version),
            )
            self.report(DriveReport(instance.id, error=error))
        else:
            self.report(DriveReport(claimed.instance.id, result=result))

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


async def resume_all(
    store: Store, sagas: Iterable[Saga], *, lease: float = DEFAULT_LEASE, report: Report
) -> None:
    """Drive every unfinished instance nobody holds to its end, waiting up to one ``lease``
    for the leases of dead holders to lapse: ``sagakit worker --once``, for after a crash."""
    await Engine(store, sagas, lease=lease).resume(wait=lease, report=report)
