"""The servers the suites talk to, and whether each is up.

A test that needs one is marked with its name (``@pytest.mark.postgres``, or a module's
``pytestmark``). Locally a server that is down skips its tests, so a laptop without NATS can
still run the rest; in CI (``CI`` set) it fails them, so a missing service is never a green
run that tested nothing.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

POSTGRES = os.environ.get("SAGAKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The machine's PostgreSQL; every log made on it is a schema of its own, so runs never
collide, and it is dropped when the test ends."""
REDIS = os.environ.get("SAGAKIT_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS = os.environ.get("SAGAKIT_NATS_URL", "nats://127.0.0.1:4222")
AMQP = os.environ.get("SAGAKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MARIADB = os.environ.get("SAGAKIT_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test")

SERVERS = {
    "postgres": (POSTGRES, 5432),
    "redis": (REDIS, 6379),
    "nats": (NATS, 4222),
    "rabbitmq": (AMQP, 5672),
    "mariadb": (MARIADB, 3306),
}
"""Marker name: (URL, the scheme's default port)."""


@functools.cache
def reachable(name: str) -> str | None:
    """None if the server accepts a TCP connection, else why not (checked once a run)."""
    url, default_port = SERVERS[name]
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        with socket.create_connection(address, timeout=3.0):
            return None
    except OSError as error:
        return f"{name} is not reachable at {address[0]}:{address[1]}: {error}"


async def drop_schema(name: str) -> None:
    """Drop the PostgreSQL schema a test made (if it made one), with all it holds."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()
