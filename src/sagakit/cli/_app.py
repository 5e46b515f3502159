"""``sagakit``: the operator's command line over a saga log.

Every command opens the store named by ``--db`` (default ``$SAGAKIT_DB``, else
``sqlite:///sagakit.db``) and closes it before exiting. Mistakes in what the user typed end
with one ``error: ...`` line on stderr, never a traceback: exit 1 for errors sagakit reports
(unknown saga id, unsupported database, schema too new), 2 for bad usage (``--app``,
``--status``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from enum import StrEnum
from importlib.metadata import version
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sagakit._signals import stop_on_signals
from sagakit._timeline import local_time, printable, render_timeline, status_text
from sagakit._urls import redact
from sagakit.cli._logs import LogFormat, logging_to_stderr
from sagakit.errors import AppReferenceError, SagakitError, UnknownSagaError
from sagakit.log import SagaState, SagaStatus, StepStatus
from sagakit.orchestration import (
    DEFAULT_LEASE,
    Client,
    DriveReport,
    Saga,
    Worker,
    load_sagas,
    resume_all,
)
from sagakit.store import Store, open_store

DEFAULT_DB = "sqlite:///sagakit.db"
T = TypeVar("T")

app = typer.Typer(
    name="sagakit",
    help="Run, inspect and resume sagas recorded in a saga log.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold saga inputs: keep them off screens
)

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SAGAKIT_DB",
        help="Saga log URL: sqlite:///path.db, or memory:// (gone when the command ends).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def main() -> None:
    """Entry point of the ``sagakit`` script."""
    app()


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"sagakit {version('sagakit')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Run, inspect and resume sagas recorded in a saga log."""


# --------------------------------------------------------------------------- plumbing


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; sagakit's errors become one line on stderr and exit 1."""
    try:
        return asyncio.run(work)
    except SagakitError as error:
        _fail(str(error), 1)
    except OSError as error:  # a database path that cannot be opened, say
        _fail(str(error), 1)


@asynccontextmanager
async def _opened(url: str, create: bool = True) -> AsyncIterator[Store]:
    store = await open_store(url, create=create)
    try:
        yield store
    finally:
        await store.close()


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _status(value: str | None) -> SagaStatus | None:
    if value is None:
        return None
    try:
        return SagaStatus(value.lower())
    except ValueError:
        valid = ", ".join(s.value for s in SagaStatus)
        _fail(f"invalid --status {value!r}; use one of: {valid}", 2)


# --------------------------------------------------------------------------- demo


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Flavor(StrEnum):
    """The two ways to run a saga (see the source document's "Two Flavors of Sagas")."""

    ORCHESTRATION = "orchestration"
    CHOREOGRAPHY = "choreography"


@app.command()
def demo(
    db: Db = DEFAULT_DB,
    flavor: Annotated[
        Flavor,
        typer.Option(
            "--flavor",
            case_sensitive=False,
            help="orchestration: an engine drives the order saga; choreography: four services "
            "react to each other's events over a broker.",
        ),
    ] = Flavor.ORCHESTRATION,
    broker: Annotated[
        str,
        typer.Option(
            "--broker",
            envvar="SAGAKIT_BROKER",
            help="Choreography's broker: memory:// (services as tasks of this process), or "
            "redis://, nats://, amqp:// (each service a process of its own).",
        ),
    ] = "memory://",
) -> None:
    """Run the order saga's scenarios and print each saga's timeline."""
    if flavor is Flavor.ORCHESTRATION:
        if broker != "memory://":
            _fail("--broker is for --flavor choreography (orchestration needs no broker)", 2)
        from sagakit.demo import run_demo

        raise typer.Exit(_run(run_demo(db, Console())))
    from sagakit.demo import run_choreography_demo

    raise typer.Exit(_run(run_choreography_demo(db, broker, Console())))


# --------------------------------------------------------------------------- list / show


async def _states(url: str, status: SagaStatus | None, limit: int) -> list[SagaState]:
    async with _opened(url, create=False) as store:
        states = []
        for instance in await store.instances(status, limit):
            stored = await store.load(instance.id)
            if stored is not None:
                states.append(SagaState.from_records(instance.id, stored.records))
        return states


async def _state(url: str, saga_id: str) -> SagaState:
    async with _opened(url, create=False) as store:
        stored = await store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        return SagaState.from_records(saga_id, stored.records)


@app.command("list")
def list_sagas(
    db: Db = DEFAULT_DB,
    status: Annotated[
        str | None, typer.Option("--status", help="Only sagas with this status.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: AsJson = False,
) -> None:
    """List saga instances, newest first."""
    wanted = _status(status)
    states = _run(_states(db, wanted, limit))
    if as_json:
        _echo_json([state.as_dict(events=False) for state in states])
    elif not states:
        typer.echo("no sagas" + (f" with status {wanted.value}" if wanted else ""))
    else:
        console = Console()
        if console.is_terminal:
            console.print(_list_table(states))
        else:  # piped: every cell whole, so grep and cut see what is there
            typer.echo(_plain_table(states))


def _list_table(states: list[SagaState]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    # Never cut the id short: it is what the user copies into `sagakit show`.
    table.add_column("id", no_wrap=True, min_width=min(max(len(s.id) for s in states), 40))
    table.add_column("saga", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("steps", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    for state in states:
        table.add_row(
            Text(printable(state.id)),
            Text(printable(f"{state.name}@{state.version}")),
            status_text(state.status) + _resolved(state),
            _progress(state),
            local_time(state.records[-1].at, "%m-%d %H:%M:%S"),
        )
    return table


def _plain_table(states: list[SagaState]) -> str:
    """The list as plain text: columns padded to their widest cell, nothing cut or coloured."""
    rows = [["id", "saga", "status", "steps", "updated"]]
    rows += [
        [
            printable(state.id),
            printable(f"{state.name}@{state.version}"),
            state.status.value + _resolved(state),
            _progress(state),
            local_time(state.records[-1].at, "%m-%d %H:%M:%S"),
        ]
        for state in states
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _resolved(state: SagaState) -> str:
    """The mark of a saga an operator finished by hand, apart from one that ended by itself."""
    return ", resolved" if state.resolution is not None else ""


def _progress(state: SagaState) -> str:
    done = sum(s.status is StepStatus.SUCCEEDED for s in state.steps)
    undone = sum(s.status is StepStatus.COMPENSATED for s in state.steps)
    text = f"{done}/{len(state.steps)}"
    return text + (f", {undone} undone" if undone else "")


@app.command()
def show(
    saga_id: Annotated[str, typer.Argument(metavar="ID", help="The saga instance's id.")],
    db: Db = DEFAULT_DB,
    as_json: AsJson = False,
) -> None:
    """Show one saga instance: its steps and the timeline of its log."""
    state = _run(_state(db, saga_id))
    if as_json:
        _echo_json(state.as_dict())
    else:
        Console().print(render_timeline(state))


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
        _fail(str(error), 2)
    with logging_to_stderr(log_level.value, log_format):
        raise typer.Exit(_run(_work(db, sagas, once, concurrency, lease, poll)))


async def _work(
    url: str, sagas: list[Saga], once: bool, concurrency: int, lease: float, poll: float
) -> int:
    outcomes: list[DriveReport] = []

    def report(outcome: DriveReport) -> None:
        outcomes.append(outcome)
        typer.echo(_describe(outcome))

    async with _opened(url) as store:
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


# --------------------------------------------------------------------------- operators

By = Annotated[
    str | None,
    typer.Option("--by", help="Who acts, for the log (default: user@host)."),
]


@app.command()
def retry(saga_id: str, db: Db = DEFAULT_DB, note: str = "", by: By = None) -> None:
    """Try a needs_attention saga's failed calls again (its workers pick it up)."""
    _run(_operate(db, lambda client: client.retry(saga_id, note=note, by=by)))
    typer.echo(f"{saga_id}: retry recorded; a worker will carry it on")


@app.command()
def resolve(
    saga_id: str,
    note: Annotated[str, typer.Option("--note", help="What was done by hand.")],
    db: Db = DEFAULT_DB,
    by: By = None,
) -> None:
    """Record that a needs_attention saga was finished by hand."""
    _run(_operate(db, lambda client: client.resolve(saga_id, note=note, by=by)))
    typer.echo(f"{saga_id}: resolved")


@app.command()
def cancel(saga_id: str, db: Db = DEFAULT_DB, reason: str = "", by: By = None) -> None:
    """Ask a running saga that has not passed its pivot to compensate."""
    _run(_operate(db, lambda client: client.cancel(saga_id, reason=reason, by=by)))
    typer.echo(f"{saga_id}: cancel requested; it compensates")


async def _operate(url: str, action: Callable[[Client], Awaitable[None]]) -> None:
    async with _opened(url, create=False) as store:
        await action(Client(store))


@app.command()
def migrate(db: Db = DEFAULT_DB) -> None:
    """Create or upgrade the saga log's schema (opening a log does it too)."""

    async def opened() -> None:
        async with _opened(db):
            pass

    _run(opened())
    typer.echo(f"{redact(db)}: schema is current")


def _describe(outcome: DriveReport) -> str:
    if outcome.error is not None:
        return f"{outcome.saga_id}  error: {outcome.error}"
    result = outcome.result
    assert result is not None
    line = f"{result.saga_id}  {result.name}@{result.version}  {result.status.value}"
    return line + (f"  ({result.reason})" if result.reason else "")
