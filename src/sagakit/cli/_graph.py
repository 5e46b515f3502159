"""``sagakit graph``: a saga drawn as a Mermaid flowchart, plain text on stdout.

``sagakit graph app:order > order.mmd`` draws the definitions a ``module:attribute``
reference leads to: what ``sagakit worker --app`` accepts (a saga, a list or tuple of them,
or a callable returning either), and choreographies too, which ``load_sagas`` does not
take, so the reference is followed here the same way. ``sagakit graph --db URL ID`` draws
one instance from its log, each step in its status's colour. Only an explicit ``--db``
selects an instance (``$SAGAKIT_DB`` does not), so the one argument means one thing
whatever the environment holds.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from sagakit._graph import Definition, definition_graph, instance_graph
from sagakit._timeline import printable
from sagakit.choreography import Choreography
from sagakit.cli._common import app, fail, opened, run
from sagakit.errors import AppReferenceError, UnknownSagaError
from sagakit.log import SagaState
from sagakit.orchestration import Saga, load_definitions
from sagakit.store import StoredSaga


@app.command()
def graph(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR|ID",
            help="Saga definitions to draw, or with --db one instance's id.",
        ),
    ],
    db: Annotated[
        str | None,
        typer.Option("--db", help="Draw the instance ID from this saga log instead."),
    ] = None,
) -> None:
    """Print a saga as a Mermaid flowchart: a definition's steps, or one instance's."""
    if db is not None:
        stored = run(_load(db, target))
        typer.echo(instance_graph(SagaState.from_records(target, stored.records)), nl=False)
        return
    if os.getcwd() not in sys.path:  # as `sagakit worker` does: the user's modules import
        sys.path.insert(0, os.getcwd())
    try:
        found = definitions(target)
    except AppReferenceError as error:
        fail(printable(str(error)), 2)
    typer.echo(definition_graph(found), nl=False)


async def _load(url: str, saga_id: str) -> StoredSaga:
    async with opened(url, create=False) as store:
        stored = await store.load(saga_id)
    if stored is None:
        raise UnknownSagaError(saga_id)
    return stored


def definitions(reference: str) -> list[Definition]:
    """The sagas and choreographies ``reference`` (``package.module:attribute``) points at."""
    kinds: tuple[type[Definition], ...] = (Saga, Choreography)
    return load_definitions(reference, kinds, "a Saga or a Choreography")
