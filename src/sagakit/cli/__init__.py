"""``sagakit``: the operator's command line over a saga log (see :mod:`sagakit.cli._app`)."""

from sagakit.cli._app import app, main

__all__ = ["app", "main"]
