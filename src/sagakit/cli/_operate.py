"""The operators' commands: retry, resolve, cancel, and migrate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from sagakit._urls import redact
from sagakit.cli._common import (
    DEFAULT_DB,
    By,
    Db,
    app,
    opened,
    run,
)
from sagakit.orchestration import (
    Client,
)

# --------------------------------------------------------------------------- operators


@app.command()
def retry(saga_id: str, db: Db = DEFAULT_DB, note: str = "", by: By = None) -> None:
    """Try a needs_attention saga's failed calls again (its workers pick it up)."""
    run(_operate(db, lambda client: client.retry(saga_id, note=note, by=by)))
    typer.echo(f"{saga_id}: retry recorded; a worker will carry it on")


@app.command()
def resolve(
    saga_id: str,
    note: Annotated[str, typer.Option("--note", help="What was done by hand.")],
    db: Db = DEFAULT_DB,
    by: By = None,
) -> None:
    """Record that a needs_attention saga was finished by hand."""
    run(_operate(db, lambda client: client.resolve(saga_id, note=note, by=by)))
    typer.echo(f"{saga_id}: resolved")


@app.command()
def cancel(saga_id: str, db: Db = DEFAULT_DB, reason: str = "", by: By = None) -> None:
    """Ask a running saga that has not passed its pivot to compensate."""
    run(_operate(db, lambda client: client.cancel(saga_id, reason=reason, by=by)))
    typer.echo(f"{saga_id}: cancel requested; it compensates")


async def _operate(url: str, action: Callable[[Client], Awaitable[None]]) -> None:
    async with opened(url, create=False) as store:
        await action(Client(store))


@app.command()
def migrate(db: Db = DEFAULT_DB) -> None:
    """Create or upgrade the saga log's schema (opening a log does it too)."""

    async def open_and_close() -> None:
        async with opened(db):
            pass

    run(open_and_close())
    typer.echo(f"{redact(db)}: schema is current")
