"""``sagakit``: the operator's command line over a saga log.

Every command opens the store named by ``--db`` (default ``$SAGAKIT_DB``, else
``sqlite:///sagakit.db``) and closes it before exiting. Mistakes in what the user typed end
with one ``error: ...`` line on stderr, never a traceback: exit 1 for errors sagakit reports
(unknown saga id, unsupported database, schema too new), 2 for bad usage (``--app``,
``--status``). The commands live in a module per role; importing them registers them.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

from sagakit.cli import (
    _demo,
    _graph,
    _list,
    _operate,
    _outbox,
    _show,
    _ui,
    _upgrade,
    _versions,
    _work,
)
from sagakit.cli._common import app

__all__ = ["app", "main"]
_COMMANDS = (_demo, _graph, _list, _operate, _outbox, _show, _ui, _upgrade, _versions, _work)


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
