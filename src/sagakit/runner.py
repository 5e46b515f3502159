"""Keep resuming a store's unfinished sagas: the loop behind ``sagakit worker``.

Each poll asks the store for unfinished instances and starts resuming those not already in
hand, without waiting for the ones already running (one saga sleeping through a long retry
back-off must not hold up the others). It is a single-process worker: it takes no leases,
so run one per database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from sagakit.engine import Engine, SagaResult


@dataclass(frozen=True, slots=True)
class Outcome:
    """How resuming one instance ended: its result, or the error that stopped it."""

    saga_id: str
    result: SagaResult | None = None
    error: Exception | None = None


class Runner:
    """Resumes unfinished instances with ``engine``, reporting each outcome as it comes."""

    def __init__(self, engine: Engine, report: Callable[[Outcome], None]) -> None:
        self.engine = engine
        self.report = report
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def poll(self) -> int:
        """Start resuming every unfinished instance not already in hand; how many started."""
        started = 0
        for instance in await self.engine.store.unfinished():
            if instance.id not in self._tasks:
                self._tasks[instance.id] = asyncio.create_task(self._resume(instance.id))
                started += 1
        return started

    async def _resume(self, saga_id: str) -> None:
        try:
            result = await self.engine.resume_saga(saga_id)
        except Exception as error:
            self.report(Outcome(saga_id, error=error))
        else:
            self.report(Outcome(saga_id, result=result))
        finally:
            del self._tasks[saga_id]

    async def drain(self) -> None:
        """Wait until every instance in hand has finished (or stopped with an error)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values())

    async def cancel(self) -> None:
        """Stop resuming: in-flight calls are abandoned as a crash would abandon them.

        That is safe by design: the log says which calls had started, and the next resume
        repeats them with the same idempotency keys.
        """
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_once(self, stop: asyncio.Event) -> None:
        """Resume what is unfinished now and wait for it, unless ``stop`` is set first."""
        await self.poll()
        drained = asyncio.create_task(self.drain())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({drained, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            stopped.cancel()
            await self.cancel()
            await asyncio.gather(drained, stopped, return_exceptions=True)

    async def run_forever(self, stop: asyncio.Event, interval: float) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set, then cancel what is left."""
        try:
            while not stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self.cancel()
