"""``sagakit show``: one saga instance's whole story."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sagakit._timeline import render_timeline
from sagakit.cli._common import DEFAULT_DB, AsJson, Db, app, echo_json, opened, run
from sagakit.errors import UnknownSagaError
from sagakit.log import SagaState


async def _state(url: str, saga_id: str) -> SagaState:
    async with opened(url, create=False) as store:
        stored = await store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        return SagaState.from_records(saga_id, stored.records)


@app.command()
def show(
    saga_id: Annotated[str, typer.Argument(metavar="ID", help="The saga instance's id.")],
    db: Db = DEFAULT_DB,
    as_json: AsJson = False,
) -> None:
    """Show one saga instance: its steps and the timeline of its log."""
    state = run(_state(db, saga_id))
    if as_json:
        echo_json(state.as_dict())
    else:
        Console().print(render_timeline(state))
