"""The benchmark suite still runs end to end, so ``make bench`` is not found broken on release.

Quick mode only: the figures of so short a run mean nothing, so no timing is asserted;
what is asserted is that every scenario ran and every one of its sagas completed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres  # the quick run includes the PostgreSQL benchmarks

SCENARIOS = (
    "hand-written orchestrator",
    "sagakit + MemoryStore",
    "sagakit's data, no engine",
    "sagakit + SQLite",
)
MODES = ("sequential", "concurrent")


def _rows(report: str) -> dict[tuple[str, str], list[str]]:
    """The results table's rows, keyed by (scenario, mode)."""
    table = report.split("## Results", 1)[1].split("\n## ", 1)[0]
    cells = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith(("| Scenario", "| ---"))
    ]
    return {(row[0], row[1]): row for row in cells}


def _all_of(count: str) -> bool:
    """``"420/420"``: every saga accounted for (and at least one ran)."""
    done, total = count.split("/")
    return done == total and int(total.replace(",", "")) > 0


@pytest.mark.timeout(180)
def test_quick_run_reports_every_scenario_completed(tmp_path: Path) -> None:
    from benchmarks.cli import main

    output = tmp_path / "bench.md"

    assert main(["--quick", "--output", str(output)]) == 0

    report = output.read_text(encoding="utf-8")
    rows = _rows(report)
    assert set(rows) == {(scenario, mode) for scenario in SCENARIOS for mode in MODES}
    for key, row in rows.items():
        completed, in_log = row[-2], row[-1]
        assert _all_of(completed), key
        if key[0] != SCENARIOS[0]:  # the hand-written orchestrator keeps no log
            assert _all_of(in_log), key
    assert "make bench" in report
    assert "## SQLite fsync ceiling" in report
    assert report.count("| met |") + report.count("| not met |") == 4
    assert "## Where a worker's time goes (py-spy)" in report
    assert "![One worker's flame graph](images/worker-flame.svg)" in report
    assert (tmp_path / "images" / "worker-flame.svg").read_text().startswith("<?xml")
    assert "## What was tried on the hot path" in report
