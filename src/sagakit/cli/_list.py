"""``sagakit list``: find saga instances."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sagakit._timeline import local_time, printable, status_text
from sagakit.cli._common import (
    DEFAULT_DB,
    AsJson,
    Db,
    app,
    echo_json,
    opened,
    parse_status,
    run,
)
from sagakit.log import SagaState, SagaStatus, StepStatus


async def _states(url: str, status: SagaStatus | None, limit: int) -> list[SagaState]:
    async with opened(url, create=False) as store:
        states = []
        for instance in await store.instances(status, limit):
            stored = await store.load(instance.id)
            if stored is not None:
                states.append(SagaState.from_records(instance.id, stored.records))
        return states


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
    wanted = parse_status(status)
    states = run(_states(db, wanted, limit))
    if as_json:
        echo_json([state.as_dict(events=False) for state in states])
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
