"""Which failures of the PostgreSQL saga log's database are an outage, and how each is told.

The one place that decides, for every error asyncpg (or the socket below it) raises, whether
waiting may mend it: the server is restarting, refusing or dropping connections, or did not
answer in time. Those become :class:`~sagakit.errors.StoreUnavailableError`, which workers,
clients and relays wait out. The rest (bad credentials, a database that does not exist, a
statement the server refused) become a plain :class:`~sagakit.errors.StoreError`, which
waiting never mends, so a worker stops on it.

Each is also told in words an operator reads, before the driver's own text: asyncpg's
"cannot switch to state 12" alone says nothing about what happened to which database.
"""

from __future__ import annotations

import socket
import ssl
from typing import NamedTuple

import asyncpg

_SHUTDOWN = {
    "57P01": "the server is shutting down, or ended the session",
    "57P02": "the server crashed and is restarting",
    "57P03": "the server is starting up or shutting down and accepts no connections yet",
}
"""SQLSTATEs of class 57 (operator intervention) that a restart produces."""


class Failure(NamedTuple):
    """What a driver error means: whether waiting may mend it, and what happened."""

    transient: bool
    what: str


def diagnose(error: BaseException) -> Failure:
    """Classify ``error``: SQLSTATE class 08 (connection exceptions) and 57P01-57P03, a
    refused, reset or timed-out socket, and a connection found closed are transient;
    class 28 (authorization), 3D000 (no such database), a host name that does not resolve,
    TLS failures and every other error are not."""
    if isinstance(error, asyncpg.PostgresError):
        return _server_said(error.sqlstate or "")
    if isinstance(error, TimeoutError):  # a command or connect timeout; before OSError
        return Failure(True, "the server did not answer in time")
    if isinstance(error, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return _driver_said(str(error))
    if isinstance(error, OSError):
        return _socket_said(error)
    return Failure(False, "the driver failed")


def _server_said(state: str) -> Failure:
    if state in _SHUTDOWN:
        return Failure(True, _SHUTDOWN[state])
    if state.startswith("08"):
        return Failure(True, "the connection was lost")
    if state.startswith("28"):
        return Failure(False, "the server refused the credentials")
    if state == "3D000":
        return Failure(False, "the database does not exist")
    return Failure(False, f"the server refused the statement (SQLSTATE {state or 'unknown'})")


def _driver_said(text: str) -> Failure:
    """asyncpg's own errors: a connection it already knows is closed ("connection is
    closed"), or whose protocol broke mid-call ("cannot switch to state N"), is an outage
    seen from this side; any other is a misuse that waiting does not mend."""
    if "connection is closed" in text or "connection was closed" in text:
        return Failure(True, "the connection was lost")
    if "cannot switch to state" in text:
        return Failure(True, "the connection broke in the middle of a call")
    return Failure(False, "the driver refused the call")


def _socket_said(error: OSError) -> Failure:
    if isinstance(error, ConnectionRefusedError):
        return Failure(True, "nothing accepts connections there (is the server running?)")
    if isinstance(error, ConnectionError):  # reset, aborted, broken pipe
        return Failure(True, "the connection was lost")
    if isinstance(error, socket.gaierror):
        if error.errno == socket.EAI_AGAIN:
            return Failure(True, "the host name could not be looked up just now")
        return Failure(False, "the host name does not resolve")
    if isinstance(error, ssl.SSLError):
        return Failure(False, "the TLS handshake failed")
    if isinstance(error, FileNotFoundError):  # a Unix socket that is gone while it is down
        return Failure(True, "no server listens on the socket")
    # Unreachable networks, and asyncio's "Multiple exceptions" when every address of the
    # host refused: what a failover looks like from here.
    return Failure(True, "the server cannot be reached")
