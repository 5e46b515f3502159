"""The relay: publishes what services wrote to their outbox, in order, until the broker has it.

Rules it keeps, and why:

- Oldest first, and never an event before an earlier unsent one of the same correlation id:
  consumers of a saga see its events in the order they happened. Different sagas' events
  are published concurrently, so one slow saga does not hold up the others.
- A row is marked sent only after the broker confirmed it. A crash in between publishes it
  again after the restart; consumers' inboxes drop the duplicate.
- When the broker is down the events simply stay in the outbox: the relay backs off
  exponentially (bounded, with jitter), logs what it waits for and the broker's URL, and
  tries again, with one saga's events before the rest; it never spins.
- A service calls :meth:`Relay.wake` after each commit so an event leaves at once; the
  poll finds rows written by other processes or left by a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sagakit._retry import Retry
from sagakit.bus import Broker
from sagakit.choreography._outbox import LocalDatabase, Pending
from sagakit.errors import InvalidArgumentError

logger = logging.getLogger("sagakit.relay")

RELAY_RETRY = Retry(attempts=None, backoff=0.15, max_backoff=3.75, jitter=1 / 3)
"""Waits between passes while the broker fails, for ever: 0.1-0.2 s doubling to 2.5-5 s."""


@dataclass(frozen=True, slots=True)
class RelayPass:
    """What one pass over the outbox did."""

    read: int
    sent: int
    error: Exception | None = None


class Relay:
    """Publishes one database's outbox to ``broker``; run one per service process.

    ``batch`` rows are read per pass, and up to ``in_flight`` sagas' events are published at
    once (a connection pool has a size: Redis's holds 100 connections by default); ``poll``
    is how long an idle relay waits before looking again without being woken.
    """

    def __init__(
        self,
        db: LocalDatabase,
        broker: Broker,
        *,
        name: str = "relay",
        batch: int = 500,
        in_flight: int = 32,
        poll: float = 0.5,
        retry: Retry = RELAY_RETRY,
    ) -> None:
        if batch < 1 or in_flight < 1 or poll <= 0:
            raise InvalidArgumentError("batch and in_flight must be at least 1, and poll positive")
        self.db = db
        self.broker = broker
        self.name = name
        self.batch = batch
        self.poll = poll
        self.retry = retry
        self.published = 0
        """Events this relay has published and marked sent."""
        self._wakeup = asyncio.Event()
        self._failing = False
        self._slots = asyncio.Semaphore(in_flight)

    def wake(self) -> None:
        """Something was just committed to the outbox: look now rather than at the poll."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set, backing off while the broker (or database) fails."""
        failures = 0
        while not stop.is_set():
            self._wakeup.clear()  # a wake during the pass below makes the next one start at once
            outcome = await self.publish_pending()
            if outcome.error is not None:
                failures += 1
                delay = self.retry.delay(failures)
                logger.warning(
                    "%s: %d event(s) wait in the outbox: %s; next try in %.1fs",
                    self.name,
                    outcome.read - outcome.sent,
                    outcome.error,
                    delay,
                )
                await _first_of([stop], delay)  # a wake must not cut a back-off short
                continue
            if failures:
                logger.info("%s: publishing again after %d failed pass(es)", self.name, failures)
            failures = 0
            if outcome.read < self.batch:
                await _first_of([stop, self._wakeup], self.poll)

    async def publish_pending(self) -> RelayPass:
        """One pass: publish up to ``batch`` unsent events and mark those the broker took."""
        try:
            pending = await self.db.unsent(self.batch)
        except Exception as error:
            return RelayPass(0, 0, error)
        chains: dict[str, list[Pending]] = {}
        for row in pending:
            chains.setdefault(row.correlation_id, []).append(row)
        queue = list(chains.values())
        outcomes = []
        if self._failing and queue:  # probe with one saga before the crowd hits the broker
            outcomes.append(await self._publish_chain(queue.pop(0)))
            if outcomes[0][1] is not None:
                queue = []
        outcomes += await asyncio.gather(*(self._publish_chain(chain) for chain in queue))
        sent = [row_id for ids, _ in outcomes for row_id in ids]
        errors = [error for _, error in outcomes if error is not None]
        try:
            await self.db.mark_sent(sent)
        except Exception as error:  # published but not marked: published again later
            return RelayPass(len(pending), 0, error)
        self.published += len(sent)
        self._failing = bool(errors)
        return RelayPass(len(pending), len(sent), errors[0] if errors else None)

    async def _publish_chain(self, chain: Iterable[Pending]) -> tuple[list[int], Exception | None]:
        """Publish one correlation id's events in order, stopping at the first failure."""
        sent: list[int] = []
        async with self._slots:
            for row in chain:
                try:
                    await self.broker.publish(row.stream, row.event)
                except Exception as error:  # the rest of this chain must wait for it
                    return sent, error
                sent.append(row.id)
        return sent, None


async def _first_of(events: list[asyncio.Event], timeout: float) -> None:
    """Wait until any of ``events`` is set, or ``timeout`` seconds pass."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
