"""``python -m benchmarks``: run the suite, print the table, write the markdown report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import pg_report, postgres, report
from benchmarks.suite import FULL, QUICK, run_suite

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure sagakit against the hand-written orchestrator; write a report.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run; its figures mean nothing"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="where to write the markdown report (default: docs/benchmarks.md)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, print the table, write the report; 1 if any saga did not complete.

    A failed check still writes the report, so the broken scenario can be seen in it.
    """
    args = parse(argv)
    results = asyncio.run(run_suite(QUICK if args.quick else FULL))
    # The PostgreSQL scenarios run their own worker processes, after the in-process suite.
    pg_settings = postgres.QUICK if args.quick else postgres.FULL
    on_postgres = asyncio.run(postgres.run_postgres(pg_settings))
    report.print_table(results)
    pg_report.print_section(on_postgres)
    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    text = report.markdown(results) + "\n" + pg_report.markdown(on_postgres)
    output.write_text(text, encoding="utf-8")
    print(f"report written to {output}")
    if not results.ok or not on_postgres.ok:
        print("FAILED: some sagas did not complete or are missing from the log", file=sys.stderr)
        return 1
    return 0
