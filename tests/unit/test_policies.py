"""Retry policies: validation, back-off arithmetic and which errors are retried."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sagakit import Retry
from sagakit._retry import COMPENSATION_RETRY, FOREVER, NO_RETRY


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"attempts": -3}, "attempts must be at least 1"),
        ({"backoff": -0.1}, "backoff >= 0"),
        ({"max_backoff": -1}, "max_backoff >= 0"),
        ({"multiplier": 0.5}, "multiplier >= 1"),
        ({"jitter": -0.01}, "jitter must be between 0 and 1"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Retry(**kwargs)


def test_boundary_values_are_accepted() -> None:
    Retry(attempts=1, backoff=0, max_backoff=0, multiplier=1, jitter=0)
    Retry(attempts=None, jitter=1)


def test_defaults() -> None:
    assert Retry().attempts == 1
    assert NO_RETRY.attempts == 1
    assert COMPENSATION_RETRY.attempts == 5
    assert FOREVER.attempts is None


def test_delay_is_exponential_without_jitter() -> None:
    policy = Retry(attempts=None, backoff=0.5, multiplier=2, max_backoff=1000, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_delay_with_multiplier_one_is_constant() -> None:
    policy = Retry(attempts=None, backoff=0.25, multiplier=1, jitter=0)
    assert {policy.delay(n) for n in range(1, 20)} == {0.25}


def test_delay_is_capped() -> None:
    policy = Retry(attempts=None, backoff=1, multiplier=3, max_backoff=10, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 3, 9, 10, 10]
    assert policy.delay(500) == 10  # no overflow trouble far out


def test_zero_backoff_means_no_delay_even_with_jitter() -> None:
    policy = Retry(attempts=None, backoff=0, jitter=1)
    assert [policy.delay(n) for n in range(1, 5)] == [0, 0, 0, 0]


def test_jitter_scatters_within_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Retry(attempts=None, backoff=2, multiplier=2, max_backoff=5, jitter=0.25)
    asked: list[tuple[float, float]] = []

    def extreme(low: float, high: float, pick: float) -> float:
        asked.append((low, high))
        return pick

    monkeypatch.setattr(random, "uniform", lambda a, b: extreme(a, b, a))
    assert policy.delay(1) == pytest.approx(2 * 0.75)
    assert policy.delay(3) == pytest.approx(5 * 0.75)  # capped first, then scattered
    monkeypatch.setattr(random, "uniform", lambda a, b: extreme(a, b, b))
    assert policy.delay(1) == pytest.approx(2 * 1.25)
    assert policy.delay(3) == pytest.approx(5 * 1.25)
    assert asked == [(-0.25, 0.25)] * 4


def test_jitter_samples_stay_in_bounds() -> None:
    policy = Retry(attempts=None, backoff=1, multiplier=2, max_backoff=60, jitter=0.1)
    for attempt in (1, 2, 3):
        base = 2 ** (attempt - 1)
        for _ in range(200):
            assert base * 0.9 <= policy.delay(attempt) <= base * 1.1


def test_allows_another_counts_attempts() -> None:
    policy = Retry(attempts=3)
    error = RuntimeError("x")
    assert [policy.allows_another(n, error) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert not Retry(attempts=1).allows_another(1, error)


def test_unlimited_attempts() -> None:
    assert Retry(attempts=None).allows_another(10_000, RuntimeError("x"))


def test_retry_on_filters_by_exception_type() -> None:
    policy = Retry(attempts=5, retry_on=(ConnectionError, TimeoutError))
    assert policy.allows_another(1, ConnectionError("down"))
    assert policy.allows_another(1, ConnectionRefusedError("refused"))  # a subclass
    assert policy.allows_another(1, TimeoutError())
    assert not policy.allows_another(1, ValueError("bad input"))
    assert not policy.allows_another(5, ConnectionError("down"))  # out of attempts anyway


def test_empty_retry_on_never_retries() -> None:
    assert not Retry(attempts=None, retry_on=()).allows_another(1, RuntimeError("x"))
