"""Timing: drive a subject sequentially or with bounded concurrency, and summarise the runs.

Each scenario gets a warm-up, which also sizes the timed runs so each takes about the
target time whatever the machine or the engine's speed; the median of the timed runs is
the figure, and min-max shows how much to trust it.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

RunOne = Callable[[], Awaitable[bool]]


class Mode(StrEnum):
    SEQUENTIAL = "sequential"
    CONCURRENT = "concurrent"


@dataclass(frozen=True, slots=True)
class Run:
    """One timed batch of sagas."""

    sagas: int
    completed: int
    seconds: float
    peak: int
    """The most sagas in flight at once: 1 unless a saga suspends (on I/O)."""

    @property
    def rate(self) -> float:
        return self.sagas / self.seconds


async def timed(run_one: RunOne, mode: Mode, sagas: int, width: int) -> Run:
    """Run ``sagas`` sagas, all in this loop, and time the whole batch."""
    gc.collect()  # start each batch with the same heap, so one batch's garbage is not another's
    start = time.perf_counter()
    if mode is Mode.SEQUENTIAL:
        completed, peak = await _sequential(run_one, sagas), 1
    else:
        completed, peak = await _concurrent(run_one, sagas, width)
    return Run(sagas, completed, time.perf_counter() - start, peak)


async def _sequential(run_one: RunOne, sagas: int) -> int:
    completed = 0
    for _ in range(sagas):
        if await run_one():
            completed += 1
    return completed


async def _concurrent(run_one: RunOne, sagas: int, width: int) -> tuple[int, int]:
    """``width`` workers take sagas from one shared counter until ``sagas`` have run."""
    tickets = iter(range(sagas))
    completed = in_flight = peak = 0

    async def worker() -> None:
        nonlocal completed, in_flight, peak
        for _ in tickets:
            in_flight += 1
            peak = max(peak, in_flight)
            if await run_one():
                completed += 1
            in_flight -= 1

    await asyncio.gather(*(worker() for _ in range(min(width, sagas))))
    return completed, peak


def sized(warmup: Run, target_seconds: float, floor: int) -> int:
    """How many sagas a timed run needs to last about ``target_seconds`` (two digits)."""
    wanted = warmup.rate * target_seconds
    return max(floor, int(float(f"{wanted:.2g}")))


@dataclass(frozen=True, slots=True)
class Measurement:
    """A scenario's warm-up and timed runs, and what its saga log held afterwards."""

    scenario: str
    mode: Mode
    warmup: Run
    runs: tuple[Run, ...]
    logged: int | None
    """Completed sagas found whole in the log after the runs; None if there is no log."""

    @property
    def rates(self) -> list[float]:
        return [run.rate for run in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def sagas(self) -> int:
        """Every saga started, warm-up included (the log holds those too)."""
        return self.warmup.sagas + sum(run.sagas for run in self.runs)

    @property
    def completed(self) -> int:
        return self.warmup.completed + sum(run.completed for run in self.runs)

    @property
    def peak(self) -> int:
        return max(run.peak for run in self.runs)

    @property
    def ok(self) -> bool:
        """Every saga completed, and (if there is a log) every one is in it, whole."""
        return self.completed == self.sagas and self.logged in (None, self.sagas)
