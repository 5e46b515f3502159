"""How often and how patiently a step or compensation is tried again; and how a process
waits for a database that went away (:class:`Outage`)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from sagakit.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry policy: ``attempts`` in all (``None`` for no limit), exponential back-off.

    The n-th retry waits ``backoff * multiplier**(n-1)`` seconds, capped at ``max_backoff``,
    then scattered by up to ``jitter`` of itself either way so that many sagas failing
    together do not retry together. Only exceptions that are instances of ``retry_on`` are
    retried; any other ends the step at once.
    """

    attempts: int | None = 1
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 60.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise InvalidArgumentError(
                f"Retry.attempts must be at least 1 or None, not {self.attempts}"
            )
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise InvalidArgumentError(
                "Retry needs backoff >= 0, max_backoff >= 0 and multiplier >= 1"
            )
        if not 0 <= self.jitter <= 1:
            raise InvalidArgumentError(f"Retry.jitter must be between 0 and 1, not {self.jitter}")

    def allows_another(self, attempt: int, error: BaseException) -> bool:
        """After ``attempt`` (1-based) failed with ``error``, may we try again?"""
        if self.attempts is not None and attempt >= self.attempts:
            return False
        return isinstance(error, self.retry_on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.backoff * self.multiplier ** (attempt - 1), self.max_backoff)
        if self.jitter and base:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return base


NO_RETRY = Retry(attempts=1)
"""Default for compensatable and pivot actions: a failure compensates at once."""

COMPENSATION_RETRY = Retry(attempts=5, backoff=0.2, max_backoff=30.0)
"""Default for compensations: an undo deserves a few more tries before a human is asked."""

FOREVER = Retry(attempts=None, backoff=0.2, max_backoff=60.0)
"""Default for retriable steps, which by definition are retried until they succeed."""


RECONNECT = Retry(attempts=None, backoff=0.1, max_backoff=5.0, jitter=0.5)
"""Waits between tries to reach a database that went away, for ever: 0.05-0.15 s at first,
doubling to 2.5-7.5 s. A restart of a few seconds is noticed within a fraction of one, a long
outage costs a try every few seconds, and the jitter keeps a fleet from knocking in step."""


class Outage:
    """One process's view of its database going away and coming back.

    Between tries it waits a jittered back-off (:data:`RECONNECT`); it says so once when the
    database is lost and once when it is back, never once a try; and with ``give_up_after``
    it tells its caller when to stop waiting. ``who`` starts each line (``worker h:1:ab``).
    """

    def __init__(
        self,
        log: logging.Logger,
        who: str,
        *,
        give_up_after: float | None = None,
        retry: Retry = RECONNECT,
    ) -> None:
        self.log = log
        self.who = who
        self.give_up_after = give_up_after
        self.retry = retry
        self.since: float | None = None
        """When (``time.monotonic``) the database was lost; None while it answers."""
        self._tries = 0

    def failed(self, error: BaseException) -> float | None:
        """Count a failed try; the seconds to wait before the next, or None once the outage
        has lasted ``give_up_after`` (the caller stops, with ``error``)."""
        now = time.monotonic()
        if self.since is None:
            self.since, self._tries = now, 0
            self.log.warning("%s: lost the database: %s; retrying", self.who, error)
        self._tries += 1
        gone = now - self.since
        if self.give_up_after is not None and gone >= self.give_up_after:
            self.log.error(
                "%s: gave up on the database after %.1f s: %s",
                *(self.who, gone, error),
                extra={"seconds": round(gone, 1), "tries": self._tries},
            )
            return None
        delay = self.retry.delay(self._tries)
        if self.give_up_after is not None:
            delay = min(delay, self.give_up_after - gone)
        self.log.debug("%s: try %d failed: %s", self.who, self._tries, error)
        return delay

    def back(self, done: str = "") -> float | None:
        """The database answered: say after how long, if it had been lost (and ``done``,
        what the caller did about it), and return that (None if it had not)."""
        if self.since is None:
            return None
        gone, self.since = time.monotonic() - self.since, None
        self.log.info(
            "%s: database back after %.1f s%s",
            *(self.who, gone, f"; {done}" if done else ""),
            extra={"seconds": round(gone, 1), "tries": self._tries},
        )
        return gone
