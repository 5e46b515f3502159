"""``sagakit list``: find saga instances, as a table for people or JSON for scripts.

On a terminal the table fits its width (long cells wrap inside their column); piped, it is
plain text with every cell whole, so ``grep`` and ``cut`` see what is there. Whatever is
not the listing itself (the "more match" hint) goes to stderr, so counting lines counts
sagas.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sagakit._timeline import local_time, printable, status_text
from sagakit.cli._common import DEFAULT_DB, AsJson, Db, app, echo_json, opened, plain_columns, run
from sagakit.cli._filters import Filters, with_filters
from sagakit.log import SagaState, StepStatus
from sagakit.operations import Page, Query, SagaView, count, find
from sagakit.store import Count

_HEADINGS = ["id", "saga", "status", "steps", "updated", "next"]
_CLOCK = "%m-%d %H:%M:%S"


@app.command("list")
@with_filters
def list_sagas(
    filters: Filters,
    db: Db = DEFAULT_DB,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    after: Annotated[
        str | None,
        typer.Option("--after", metavar="CURSOR", help="The page after the one that printed it."),
    ] = None,
    counts: Annotated[
        bool, typer.Option("--count", help="Count the matches per saga and status instead.")
    ] = False,
    as_json: AsJson = False,
    as_jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Print one JSON object a line.")
    ] = False,
) -> None:
    """List saga instances, newest first (every filter narrows the list)."""
    now = time.time()
    query = filters.query(now)
    if counts:
        _print_counts(run(_count(db, query, now)), as_json or as_jsonl)
        return
    page = run(_find(db, query, limit, after, now))
    if as_json:
        echo_json([view.as_dict() for view in page.sagas])
    elif as_jsonl:
        for view in page.sagas:
            typer.echo(json.dumps(view.as_dict()))
    elif not page.sagas:
        typer.echo("no sagas match" if filters.any else "no sagas")
    else:
        console = Console()
        if console.is_terminal:
            console.print(_table(page.sagas, now))
        else:
            typer.echo(_plain_table(page.sagas, now))
    if page.next is not None:
        typer.echo(f"more sagas match: add --after {page.next}", err=True)


async def _find(url: str, query: Query, limit: int, after: str | None, now: float) -> Page:
    async with opened(url, create=False) as store:
        return await find(store, query, limit=limit, after=after, now=now)


async def _count(url: str, query: Query, now: float) -> list[Count]:
    async with opened(url, create=False) as store:
        return await count(store, query, now=now)


def _print_counts(counts: list[Count], as_json: bool) -> None:
    if as_json:
        echo_json([{**c._asdict(), "status": c.status.value} for c in counts])
        return
    rows = [["saga", "status", "count"]]
    rows += [[printable(f"{c.name}@{c.version}"), c.status.value, str(c.total)] for c in counts]
    rows.append(["total", "", str(sum(c.total for c in counts))])
    typer.echo(plain_columns(rows))


def _table(views: list[SagaView], now: float) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    longest_id = max(len(view.instance.id) for view in views)
    for heading in _HEADINGS:
        # Never cut the id short: it is what the user copies into `sagakit show`.
        wrap = heading == "next"
        width = min(longest_id, 40) if heading == "id" else None
        table.add_column(heading, no_wrap=not wrap, min_width=width)
    for view in views:
        cells: list[Text] = [Text(cell) for cell in _cells(view, now)]
        cells[2] = status_text(view.state.status) + _resolved(view.state)
        table.add_row(*cells)
    return table


def _plain_table(views: list[SagaView], now: float) -> str:
    """The list as plain text: columns padded to their widest cell, nothing cut or coloured."""
    return plain_columns([_HEADINGS, *(_cells(view, now) for view in views)])


def _cells(view: SagaView, now: float) -> list[str]:
    state = view.state
    return [
        printable(state.id),
        printable(f"{state.name}@{state.version}"),
        state.status.value + _resolved(state),
        _progress(state),
        local_time(state.records[-1].at, _CLOCK),
        _next(view, now),
    ]


def _resolved(state: SagaState) -> str:
    """The mark of a saga an operator finished by hand, apart from one that ended by itself."""
    return ", resolved" if state.resolution is not None else ""


def _progress(state: SagaState) -> str:
    done = sum(s.status is StepStatus.SUCCEEDED for s in state.steps)
    undone = sum(s.status is StepStatus.COMPENSATED for s in state.steps)
    text = f"{done}/{len(state.steps)}"
    return text + (f", {undone} undone" if undone else "")


def _next(view: SagaView, now: float) -> str:
    """What happens to the saga next, and who it waits on: a signal, a worker, a time."""
    instance = view.instance
    if view.state.status.is_terminal:
        return ""
    waiting = view.waiting
    if waiting is not None:
        signal, until = waiting[1]["signal"], waiting[1]["until"]
        text = f"waits for {printable(signal)!r}"
        return text + ("" if until is None else f" until {local_time(until, _CLOCK)}")
    if instance.lease_owner is not None and instance.lease_expires is not None:
        verb = "held by" if instance.lease_expires > now else "lease lapsed:"
        expires = local_time(instance.lease_expires, _CLOCK)
        return f"{verb} {printable(instance.lease_owner)} until {expires}"
    if instance.due_at is not None:
        return "due now" if instance.due_at <= now else f"due {local_time(instance.due_at, _CLOCK)}"
    return "not due"
