"""The baseline comparison pools the runs of a fleet measured twice (A B B A), so its ratio
is the medians of all runs on each side, and a saga missing from either measurement still
fails the pooled one."""

from __future__ import annotations

import pytest
from benchmarks.measure import Measurement, Mode, Run
from benchmarks.pg_db import CpuUse
from benchmarks.pg_fleet import WorkerSummary
from benchmarks.pg_report import cpu_per_saga
from benchmarks.postgres import SagaPath, Throughput


def _fleet(
    sizes: list[int], seconds: list[float], cpu: list[float], logged_short: int = 0
) -> Throughput:
    warmup = Run(100, 100, 1.0, 256)
    runs = tuple(Run(n, n, s, 256) for n, s in zip(sizes, seconds, strict=True))
    total = warmup.sagas + sum(sizes)
    measurement = Measurement("fleet", Mode.CONCURRENT, warmup, runs, total - logged_short)
    uses = tuple(
        CpuUse(s, server=c, workers=c, bench=0.0) for s, c in zip(seconds, cpu, strict=True)
    )
    summary = WorkerSummary(statuses={"completed": total})
    return Throughput(4, 64, SagaPath.SUCCESS, measurement, (0.1,) * len(sizes), uses, (summary,))


def test_the_figure_of_a_fleet_measured_twice_is_the_median_of_all_its_runs() -> None:
    first = _fleet([1000, 1000, 1000], [1.0, 0.5, 0.25], [1.0, 1.0, 1.0])  # 1,000 2,000 4,000/s
    again = _fleet([3000, 3000, 3000], [1.0, 1.0, 3.0], [2.0, 2.0, 2.0])  # 3,000 3,000 1,000/s

    both = first.joined(again)

    assert both.ok, both.problems
    assert len(both.measurement.runs) == 6
    # the median of 1,000 1,000 2,000 3,000 3,000 4,000
    assert both.measurement.median == pytest.approx(2500.0)
    assert both.measurement.sagas == 200 + 3000 + 9000


def test_cpu_a_saga_is_read_off_the_median_run_with_that_runs_own_size() -> None:
    first = _fleet([1000, 1000, 1000], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])  # 2 ms a saga
    again = _fleet([4000, 4000, 4000], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0])  # 0.5 ms a saga

    both = first.joined(again)

    # rates 1,000 x3 and 2,000 x3: the low median run is one of the first, of 1,000 sagas
    assert both.cpu_ms_per_saga() == pytest.approx(2.0)
    assert cpu_per_saga(both).endswith("= 2.00")


def test_a_saga_missing_from_either_measurement_fails_the_pooled_one() -> None:
    whole = _fleet([1000] * 3, [1.0] * 3, [1.0] * 3)
    short = _fleet([1000] * 3, [1.0] * 3, [1.0] * 3, logged_short=1)

    assert not whole.joined(short).ok
    assert "1 logs are not whole" in whole.joined(short).problems
