"""``sagakit worker``: claim due sagas and drive them."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Annotated

import typer

from sagakit._retry import Outage
from sagakit._signals import stop_on_signals
from sagakit._timeline import local_time, printable
from sagakit.cli._common import (
    DEFAULT_DB,
    Db,
    app,
    fail,
    opened,
    run,
)
from sagakit.cli._logs import LogFormat, logging_to_stderr
from sagakit.errors import AppReferenceError, InvalidArgumentError, StoreUnavailableError
from sagakit.log import SagaStatus
from sagakit.orchestration import (
    DEFAULT_LEASE,
    DriveReport,
    Saga,
    SagaResult,
    Worker,
    load_sagas,
    on_queues,
    resume_all,
)
from sagakit.store import Store, open_store

log = logging.getLogger("sagakit.cli")


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
        typer.Option(
            "--once",
            help="Drive what is due now (after a crash), hand back what waits, then exit.",
        ),
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
    max_attempts: Annotated[
        int | None,
        typer.Option(
            "--max-attempts",
            min=1,
            help="Attempts of a retriable step with no limit of its own before its saga"
            " needs attention (default: retried for ever).",
        ),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", metavar="NAME", help="Only the sagas on this queue (repeatable)."),
    ] = None,
    give_up_after: Annotated[
        float | None,
        typer.Option(
            "--give-up-after",
            min=0.1,
            metavar="SECONDS",
            help="Exit (rc 1) once the database has been unreachable this long"
            " (default: wait for it for ever).",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="Least severe logged.")
    ] = LogLevel.INFO,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", case_sensitive=False, help="stderr lines: text or json."),
    ] = LogFormat.TEXT,
) -> None:
    """Claim due saga instances and drive them; run many, on many machines, per database.

    Each saga's outcome is a debug line on stderr (--log-level debug); --once prints a
    line for each on stdout."""
    if os.getcwd() not in sys.path:  # like `python -m`: the user's modules are importable
        sys.path.insert(0, os.getcwd())
    try:
        sagas = on_queues(load_sagas(app_ref), queue or None)
    except (AppReferenceError, InvalidArgumentError) as error:
        fail(str(error), 2)
    with logging_to_stderr(log_level.value, log_format):
        if once:
            raise typer.Exit(run(_once(db, sagas, concurrency, lease, max_attempts)))
        work = _work(db, sagas, concurrency, lease, poll, max_attempts, give_up_after)
        raise typer.Exit(run(work))


async def _once(
    url: str, sagas: list[Saga], concurrency: int, lease: float, max_attempts: int | None
) -> int:
    """One pass: a line for each saga as it finishes (or fails), then what was left."""
    errors: set[str] = set()

    def report(outcome: DriveReport) -> None:
        if outcome.error is not None:
            errors.add(outcome.saga_id)
        result = outcome.result
        if result is None or result.status.is_terminal or result.lost_lease:
            typer.echo(_describe(outcome))

    async with opened(url) as store:
        results = await resume_all(
            store,
            sagas,
            lease=lease,
            report=report,
            concurrency=concurrency,
            max_attempts=max_attempts,
        )
    typer.echo(_summary(results, len(errors)))
    return 1 if errors else 0


async def _work(
    url: str,
    sagas: list[Saga],
    concurrency: int,
    lease: float,
    poll: float,
    max_attempts: int | None,
    give_up_after: float | None = None,
) -> int:
    errors = 0  # a count, not the outcomes: a worker runs for months

    def report(outcome: DriveReport) -> None:
        """A line per saga only at ``--log-level debug``: thousands a second would cost the
        worker more than the sagas do. A drive that failed is logged where it failed."""
        nonlocal errors
        errors += outcome.error is not None
        if outcome.error is None:
            log.debug("%s", _describe(outcome), extra={"saga_id": outcome.saga_id})

    async with _opened_when_up(url, give_up_after) as store:
        pool = Worker(
            store,
            sagas,
            concurrency=concurrency,
            lease=lease,
            poll=poll,
            report=report,
            max_attempts=max_attempts,
            give_up_after=give_up_after,
        )
        names = ", ".join(s.key for s in sagas)
        stop = stop_on_signals()  # before saying it started: a SIGTERM from then on is a stop
        typer.echo(f"worker {pool.owner} started ({names}); Ctrl-C or SIGTERM to stop")
        await pool.run(stop)
        typer.echo("worker stopped")
    return 1 if errors else 0


@asynccontextmanager
async def _opened_when_up(url: str, give_up_after: float | None) -> AsyncIterator[Store]:
    """The store, once its database answers: a worker started while the database is down
    or starting up waits for it as a running worker does, up to ``give_up_after``."""
    outage = Outage(log, "worker", give_up_after=give_up_after)
    while True:
        try:
            store = await open_store(url)
            break
        except StoreUnavailableError as error:
            delay = outage.failed(error)
            if delay is None:
                raise
            await asyncio.sleep(delay)  # a back-off: nothing to wait for but time
    outage.back()
    try:
        yield store
    finally:
        await store.close()


def _describe(outcome: DriveReport) -> str:
    if outcome.error is not None:
        return f"{outcome.saga_id}  error: {outcome.error}"
    result = outcome.result
    assert result is not None
    line = f"{result.saga_id}  {result.name}@{result.version}  {result.status.value}"
    if result.lost_lease:  # not an error: another worker carries the saga on
        return line + f"  ({printable(result.lost_lease)})"
    return line + (f"  ({result.reason})" if result.reason else "")


def _summary(results: list[SagaResult], errors: int) -> str:
    """``resumed 3 saga(s): 1 completed, 1 error(s); left 1 waiting: <id> for signal 'paid'
    until <time>``: the pass's outcome in one line, for the operator who ran it."""
    finished = Counter(r.status for r in results if r.status.is_terminal)
    left = sorted(  # what is due first, first; waits for a message only, last
        (r for r in results if not r.status.is_terminal),
        key=lambda r: (r.due_at is None, r.due_at or 0.0),
    )
    counts = [f"{finished[s]} {s.value}" for s in SagaStatus if finished[s]]
    if errors:
        counts.append(f"{errors} error(s)")
    parts = [", ".join(counts)] if counts else []
    if left:
        parts.append(f"left {len(left)} waiting: " + ", ".join(_waiting(r) for r in left))
    line = f"resumed {len(results) + errors} saga(s)"
    return line + (": " + "; ".join(parts) if parts else "")


def _waiting(result: SagaResult) -> str:
    """``<id> for signal 'paid' until <time>``, ``<id> retry of step 'email' at <time>``."""
    until = "" if result.due_at is None else local_time(result.due_at)
    if result.lost_lease:
        what = printable(result.lost_lease)
    elif result.waiting_for is not None:
        what = f"for signal '{printable(result.waiting_for)}'"
        what += f" until {until}" if until else " (no time limit)"
    elif result.retrying is not None:
        role = "compensation" if result.status is SagaStatus.COMPENSATING else "step"
        what = f"retry of {role} '{printable(result.retrying)}' at {until}"
    else:
        what = f"due at {until}" if until else "for a message"
    return f"{printable(result.saga_id)} {what}"
