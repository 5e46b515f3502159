"""``python -m benchmarks``: run the suite, print the table, write the markdown report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import flame, pg_baseline, pg_query, pg_report, postgres, report, telemetry
from benchmarks.pg_db import server_url
from benchmarks.suite import FULL, QUICK, run_suite

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"
TRIED = ROOT / "benchmarks" / "tried.md"
"""What was tried on the hot path and dropped, with its figures and commands: kept by
hand (each was measured once, by the command it names), put at the end of the report."""


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
    parser.add_argument(
        "--only",
        choices=["postgres", "queries", "telemetry", "flame"],
        help="run one section and replace only it in the existing report",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the PostgreSQL fleet with this git ref's sagakit, in the same run",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, print the table, write the report; 1 if any saga did not complete.

    A failed check still writes the report, so the broken scenario can be seen in it.
    """
    args = parse(argv)
    output: Path = args.output
    if args.only == "queries":
        return _queries_only(args.quick, output)
    if args.only == "telemetry":
        section = telemetry.markdown(telemetry.main(args.quick))
        return _replace_section(section, telemetry.TITLE, output)
    if args.only == "flame":
        return _replace_section(_flame(args.quick, output), flame.TITLE, output)
    try:
        baseline = None if args.baseline is None else pg_baseline.check_out(args.baseline)
    except pg_baseline.BaselineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.only == "postgres":
        on_postgres = _on_postgres(args.quick, baseline)
        pg_report.print_section(on_postgres)
        _replace_section(pg_report.markdown(on_postgres), pg_report.TITLE, output)
        return 0 if on_postgres.ok else 1
    results = asyncio.run(run_suite(QUICK if args.quick else FULL))
    # The PostgreSQL scenarios run their own worker processes, after the in-process suite.
    on_postgres = _on_postgres(args.quick, baseline)
    queries = asyncio.run(pg_query.run_queries(args.quick))
    traced = telemetry.main(args.quick)
    flamed = _flame(args.quick, output)
    report.print_table(results)
    pg_report.print_section(on_postgres)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = report.markdown(results) + "\n" + pg_report.markdown(on_postgres)
    text += "\n" + pg_query.markdown(queries)
    text += "\n" + telemetry.markdown(traced)
    text += "\n" + flamed + "\n" + TRIED.read_text(encoding="utf-8")
    output.write_text(text, encoding="utf-8")
    print(f"report written to {output}")
    if not results.ok or not on_postgres.ok or not traced.ok:
        print("FAILED: some sagas did not complete or are missing from the log", file=sys.stderr)
        return 1
    return 0


def _on_postgres(quick: bool, baseline: pg_baseline.Baseline | None) -> postgres.PgResults:
    settings = postgres.QUICK if quick else postgres.FULL
    if baseline is None:
        return asyncio.run(postgres.run_postgres(settings))

    async def beside(
        url: str, workers: int, concurrency: int, path: postgres.SagaPath
    ) -> postgres.Throughput:
        return await pg_baseline.baseline_throughput(
            baseline, url, quick, workers, concurrency, path
        )

    same = baseline.short.startswith(baseline.ref)  # the ref is the commit's short name
    named = baseline.ref if same else f"{baseline.ref} ({baseline.short})"
    return asyncio.run(postgres.run_postgres(settings, beside, named))


def _flame(quick: bool, output: Path) -> str:
    """The flame graph's section (its SVG beside the report), or why there is none."""
    seconds = 2.0 if quick else flame.DEFAULT_SECONDS
    svg = output.parent / "images" / flame.DEFAULT_OUTPUT.name
    result = asyncio.run(flame.record_flame(server_url(), svg, seconds))
    print(result.sentence())
    return f"## {flame.TITLE}\n\n" + flame.markdown(result, output.parent)


def _queries_only(quick: bool, output: Path) -> int:
    """Measure the operator queries and put their section in place of the old one."""
    section = pg_query.markdown(asyncio.run(pg_query.run_queries(quick)))
    return _replace_section(section, pg_query.TITLE, output)


def _replace_section(section: str, title: str, output: Path) -> int:
    """Print ``section`` and put it in place of the report's section titled ``title``."""
    print(section)
    old = output.read_text(encoding="utf-8") if output.exists() else ""
    heading = f"## {title}"
    if heading in old:
        before, _, rest = old.partition(heading)
        after = rest[rest.find("\n## ") :] if "\n## " in rest else ""
        text = before + section + after.lstrip("\n")
    else:
        text = old + ("\n" if old else "") + section
    output.write_text(text, encoding="utf-8")
    print(f"report written to {output}")
    return 0
