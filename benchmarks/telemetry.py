"""What OpenTelemetry costs the memory store's saga rate: three engines, run interleaved.

- *without telemetry*: ``sagakit.telemetry.disable()``, the code path an install without
  the ``otel`` extra takes (every hook skipped on one ``is None`` test);
- *API only*: ``opentelemetry-api`` installed, no SDK configured, so no provider: a drive
  costs two ``isinstance`` checks and records nothing;
- *SDK*: an SDK tracer provider whose span processor drops every span (so the spans are
  made, timed and attributed, then thrown away) and an SDK meter provider with a reader,
  so every counter and histogram aggregates.

Rounds alternate the three, so drift in the machine's speed touches all of them alike; the
figure is each one's median rate, and the ratio is over the median *without telemetry*.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
from dataclasses import dataclass

from benchmarks.measure import Mode, sized, timed
from benchmarks.subjects import OnEngine
from sagakit import MemoryStore, telemetry

TITLE = "Telemetry overhead (MemoryStore, sequential)"
OFF = "without telemetry"
API = "OpenTelemetry API only (no SDK configured)"
SDK = "SDK configured, spans dropped, metrics aggregated"
ROUNDS = 9
QUICK_ROUNDS = 2
WARMUP = 2_000
TARGET_SECONDS = 0.5
"""How long a run without telemetry lasts; every variant runs as many sagas."""


@dataclass(frozen=True, slots=True)
class Figure:
    variant: str
    sagas: int
    rates: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass(frozen=True, slots=True)
class TelemetryResults:
    figures: tuple[Figure, ...]
    rounds: int
    error: str | None = None
    ok: bool = True
    """Every saga completed, in every run."""


class Variants:
    """Makes a fresh engine, on a fresh MemoryStore, for a variant: each run starts from
    the same heap whatever ran before it (a store that kept every saga of earlier rounds
    would slow the garbage collector down for whoever came later)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SpanProcessor())  # the base one drops spans
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def engine(self, variant: str) -> OnEngine:
        """An engine made while telemetry was set up as ``variant`` needs (an engine takes
        the telemetry in force when it is made)."""
        try:
            if variant == OFF:
                telemetry.disable()
            elif variant == API:
                telemetry.configure()  # the global providers, which nothing here sets
            else:
                telemetry.configure(self.tracer_provider, self.meter_provider)
            return OnEngine(MemoryStore())
        finally:
            telemetry.enable()
            telemetry.configure()


async def run_telemetry(quick: bool = False) -> TelemetryResults:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    try:
        variants = Variants()
    except ImportError as missing:
        return TelemetryResults((), rounds, error=f"the OpenTelemetry SDK is missing ({missing})")
    names = (OFF, API, SDK)
    for name in names:  # warm every path (imports, caches) before anything is timed
        await timed(variants.engine(name).run_one, Mode.SEQUENTIAL, 50 if quick else WARMUP, 1)
    warmup = await timed(variants.engine(OFF).run_one, Mode.SEQUENTIAL, WARMUP, 1)
    sagas = 20 if quick else sized(warmup, TARGET_SECONDS, 100)
    rates: dict[str, list[float]] = {name: [] for name in names}
    ok = True
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            subject = variants.engine(name)
            run = await timed(subject.run_one, Mode.SEQUENTIAL, sagas, 1)
            ok = ok and run.completed == run.sagas
            rates[name].append(run.rate)
        _progress(f"telemetry round {number + 1}/{rounds}")
    figures = tuple(Figure(name, sagas, tuple(rates[name])) for name in names)
    return TelemetryResults(figures, rounds, ok=ok)


def markdown(results: TelemetryResults) -> str:
    lines = [f"## {TITLE}", ""]
    if results.error:
        return "\n".join([*lines, f"Not run: {results.error}", ""])
    lines += [
        "- Command: `.venv/bin/python -m benchmarks --only telemetry`",
        "- Method: the order saga of the results above on MemoryStore, one at a time, in one"
        f" process; {results.rounds} rounds, each running every variant once (in alternating"
        " order) on a fresh engine and store, the same number of sagas each (about"
        f" {TARGET_SECONDS:g} s without telemetry); the median rate of each, and its ratio over"
        " the median without telemetry",
        "",
        "| Variant | Sagas per run | Sagas/s (median) | Min\u2013max | \u00d7 without |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = next(f for f in results.figures if f.variant == OFF).median
    for figure in results.figures:
        cells = [
            figure.variant,
            f"{figure.sagas:,}",
            f"{figure.median:,.0f}",
            f"{min(figure.rates):,.0f}\u2013{max(figure.rates):,.0f}",
            f"{figure.median / base:.3f}\u00d7",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not results.ok:
        lines += ["", "> **FAILED**: some sagas did not complete."]
    costs = {f.variant: (1 / f.median - 1 / base) * 1e6 for f in results.figures}
    lines += [
        "",
        "*Without telemetry* is what an install without the `otel` extra runs: each hook is"
        " skipped on one `is None` test. Counted with callgrind (instructions per saga, which"
        " no other load on the machine disturbs), that is within 0.6 % of the code before the"
        " hooks existed; [Operations](operations.md#traces-and-metrics-opentelemetry) gives"
        " the figures. *API only* asks once per saga whether a provider is configured (two"
        f" module globals read): {costs[API]:+.1f} µs a saga in this run, whose runs spread"
        " wider than that; callgrind counts +0.6 % instructions over no API at all."
        " *SDK* is the price of recording, for sagas started outside any span (a"
        " `saga.start` root each), so five spans a saga with their attributes, and the"
        f" counters and duration histograms: {costs[SDK]:.0f} µs a saga whose steps do no"
        " work at all, a fraction of one call to a real service.",
        "",
    ]
    return "\n".join(lines)


def main(quick: bool = False) -> TelemetryResults:
    """The runs, with the engines' lag warnings silenced until the loop is gone: while one
    engine runs (MemoryStore never suspends) the others' lag watches say the loop is
    blocked, which here is the point, not a fault, and their timers still fire as the
    loop winds down."""
    quiet = logging.getLogger("sagakit.orchestration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return asyncio.run(run_telemetry(quick))
    finally:
        quiet.setLevel(level)


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)
