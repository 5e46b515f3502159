"""What every ``sagakit`` command shares: the app, the ``--db`` option, and the one way a
command runs, so that each failure ends as one ``error: ...`` line and never a traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.markup import escape

from sagakit.errors import SagakitError
from sagakit.log import SagaStatus
from sagakit.store import URL_FORMS, Store, open_store

DEFAULT_DB = "sqlite:///sagakit.db"
T = TypeVar("T")

DB_URLS = escape(", ".join(URL_FORMS))  # rich would read [postgres] as a style

app = typer.Typer(
    name="sagakit",
    help="Run, inspect and resume sagas recorded in a saga log.",
    epilog=f"Saga logs (--db, default $SAGAKIT_DB, else {DEFAULT_DB}): {DB_URLS}.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold saga inputs: keep them off screens
)

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SAGAKIT_DB",
        help=f"Saga log URL: {DB_URLS}; memory:// is gone when the command ends.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

# --------------------------------------------------------------------------- plumbing


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; sagakit's errors become one line on stderr and exit 1."""
    try:
        return asyncio.run(work)
    except SagakitError as error:
        fail(str(error), 1)
    except OSError as error:  # a database path that cannot be opened, say
        fail(str(error), 1)


@asynccontextmanager
async def opened(url: str, create: bool = True) -> AsyncIterator[Store]:
    store = await open_store(url, create=create)
    try:
        yield store
    finally:
        await store.close()


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def parse_status(value: str | None) -> SagaStatus | None:
    if value is None:
        return None
    try:
        return SagaStatus(value.lower())
    except ValueError:
        valid = ", ".join(s.value for s in SagaStatus)
        fail(f"invalid --status {value!r}; use one of: {valid}", 2)


By = Annotated[
    str | None,
    typer.Option("--by", help="Who acts, for the log (default: user@host)."),
]


def plain_columns(rows: list[list[str]]) -> str:
    """Rows as plain text, each column padded to its widest cell: nothing cut or coloured,
    so what is piped to grep and cut is all there."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
