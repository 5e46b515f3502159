"""``sagakit versions``: per saga version, how many instances are in flight and which live
workers serve it. A rolling deploy retires an old version's last worker once its row says
nothing is in flight."""

from __future__ import annotations

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from sagakit._timeline import printable
from sagakit.cli._common import DEFAULT_DB, AsJson, Db, app, echo_json, opened, plain_columns, run
from sagakit.operations import VersionInfo, versions


@app.command("versions")
def list_versions(db: Db = DEFAULT_DB, as_json: AsJson = False) -> None:
    """Per saga version: instances in flight and by status, and the live workers serving it."""
    found = run(_versions(db))
    if as_json:
        echo_json([info.as_dict() for info in found])
        return
    if not found:
        typer.echo("no sagas and no live workers")
        return
    rows = [_cells(info) for info in found]
    console = Console()
    if console.is_terminal:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for heading in _HEADINGS:
            table.add_column(heading, no_wrap=heading in ("saga", "in flight"))
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        typer.echo(plain_columns([_HEADINGS, *rows]))


_HEADINGS = ["saga", "in flight", "statuses", "live workers"]


async def _versions(url: str) -> list[VersionInfo]:
    async with opened(url, create=False) as store:
        return await versions(store)


def _cells(info: VersionInfo) -> list[str]:
    statuses = ", ".join(f"{status.value} {n}" for status, n in sorted(info.statuses.items()))
    workers = ", ".join(info.workers) if info.workers else "none"
    if info.stranded:
        workers += " (in flight, nobody to drive it)"
    return [printable(info.key), str(info.in_flight), statuses, printable(workers)]
