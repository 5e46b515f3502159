"""``sagakit show``: one saga instance's whole story, and with ``--follow`` the rest of it
as it happens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.text import Text

from sagakit._timeline import event_line, printable, render_timeline
from sagakit.cli._common import DEFAULT_DB, AsJson, Db, app, echo_json, fail, opened, run
from sagakit.errors import UnknownSagaError
from sagakit.log import Instance, SagaState
from sagakit.orchestration import idempotency_key
from sagakit.store import Store, StoredSaga

FOLLOW_CHECK = 60.0
"""Longest wait between two looks at a followed saga: a store's watch wakes the follower at
each change (and polls for other processes' where it must), so this is only a backstop."""


async def _stored(store: Store, saga_id: str) -> StoredSaga:
    stored = await store.load(saga_id)
    if stored is None:
        raise UnknownSagaError(saga_id)
    return stored


async def _load(url: str, saga_id: str) -> StoredSaga:
    async with opened(url, create=False) as store:
        return await _stored(store, saga_id)


async def follow(
    store: Store,
    saga_id: str,
    story: Callable[[RenderableType], None],
    line: Callable[[Text], None],
    note: Callable[[str], None],
) -> SagaState:
    """Hand ``story`` the saga's story, then, unless it has ended, ``note`` that it is being
    followed and ``line`` each record as it lands, until it ends; returns its final state.

    The watch is entered before the first load, so a record appended in between is not
    missed, and each wake-up prints only the records not printed yet.
    """
    async with store.watch(saga_id) as change:
        stored = await _stored(store, saga_id)
        state = SagaState.from_records(saga_id, stored.records)
        story(render_timeline(state, stored.instance, idempotency_key))
        start = state.records[0].at if state.records else 0.0
        if not state.status.is_terminal:
            note(f"following {saga_id} until it ends (Ctrl-C to stop)")
        while not state.status.is_terminal:
            await change.wait(FOLLOW_CHECK)
            for record in (await _stored(store, saga_id)).records[len(state.records) :]:
                state.apply(record)
                line(event_line(record, start, state.redaction))
        return state


async def _follow(url: str, saga_id: str, console: Console) -> None:
    def line(text: Text) -> None:
        if console.is_terminal:
            console.print(text, soft_wrap=True)  # one line, however wide: the terminal folds it
        else:  # piped: plain, one record a line, for grep
            typer.echo(text.plain)

    def note(text: str) -> None:  # on stderr: what is piped stays the saga's records alone
        typer.echo(printable(text), err=True)

    async with opened(url, create=False) as store:
        await follow(store, saga_id, console.print, line, note)


def _schedule(instance: Instance) -> dict[str, object]:
    """The instance row's facts the log does not have, for ``--json``."""
    return {
        "lease_owner": instance.lease_owner,
        "lease_expires": instance.lease_expires,
        "due_at": instance.due_at,
    }


@app.command()
def show(
    saga_id: Annotated[str, typer.Argument(metavar="ID", help="The saga instance's id.")],
    db: Db = DEFAULT_DB,
    as_json: AsJson = False,
    follow_it: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Then print each new record as it lands, until the saga ends."
        ),
    ] = False,
) -> None:
    """Show one saga instance: its steps, every attempt, and the timeline of its log."""
    if follow_it:
        if as_json:
            fail("--follow prints the story as it happens; it has no --json form", 2)
        try:
            run(_follow(db, saga_id, Console()))
        except KeyboardInterrupt:  # Ctrl-C is how a follower stops early: no traceback
            raise typer.Exit(130) from None
        return
    stored = run(_load(db, saga_id))
    state = SagaState.from_records(saga_id, stored.records)
    if as_json:
        echo_json({**state.as_dict(), **_schedule(stored.instance)})
    else:
        Console().print(render_timeline(state, stored.instance, idempotency_key))
