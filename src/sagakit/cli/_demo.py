"""``sagakit demo``: the order saga's scenarios, orchestrated or choreographed."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from sagakit.cli._common import (
    DEFAULT_DB,
    Db,
    app,
    fail,
    run,
)

# --------------------------------------------------------------------------- demo


class Flavor(StrEnum):
    """The two ways to run a saga (see the source document's "Two Flavors of Sagas")."""

    ORCHESTRATION = "orchestration"
    CHOREOGRAPHY = "choreography"


@app.command()
def demo(
    db: Db = DEFAULT_DB,
    flavor: Annotated[
        Flavor,
        typer.Option(
            "--flavor",
            case_sensitive=False,
            help="orchestration: an engine drives the order saga; choreography: four services "
            "react to each other's events over a broker.",
        ),
    ] = Flavor.ORCHESTRATION,
    broker: Annotated[
        str,
        typer.Option(
            "--broker",
            envvar="SAGAKIT_BROKER",
            help="Choreography's broker: memory:// (services as tasks of this process), or "
            "redis://, nats://, amqp:// (each service a process of its own).",
        ),
    ] = "memory://",
) -> None:
    """Run the order saga's scenarios and print each saga's timeline."""
    if flavor is Flavor.ORCHESTRATION:
        if broker != "memory://":
            fail("--broker is for --flavor choreography (orchestration needs no broker)", 2)
        from sagakit.demo import run_demo

        raise typer.Exit(run(run_demo(db, Console())))
    from sagakit.demo import run_choreography_demo

    raise typer.Exit(run(run_choreography_demo(db, broker, Console())))
