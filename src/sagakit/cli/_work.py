"""``sagakit worker``: claim due sagas and drive them."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from typing import Annotated

import typer

from sagakit._signals import stop_on_signals
from sagakit.cli._common import (
    DEFAULT_DB,
    Db,
    app,
    fail,
    opened,
    run,
)
from sagakit.cli._logs import LogFormat, logging_to_stderr
from sagakit.errors import AppReferenceError
from sagakit.orchestration import (
    DEFAULT_LEASE,
    DriveReport,
    Saga,
    Worker,
    load_sagas,
    resume_all,
)


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# --------------------------------------------------------------------------- worker


@app.command()
def worker(
    app_ref: Annotated[
        str,
        typer.Option(
            "--app", metavar="MODULE:ATTR", help="Your sagas: a Saga, a list, or a callable."
        ),
    ],
    db: Db = DEFAULT_DB,
    once: Annotated[
        bool,
        typer.Option("--once", help="Finish what is unfinished (after a crash), then exit."),
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=10_000, help="Sagas driven at once.")
    ] = 16,
    lease: Annotated[
        float,
        typer.Option("--lease", min=0.1, max=3600, help="Seconds a claim lasts unrenewed."),
    ] = DEFAULT_LEASE,
    poll: Annotated[
        float, typer.Option("--poll", min=0.01, max=3600, help="Seconds between claims.")
    ] = 1.0,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="Least severe logged.")
    ] = LogLevel.INFO,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", case_sensitive=False, help="stderr lines: text or json."),
    ] = LogFormat.TEXT,
) -> None:
    """Claim due saga instances and drive them; run many, on many machines, per database."""
    if os.getcwd() not in sys.path:  # like `python -m`: the user's modules are importable
        sys.path.insert(0, os.getcwd())
    try:
        sagas = load_sagas(app_ref)
    except AppReferenceError as error:
        fail(str(error), 2)
    with logging_to_stderr(log_level.value, log_format):
        raise typer.Exit(run(_work(db, sagas, once, concurrency, lease, poll)))


async def _work(
    url: str, sagas: list[Saga], once: bool, concurrency: int, lease: float, poll: float
) -> int:
    outcomes: list[DriveReport] = []

    def report(outcome: DriveReport) -> None:
        outcomes.append(outcome)
        typer.echo(_describe(outcome))

    async with opened(url) as store:
        if once:
            await resume_all(store, sagas, lease=lease, report=report)
            typer.echo(f"resumed {len(outcomes)} saga(s)")
        else:
            pool = Worker(
                store, sagas, concurrency=concurrency, lease=lease, poll=poll, report=report
            )
            names = ", ".join(s.key for s in sagas)
            typer.echo(f"worker {pool.owner} started ({names}); Ctrl-C or SIGTERM to stop")
            await pool.run(stop_on_signals())
            typer.echo("worker stopped")
    return 1 if any(o.error is not None for o in outcomes) else 0


def _describe(outcome: DriveReport) -> str:
    if outcome.error is not None:
        return f"{outcome.saga_id}  error: {outcome.error}"
    result = outcome.result
    assert result is not None
    line = f"{result.saga_id}  {result.name}@{result.version}  {result.status.value}"
    return line + (f"  ({result.reason})" if result.reason else "")
