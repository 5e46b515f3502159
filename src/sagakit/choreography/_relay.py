"""The relay: publishes what services wrote to their outbox, in order, until the broker has it.

Rules it keeps, and why:

- Oldest first, and never an event before an earlier unsent one of the same correlation id:
  consumers of a saga see its events in the order they happened. Different sagas' events
  are published concurrently, so one slow saga does not hold up the others.
- A row is marked sent only after the broker confirmed it. A crash in between publishes it
  again after the restart; consumers' inboxes drop the duplicate.
- An event the broker refuses (too big for it, say) holds back only its own saga's later
  events: it is tried again after a back-off of its own, and every other saga's events
  keep leaving. After ``max_refusals`` refusals it becomes a dead letter of the outbox
  (``sagakit outbox``), its saga's later events still waiting behind it so that
  re-sending it keeps their order. Any other error counts as the broker being down, which
  never makes a dead letter.
- Several replicas of a service may relay one database: each pass claims whole chains
  (a saga's unsent events), and a chain claimed by one replica is skipped by the others.
- When the broker is down the events simply stay in the outbox: the relay backs off
  exponentially (bounded, with jitter), logs what it waits for and the broker's URL
  (without its password), and tries again, with one saga's events before the rest; it
  never spins. Once publishing works again it logs the backlog left, and when it has
  caught up.
- When the service's own database fails (the outbox cannot be read or marked), the relay
  waits the same way, for as long as it takes, saying once that it lost the database and
  once that it is back: an outage is one state, not a line a pass.
- A service calls :meth:`Relay.wake` after each commit so an event leaves at once; a
  database that can tell (PostgreSQL's ``LISTEN``) wakes it for other processes' commits
  too, and the poll finds whatever else is left (rows of a crash, a refusal now due).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sagakit._retry import Outage, Retry
from sagakit.bus import Broker
from sagakit.choreography._logging import event_fields, logger
from sagakit.choreography._outbox import LocalDatabase, OutboxClaim, Pending
from sagakit.errors import EventRejectedError, InvalidArgumentError

RELAY_RETRY = Retry(attempts=None, backoff=0.15, max_backoff=3.75, jitter=1 / 3)
"""Waits between passes while the broker fails, for ever: 0.1-0.2 s doubling to 2.5-5 s."""


@dataclass(frozen=True, slots=True)
class RelayPass:
    """What one pass over the outbox did.

    ``chains`` sagas' events were claimed, ``read`` events in all, and ``sent`` of them
    published. ``error`` is why the pass failed (the database, or the broker's connection),
    and ``failed`` the event it held back. ``refused`` counts the events the broker refused
    (each holding back its own saga only), ``dead`` those of them given up on.
    """

    chains: int
    read: int
    sent: int
    error: Exception | None = None
    failed: Pending | None = None
    refused: int = 0
    dead: int = 0


class Relay:
    """Publishes one database's outbox to ``broker``; run one per service process.

    ``batch`` sagas' events are claimed per pass, and up to ``in_flight`` sagas' events are
    published at once (a connection pool has a size: Redis's holds 100 connections by
    default); ``poll`` is how long an idle relay waits before looking again without being
    woken; an event the broker refuses ``max_refusals`` times becomes a dead letter.
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
        max_refusals: int = 5,
    ) -> None:
        if batch < 1 or in_flight < 1 or max_refusals < 1 or poll <= 0:
            raise InvalidArgumentError(
                "batch, in_flight and max_refusals must be at least 1, and poll positive"
            )
        self.db = db
        self.broker = broker
        self.name = name
        self.batch = batch
        self.poll = poll
        self.retry = retry
        self.max_refusals = max_refusals
        self.published = 0
        """Events this relay has published and marked sent."""
        self._wakeup = asyncio.Event()
        self._database = Outage(logger, name)  # says so; the back-off is the relay's own
        self._failing = False
        self._slots = asyncio.Semaphore(in_flight)

    def wake(self) -> None:
        """Something was just committed to the outbox: look now rather than at the poll."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set, backing off while the broker (or database) fails."""
        async with self.db.changes(self.wake):
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
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
            if outcome.chains < self.batch or outcome.sent == 0:  # all sent, or all held
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
        """One pass: claim up to ``batch`` sagas' events, publish them, and record which the
        broker took (marked sent) and which it refused."""
        claimed = 0
        try:
            async with self.db.claim(self.batch) as claim:
                claimed = len(claim.rows)
                outcome = await self._publish_claimed(claim)
        except Exception as error:  # the database; what was published goes again later
            return RelayPass(0, claimed, 0, error)
        self.published += outcome.sent
        return outcome

    async def _publish_claimed(self, claim: OutboxClaim) -> RelayPass:
        debug = logger.isEnabledFor(logging.DEBUG)  # asked once a pass, not once an event
        chains: dict[str, list[Pending]] = {}
        for row in claim.rows:
            chains.setdefault(row.correlation_id, []).append(row)
        queue = list(chains.values())
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
        await claim.sent(sent)
        dead = 0
        for row, error in refused:
            dead += await self._refused(claim, row, error)
        self._failing = outage is not None
        counts = (len(chains), len(claim.rows), len(sent))
        if outage is None:
            return RelayPass(*counts, refused=len(refused), dead=dead)
        return RelayPass(*counts, outage[1], outage[0], len(refused), dead)

    async def _refused(self, claim: OutboxClaim, row: Pending, error: Exception) -> bool:
        """The broker refused ``row``: try it again later, its saga's later events with it,
        or, refused too often, give it up as a dead letter; True if it was given up."""
        count = row.refusals + 1
        event = row.event
        what = f"{event.type} {event.id} of saga {event.correlation_id}"
        fields = {**self._fields(row), "attempt": count}
        if count >= self.max_refusals:
            await claim.refused(row.id, str(error), None)
            logger.error(
                "%s: the broker refused %s %d times: %s; it is now a dead letter of the "
                "outbox (sagakit outbox), and the saga's later events wait behind it",
                *(self.name, what, count, error),
                extra=fields,
            )
            return True
        delay = self.retry.delay(count)
        await claim.refused(row.id, str(error), time.time() + delay)
        logger.warning(
            "%s: the broker refused %s (refusal %d of %d): %s; the saga's later "
            "events wait, other sagas' go on; next try in %.1fs",
            *(self.name, what, count, self.max_refusals, error, delay),
            extra=fields,
        )
        return False

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
