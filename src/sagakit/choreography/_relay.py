"""The relay: publishes what services wrote to their outbox, in order, until the broker has it.

Rules it keeps, and why:

- Oldest first, and never an event before an earlier unsent one of the same correlation id:
  consumers of a saga see its events in the order they happened. Different sagas' events
  are published concurrently, so one slow saga does not hold up the others.
- A row is marked sent only after the broker confirmed it. A crash in between publishes it
  again after the restart; consumers' inboxes drop the duplicate.
- An event the broker refuses (too big for it, say) holds back only its own saga's later
  events: it is tried again after a back-off of its own, and every other saga's events
  keep leaving. Any other error counts as the broker being down.
- When the broker is down the events simply stay in the outbox: the relay backs off
  exponentially (bounded, with jitter), logs what it waits for and the broker's URL
  (without its password), and tries again, with one saga's events before the rest; it
  never spins. Once publishing works again it logs the backlog left, and when it has
  caught up.
- When the service's own database fails (the outbox cannot be read or marked), the relay
  waits the same way, for as long as it takes, saying once that it lost the database and
  once that it is back: an outage is one state, not a line a pass.
- A service calls :meth:`Relay.wake` after each commit so an event leaves at once; the
  poll finds rows written by other processes or left by a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sagakit._retry import Outage, Retry
from sagakit.bus import Broker
from sagakit.choreography._logging import event_fields, logger
from sagakit.choreography._outbox import LocalDatabase, Pending
from sagakit.errors import EventRejectedError, InvalidArgumentError

RELAY_RETRY = Retry(attempts=None, backoff=0.15, max_backoff=3.75, jitter=1 / 3)
"""Waits between passes while the broker fails, for ever: 0.1-0.2 s doubling to 2.5-5 s."""


@dataclass(frozen=True, slots=True)
class RelayPass:
    """What one pass over the outbox did.

    ``error`` is why the pass failed (the database, or the broker's connection), and
    ``failed`` the event it held back. ``refused`` counts the events the broker refused
    (each holding back its own saga only), and ``held`` the sagas left waiting behind one.
    """

    read: int
    sent: int
    error: Exception | None = None
    failed: Pending | None = None
    refused: int = 0
    held: int = 0


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
        self._database = Outage(logger, name)  # says so; the back-off is the relay's own
        self._failing = False
        self._slots = asyncio.Semaphore(in_flight)
        self._refusals: dict[int, tuple[int, float]] = {}  # row id: (refusals, retry at)

    def wake(self) -> None:
        """Something was just committed to the outbox: look now rather than at the poll."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set, backing off while the broker (or database) fails."""
        failures = 0
        catching_up = False
        while not stop.is_set():
            self._wakeup.clear()  # a wake during the pass below makes the next one start at once
            outcome = await self.publish_pending()
            if outcome.error is not None:
                failures += 1
                delay = self.retry.delay(failures)
                if outcome.failed is None:  # the database failed, not the broker
                    self._database.failed(outcome.error)
                else:
                    self._log_failure(outcome, failures, delay)
                await _first_of([stop], delay)  # a wake must not cut a back-off short
                continue
            self._database.back()
            if failures:
                catching_up = await self._log_recovery(failures)
            failures = 0
            if outcome.read < self.batch or outcome.sent == 0:  # all sent, or all held
                if catching_up:
                    logger.info("%s: caught up with the outbox", self.name, extra=self._fields())
                    catching_up = False
                await _first_of([stop, self._wakeup], self.poll)

    def _log_failure(self, outcome: RelayPass, failures: int, delay: float) -> None:
        """A pass that failed: what waits, why, and when it is tried again (a broker's error
        names its URL, without the password)."""
        fields = self._fields(outcome.failed)
        fields["attempt"] = failures
        held = ""
        if outcome.failed is not None:
            event = outcome.failed.event
            held = f" ({event.type} {event.id} of saga {event.correlation_id} first)"
        logger.warning(
            "%s: %d event(s) wait in the outbox%s: attempt %d failed: %s; next try in %.1fs",
            *(self.name, outcome.read - outcome.sent, held, failures, outcome.error, delay),
            extra=fields,
        )

    async def _log_recovery(self, failures: int) -> bool:
        """Publishing works again: say so, with the backlog left; True if there is one."""
        try:
            backlog = await self.db.backlog()
        except Exception as error:  # only a log line depends on it
            backlog, left = -1, f"backlog unknown ({error!r})"
        else:
            left = f"{backlog} event(s) left in the outbox"
        logger.info(
            "%s: publishing again after %d failed pass(es); %s",
            *(self.name, failures, left),
            extra=self._fields(),
        )
        return backlog != 0

    def _fields(self, row: Pending | None = None) -> dict[str, Any]:
        if row is None:
            return {"service": self.name}
        return event_fields(row.event, row.stream, self.name)

    async def publish_pending(self) -> RelayPass:
        """One pass: publish up to ``batch`` unsent events and mark those the broker took."""
        try:
            pending = await self.db.unsent(self.batch)
        except Exception as error:
            return RelayPass(0, 0, error)
        debug = logger.isEnabledFor(logging.DEBUG)  # asked once a pass, not once an event
        chains: dict[str, list[Pending]] = {}
        for row in pending:
            chains.setdefault(row.correlation_id, []).append(row)
        queue = [chain for chain in chains.values() if self._due(chain[0])]
        held = len(chains) - len(queue)
        outcomes = []
        if self._failing and queue:  # probe with one saga before the crowd hits the broker
            outcomes.append(await self._publish_chain(queue.pop(0), debug))
            if _outage(outcomes[0][1]):
                queue = []
        outcomes += await asyncio.gather(*(self._publish_chain(chain, debug) for chain in queue))
        sent = [row_id for ids, _ in outcomes for row_id in ids]
        failures = [failure for _, failure in outcomes if failure is not None]
        outage = next((failure for failure in failures if _outage(failure)), None)
        refused = [failure for failure in failures if not _outage(failure)]
        try:
            await self.db.mark_sent(sent)
        except Exception as error:  # published but not marked: published again later
            return RelayPass(len(pending), 0, error)
        self.published += len(sent)
        self._failing = outage is not None
        for row_id in sent:
            self._refusals.pop(row_id, None)
        for row, refusal in refused:
            self._refused(row, refusal)
        held += len(refused)
        if outage is None:
            return RelayPass(len(pending), len(sent), refused=len(refused), held=held)
        return RelayPass(len(pending), len(sent), outage[1], outage[0], len(refused), held)

    def _due(self, head: Pending) -> bool:
        """False while ``head``, refused by the broker, waits out its back-off."""
        refusal = self._refusals.get(head.id)
        return refusal is None or refusal[1] <= asyncio.get_running_loop().time()

    def _refused(self, row: Pending, error: Exception) -> None:
        """The broker refused ``row``: try it again later, its saga's later events with it."""
        count = self._refusals.get(row.id, (0, 0.0))[0] + 1
        delay = self.retry.delay(count)
        self._refusals[row.id] = (count, asyncio.get_running_loop().time() + delay)
        event = row.event
        logger.warning(
            "%s: the broker refused %s %s of saga %s (refusal %d): %s; the saga's later "
            "events wait, other sagas' go on; next try in %.1fs",
            *(self.name, event.type, event.id, event.correlation_id, count, error, delay),
            extra={**self._fields(row), "attempt": count},
        )

    async def _publish_chain(
        self, chain: Iterable[Pending], debug: bool = False
    ) -> tuple[list[int], tuple[Pending, Exception] | None]:
        """Publish one correlation id's events in order, stopping at the first failure
        (returned with the row it held back)."""
        sent: list[int] = []
        async with self._slots:
            for row in chain:
                try:
                    await self.broker.publish(row.stream, row.event)
                except Exception as error:  # the rest of this chain must wait for it
                    return sent, (row, error)
                sent.append(row.id)
                if debug:
                    self._log_published(row)
        return sent, None

    def _log_published(self, row: Pending) -> None:
        event = row.event
        logger.debug(
            "%s: published %s %s of saga %s to %s",
            *(self.name, event.type, event.id, event.correlation_id, row.stream),
            extra=self._fields(row),
        )


def _outage(failure: tuple[Pending, Exception] | None) -> bool:
    """True if ``failure`` is the broker failing, not it refusing one event."""
    return failure is not None and not isinstance(failure[1], EventRejectedError)


async def _first_of(events: list[asyncio.Event], timeout: float) -> None:
    """Wait until any of ``events`` is set, or ``timeout`` seconds pass."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
