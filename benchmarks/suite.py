"""The benchmark suite: every scenario in one process and one event loop, then the report.

Running everything in one invocation keeps the ratios fair: the hand-written baseline and
sagakit see the same interpreter, the same machine state and the same disk.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.choreography import BrokerFigures, measure_choreography
from benchmarks.fsync import measure_ceiling
from benchmarks.measure import Measurement, Mode, sized, timed
from benchmarks.subjects import Subject, hand_written, on_memory, on_sqlite, straight_line

HAND_WRITTEN = "hand-written orchestrator"
MEMORY = "sagakit + MemoryStore"
FLOOR = "sagakit's data, no engine"
SQLITE = "sagakit + SQLite"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    mode: Mode
    warmup: int
    """Sagas in the warm-up at full scale: enough to warm caches and to size the runs."""
    make: Callable[[Path], Awaitable[Subject]]


SCENARIOS = (
    Scenario(HAND_WRITTEN, Mode.SEQUENTIAL, 20_000, hand_written),
    Scenario(MEMORY, Mode.SEQUENTIAL, 2_000, on_memory),
    Scenario(FLOOR, Mode.SEQUENTIAL, 2_000, straight_line),
    Scenario(SQLITE, Mode.SEQUENTIAL, 200, on_sqlite),
    Scenario(HAND_WRITTEN, Mode.CONCURRENT, 20_000, hand_written),
    Scenario(MEMORY, Mode.CONCURRENT, 2_000, on_memory),
    Scenario(FLOOR, Mode.CONCURRENT, 2_000, straight_line),
    Scenario(SQLITE, Mode.CONCURRENT, 1_000, on_sqlite),
)
CEILING_WARMUP = 200


@dataclass(frozen=True, slots=True)
class Settings:
    repetitions: int = 5
    target_seconds: float = 1.0
    """How long each timed run should last; the warm-up's rate sizes it."""
    warmup_scale: float = 1.0
    width: int = 100
    """Sagas in flight at most, in concurrent mode."""
    quick: bool = False

    def warmup(self, full: int) -> int:
        return max(10, int(full * self.warmup_scale))


FULL = Settings()
QUICK = Settings(repetitions=2, target_seconds=0.02, warmup_scale=0.02, quick=True)


@dataclass(frozen=True, slots=True)
class Results:
    """Everything one invocation measured, and the conditions it measured them under."""

    settings: Settings
    started: datetime
    measurements: tuple[Measurement, ...]
    ceiling: Measurement
    choreography: tuple[BrokerFigures, ...] = ()
    """Events per second through each broker, raw and through outbox and inbox."""

    @property
    def ok(self) -> bool:
        measured = self.ceiling.ok and all(m.ok for m in self.measurements)
        return measured and all(f.ok for f in self.choreography)


async def measure(scenario: Scenario, settings: Settings) -> Measurement:
    """Warm up, size, and time one scenario in a scratch directory removed afterwards."""
    floor = 2 * settings.width if scenario.mode is Mode.CONCURRENT else 10
    with tempfile.TemporaryDirectory(prefix="sagakit-bench-") as scratch:
        subject = await scenario.make(Path(scratch))
        try:
            warm = settings.warmup(scenario.warmup)
            warmup = await timed(subject.run_one, scenario.mode, warm, settings.width)
            sagas = sized(warmup, settings.target_seconds, floor)
            _progress(f"{scenario.name}, {scenario.mode}: {settings.repetitions} x {sagas:,} sagas")
            runs = []
            for _ in range(settings.repetitions):
                runs.append(await timed(subject.run_one, scenario.mode, sagas, settings.width))
        except BaseException:
            await subject.close()
            raise
        logged = await subject.close()
    return Measurement(scenario.name, scenario.mode, warmup, tuple(runs), logged)


def measure_fsync(settings: Settings) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="sagakit-bench-") as scratch:
        ceiling = measure_ceiling(
            Path(scratch) / "fsync.db",
            settings.warmup(CEILING_WARMUP),
            settings.repetitions,
            settings.target_seconds,
        )
    _progress(f"fsync ceiling: {settings.repetitions} x {ceiling.runs[0].sagas:,} commits")
    return ceiling


async def run_suite(settings: Settings) -> Results:
    started = datetime.now(UTC)
    ceiling = measure_fsync(settings)
    measurements = [await measure(scenario, settings) for scenario in SCENARIOS]
    choreography = await measure_choreography(settings)
    return Results(settings, started, tuple(measurements), ceiling, choreography)


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)
