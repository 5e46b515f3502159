"""The operators' commands: retry, resolve, skip, cancel, signal, and migrate.

Each refusal (a saga in the wrong state, a step that does not allow it, a value that is not
JSON) is one ``error: ...`` line and exit 1, with nothing recorded or sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from sagakit._timeline import printable
from sagakit._urls import redact
from sagakit.cli._common import (
    DEFAULT_DB,
    By,
    Db,
    app,
    fail,
    opened,
    run,
)
from sagakit.cli._filters import Filters, with_filters
from sagakit.log import SagaStatus
from sagakit.operations import BulkOutcome, Query, act_on_each, matches
from sagakit.orchestration import Client
from sagakit.store import migrate as migrate_store

# --------------------------------------------------------------------------- operators


SagaId = Annotated[str, typer.Argument(metavar="ID", help="The saga instance's id.")]
OneOrAll = Annotated[
    str | None,
    typer.Argument(metavar="[ID]", help="The saga instance's id (or --all with filters)."),
]
Every = Annotated[
    bool, typer.Option("--all", help="Every saga the filters find, instead of one ID.")
]
Apply = Annotated[
    bool, typer.Option("--yes", help="Act on what --all finds; without it, only list them.")
]


@app.command()
@with_filters
def retry(
    filters: Filters,
    saga_id: OneOrAll = None,
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="STEP",
            help="The failed step to run again (the one the saga stopped at), with a fresh "
            "attempt budget; a step that succeeded is never run again.",
        ),
    ] = None,
    db: Db = DEFAULT_DB,
    note: str = "",
    by: By = None,
    every: Every = False,
    apply: Apply = False,
) -> None:
    """Try a needs_attention saga's failed calls again (its workers pick it up).

    With --all instead of an ID: every saga the filters find (needs_attention unless
    --status says otherwise), listed first; --yes acts.
    """

    def act(client: Client, one: str) -> Awaitable[None]:
        return client.retry(one, from_step=from_step, note=note, by=by)

    where = "" if from_step is None else f" from step {from_step!r}"
    done = f"retry{where} recorded; a worker will carry it on"
    _one_or_all(db, filters, saga_id, every, apply, "retry", act, done)


@app.command()
@with_filters
def resolve(
    filters: Filters,
    note: Annotated[str, typer.Option("--note", help="What was done by hand.")],
    saga_id: OneOrAll = None,
    db: Db = DEFAULT_DB,
    by: By = None,
    every: Every = False,
    apply: Apply = False,
) -> None:
    """Record that a needs_attention saga was finished by hand.

    With --all instead of an ID: every saga the filters find (needs_attention unless
    --status says otherwise), listed first; --yes acts.
    """

    def act(client: Client, one: str) -> Awaitable[None]:
        return client.resolve(one, note=note, by=by)

    _one_or_all(db, filters, saga_id, every, apply, "resolve", act, "resolved")


def _one_or_all(
    db: str,
    filters: Filters,
    saga_id: str | None,
    every: bool,
    apply: bool,
    verb: str,
    act: Callable[[Client, str], Awaitable[None]],
    done: str,
) -> None:
    """Act on the one saga named, saying ``done``; or on all the filters find (--all)."""
    if every == (saga_id is not None):
        fail(f"{verb} needs a saga ID or --all with filters, not both", 2)
    if saga_id is not None:
        if filters.any or apply:
            fail("filters and --yes go with --all; for one saga give only its ID", 2)
        run(_operate(db, lambda client: act(client, saga_id)))
        typer.echo(f"{saga_id}: {done}")
        return
    if not filters.status:
        filters.status = [SagaStatus.NEEDS_ATTENTION.value]
    query = filters.query(time.time())
    outcomes = run(_act_on_matches(db, query, apply, act))
    _report(outcomes, verb, apply)
    if any(o.error is not None for o in outcomes):
        raise typer.Exit(1)


async def _act_on_matches(
    url: str, query: Query, apply: bool, act: Callable[[Client, str], Awaitable[None]]
) -> list[BulkOutcome]:
    async with opened(url, create=False) as store:
        client = Client(store)
        found = await matches(store, query)
        return await act_on_each(found, lambda one: act(client, one), apply=apply)


def _report(outcomes: list[BulkOutcome], verb: str, apply: bool) -> None:
    if not apply:
        for outcome in outcomes:
            typer.echo(printable(outcome.saga_id))
        typer.echo(
            f"would {verb} {len(outcomes)} saga(s); nothing done (dry run: add --yes to act)",
            err=True,
        )
        return
    for outcome in outcomes:
        said = "done" if outcome.error is None else f"refused: {outcome.error}"
        typer.echo(f"{printable(outcome.saga_id)}: {printable(said)}")
    done = sum(o.applied for o in outcomes)
    refused = len(outcomes) - done
    typer.echo(f"{verb}: {done} of {len(outcomes)} saga(s) done, {refused} refused", err=True)


@app.command()
def skip(
    saga_id: SagaId,
    step: Annotated[str, typer.Argument(metavar="STEP", help="The failed step to mark done.")],
    result: Annotated[
        str,
        typer.Option(
            "--result",
            metavar="JSON",
            help="What the step would have returned, for the steps after it (null: nothing).",
        ),
    ],
    note: Annotated[str, typer.Option("--note", help="What was done instead, for the log.")],
    db: Db = DEFAULT_DB,
    by: By = None,
) -> None:
    """Mark a failed forward step done by hand, so the saga goes on from the next step."""
    value = _json("--result", result)
    run(_operate(db, lambda client: client.skip(saga_id, step, result=value, note=note, by=by)))
    typer.echo(f"{saga_id}: step {step!r} marked done; a worker carries the saga on")


@app.command()
def signal(
    saga_id: SagaId,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The message's name.")],
    payload: Annotated[
        str, typer.Option("--payload", metavar="JSON", help="What ctx.wait_for(NAME) returns.")
    ] = "null",
    db: Db = DEFAULT_DB,
) -> None:
    """Send a message to an unfinished saga; a step waiting for NAME goes on with it."""
    value = _json("--payload", payload)
    run(_operate(db, lambda client: client.signal(saga_id, name, value)))
    typer.echo(f"{saga_id}: {name!r} sent")


@app.command()
def cancel(saga_id: str, db: Db = DEFAULT_DB, reason: str = "", by: By = None) -> None:
    """Ask a running saga that has not passed its pivot to compensate."""

    async def cancelled() -> bool:
        async with opened(db, create=False) as store:
            return await Client(store).cancel(saga_id, reason=reason, by=by)

    if run(cancelled()):
        typer.echo(f"{saga_id}: cancelled; it compensates now (a worker undoes what was done)")
    else:
        typer.echo(
            f"{saga_id}: cancel sent to the worker driving it: it compensates at its next step,"
            " or refuses if the pivot has passed (sagakit show tells which)"
        )


async def _operate(url: str, action: Callable[[Client], Awaitable[None]]) -> None:
    async with opened(url, create=False) as store:
        await action(Client(store))


def _json(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:  # json.JSONDecodeError, or a number too long to convert
        fail(f"{option} is not JSON: {error}", 1)


@app.command()
def migrate(db: Db = DEFAULT_DB) -> None:
    """Create or upgrade the saga log's schema, with no time limit (opening a log does it
    too, under ?timeout=)."""
    run(migrate_store(db))
    typer.echo(f"{redact(db)}: schema is current")
