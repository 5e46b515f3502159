"""``sagakit upgrade-saga``: move one in-flight saga to a newer version of its definition.

Not ``sagakit migrate-saga``: ``sagakit migrate`` upgrades the saga log's schema, and a
command one suffix away from it, doing something else to the same database, invites the
wrong one in a hurry. "Upgrade" also says the one direction allowed: to a newer version.
The definitions come from ``--app``, loaded as ``sagakit worker`` loads them, and the version
asked for is picked among them; :meth:`~sagakit.Client.migrate` decides and records.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from sagakit._timeline import printable
from sagakit.cli._common import DEFAULT_DB, By, Db, app, fail, opened, run
from sagakit.cli._operate import SagaId
from sagakit.errors import AppReferenceError
from sagakit.orchestration import Client, Saga, load_sagas


@app.command("upgrade-saga")
def upgrade_saga(
    saga_id: SagaId,
    app_ref: Annotated[
        str,
        typer.Option("--app", metavar="MODULE:ATTR", help="Your sagas, as the worker loads them."),
    ],
    to_version: Annotated[
        int, typer.Option("--to-version", metavar="N", min=1, help="The version to move to.")
    ],
    note: Annotated[str, typer.Option("--note", help="Why it moves, for the log.")],
    renames: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="OLD=NEW",
            help="A step done, renamed in the new version (repeatable).",
        ),
    ] = None,
    db: Db = DEFAULT_DB,
    by: By = None,
) -> None:
    """Move an unfinished saga nobody drives to a newer version, at a step boundary.

    The steps it has done stay done (their results carry over); the new version's steps
    run from there, by its workers. Refused, with nothing recorded, when a call is in
    flight, the saga compensates, or the steps done do not map onto the new version.
    """
    if os.getcwd() not in sys.path:  # as `sagakit worker` does: the user's modules import
        sys.path.insert(0, os.getcwd())
    try:
        sagas = load_sagas(app_ref)
    except AppReferenceError as error:
        fail(str(error), 2)
    map_steps = _map(renames or [])
    moved = run(_upgrade(db, saga_id, app_ref, sagas, to_version, map_steps, note, by))
    typer.echo(f"{printable(saga_id)}: {printable(moved)}; a worker of that version carries it on")


def _map(renames: list[str]) -> dict[str, str]:
    """``--map old=new`` options as the map ``Client.migrate`` takes."""
    found: dict[str, str] = {}
    for rename in renames:
        old, equals, new = rename.partition("=")
        if not equals or not old or not new:
            fail(f"--map must look like OLD=NEW, not {printable(rename)!r}", 2)
        if old in found:
            fail(f"--map names step {printable(old)!r} twice", 2)
        found[old] = new
    return found


async def _upgrade(
    url: str,
    saga_id: str,
    app_ref: str,
    sagas: list[Saga],
    version: int,
    map_steps: dict[str, str],
    note: str,
    by: str | None,
) -> str:
    """Migrate the saga to the definition ``--app`` has of its name at ``version``; what
    was done, as a phrase."""
    async with opened(url, create=False) as store:
        client = Client(store)
        state = await client.state(saga_id)
        target = next((s for s in sagas if (s.name, s.version) == (state.name, version)), None)
        if target is None:
            keys = ", ".join(s.key for s in sagas)
            fail(f"{app_ref} has no {printable(state.name)}@{version} (it has {keys})", 2)
        await client.migrate(saga_id, target, map_steps=map_steps, note=note, by=by)
        return f"moved from {target.name}@{state.version} to {target.key}"
