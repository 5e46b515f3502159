"""Stopping long-running commands cleanly on SIGINT and SIGTERM.

``sagakit worker`` and a demo service process (``python -m sagakit.demo.processes``) run
until they are told to stop. Killing them mid-await would leave the saga log's or the
service database's connection open and a broker subscription half torn down; instead a
signal sets an event, the command winds down (running steps and handlers finish), closes its
store or broker, and exits 0. One function here so both stop the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT and SIGTERM set; call it from the running event loop.

    Not on Windows, nor outside the main thread (the loop cannot handle signals there):
    there the event is never set by a signal, and Ctrl-C still interrupts as usual.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    return stop
