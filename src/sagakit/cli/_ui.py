"""``sagakit ui``: the web dashboard over a saga log (the ``ui`` extra).

The dashboard's packages (FastAPI, Jinja2, uvicorn) are imported only here, when the
command runs, so the core install keeps its size and its start-up time; without them the
command says which extra to install. The socket is bound and listening before the command
says where it serves, so whatever reads that line (a person, a test, a supervisor) can
connect at once. The token comes from ``--token`` or, better (``ps`` shows a command line
to every user of the machine), from ``$SAGAKIT_UI_TOKEN``; it is never printed.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer

from sagakit._urls import redact
from sagakit.cli._common import DEFAULT_DB, Db, app, fail, opened, run

_EXTRA = frozenset({"fastapi", "jinja2", "uvicorn", "starlette", "pydantic"})
"""The modules the ``ui`` extra brings (and its own dependencies)."""
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@app.command()
def ui(
    db: Db = DEFAULT_DB,
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on (this machine only by default).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one).")
    ] = 8377,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="SAGAKIT_UI_TOKEN",
            show_default=False,
            help="What a person or a script must show to act (better passed in the "
            "environment); without one the dashboard is read-only.",
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Serve reads only: every action is refused.")
    ] = False,
    mermaid_js: Annotated[
        Path | None,
        typer.Option(
            "--mermaid-js",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            help="A local copy of mermaid.js, to draw the flowcharts (none is fetched).",
        ),
    ] = None,
) -> None:
    """Serve the web dashboard: overview, every saga and its log, and operator actions."""
    try:
        import uvicorn

        from sagakit.dashboard import create_app
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in _EXTRA:
            raise
        fail("the dashboard needs pip install 'sagakit[ui]'", 1)
    run(_check(db))
    sock = _listen(host, port)
    local = _loopback(host)
    served = create_app(
        db,
        token=token or None,
        read_only=read_only,
        mermaid_js=mermaid_js,
        allowed_hosts=[*_LOOPBACK_NAMES, "[::1]"] if local else None,
    )
    mode = "read-only" if read_only or not token else "actions need the token"
    where = f"http://{_url_host(host)}:{sock.getsockname()[1]}"
    typer.echo(f"sagakit ui: serving {redact(db)} on {where} ({mode}); Ctrl-C stops it")
    if not local:
        typer.echo(
            f"warning: {host} serves beyond this machine: whoever reaches it reads every saga",
            err=True,
        )
    config = uvicorn.Config(served, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


async def _check(url: str) -> None:
    """Open the saga log once, so a wrong URL is one ``error:`` line before serving."""
    async with opened(url, create=False):
        pass


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        fail(f"cannot serve on {host}:{port}: {error.strerror or error}", 1)
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
