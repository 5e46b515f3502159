"""``sagakit outbox``: a choreographed service's outbox dead letters, listed and re-sent.

An event the broker kept refusing waits in its service's outbox, with its saga's later
events behind it, until an operator has fixed the cause (raised the broker's limit, made
the event smaller, repaired the stream) and re-sends it; the relay then publishes the
whole chain in order.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import typer
from rich.markup import escape

from sagakit._timeline import printable
from sagakit._urls import redact
from sagakit.choreography import LocalDatabase, OutboxDeadLetter
from sagakit.choreography._open import DATABASE_FORMS, open_local_database
from sagakit.cli._common import AsJson, app, echo_json, plain_columns, run

outbox = typer.Typer(
    name="outbox",
    help="A choreographed service's outbox: the events it gave up publishing.",
    no_args_is_help=True,
)
app.add_typer(outbox)

ServiceDb = Annotated[
    str,
    typer.Option(
        "--db",
        help="The service's own database (not the saga log): " + escape(", ".join(DATABASE_FORMS)),
    ),
]
EXCERPT = 120
"""Characters of an event's JSON a listing shows: enough to recognise it, never 10 MB."""


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[LocalDatabase]:
    db = await open_local_database(url)
    try:
        yield db
    finally:
        await db.close()


@outbox.command("dead")
def dead(db: ServiceDb, limit: int = 100, as_json: AsJson = False) -> None:
    """List the outbox's dead letters, oldest first, with why each was given up."""

    async def work() -> list[OutboxDeadLetter]:
        async with _opened(db) as opened:
            return await opened.dead_letters(limit)

    letters = run(work())
    if as_json:
        echo_json([_as_json(letter) for letter in letters])
        return
    if not letters:
        typer.echo(f"no dead letters in the outbox of {redact(db)}")
        return
    header = ["ID", "SAGA", "STREAM", "REFUSALS", "DEAD AT", "ERROR", "EVENT"]
    rows = [header] + [_as_row(letter) for letter in letters]
    typer.echo(plain_columns(rows))


@outbox.command("resend")
def resend(
    db: ServiceDb,
    ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Dead letters' ids.")],
) -> None:
    """Publish these dead letters again (their sagas' later events follow them, in order)."""

    async def work() -> int:
        async with _opened(db) as opened:
            return await opened.resend(ids)

    count = run(work())
    missing = len(set(ids)) - count
    typer.echo(f"{count} dead letter(s) will be published again by the service's relay")
    if missing:
        typer.echo(f"{missing} id(s) were not dead letters of this outbox", err=True)
        raise typer.Exit(1)


def _as_json(letter: OutboxDeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "saga_id": letter.correlation_id,
        "stream": letter.stream,
        "refusals": letter.refusals,
        "error": letter.error,
        "created_at": letter.created_at,
        "dead_at": letter.dead_at,
        "event": _excerpt(letter.event, 4096),
    }


def _as_row(letter: OutboxDeadLetter) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.dead_at))
    return [
        str(letter.id),
        printable(letter.correlation_id),
        printable(letter.stream),
        str(letter.refusals),
        when,
        printable(_excerpt(letter.error, EXCERPT)),
        printable(_excerpt(letter.event, EXCERPT)),
    ]


def _excerpt(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"
