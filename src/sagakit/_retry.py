"""How often and how patiently a step or compensation is tried again."""

from __future__ import annotations

import random
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
