"""Broker servers of a test's own, on free ports, that the test may kill and restart.

The machine's shared servers must not be restarted (other tests use them), so a fault test
starts its own: ``redis-server`` with an fsync-always append-only file, ``nats-server`` with
JetStream in a directory, and a RabbitMQ node with its own name, ports and database (on
the machine's ``epmd``). Each keeps its data in the test's directory, so a restart finds
what the broker had acknowledged, as a production restart would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import IO

from sagakit import Retry
from sagakit.bus import open_broker
from sagakit.bus.nats_jetstream import NatsJetStreamBroker
from sagakit.errors import BrokerError

START_TIMEOUT = 60.0
"""A RabbitMQ node takes about 10 s to boot on a 2-core machine; leave room for a slow one."""
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The node itself, not /usr/sbin's wrapper, which would switch to the rabbitmq user."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateServer:
    """One broker server process (and its process group), its port and its data directory."""

    scheme = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    async def start(self) -> None:
        """Start the server and return once it serves requests."""
        self._log = (self.directory / "server.log").open("ab")
        self._process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdout=self._log,
            stderr=self._log,
            env=self.environment(),
            start_new_session=True,  # its own process group: a kill reaches its children
            cwd=self.directory,
        )
        await self._until_ready()

    async def _until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                await self.probe()
                return
            except (BrokerError, OSError) as error:
                if self._process is not None and self._process.returncode is not None:
                    raise RuntimeError(f"{self.url} exited: {self.tail()}") from error
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.url} not up in {START_TIMEOUT:g}s") from error
                await asyncio.sleep(0.1)

    async def probe(self) -> None:
        broker = await open_broker(self.url, retry=Retry(attempts=1))
        await broker.close()

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the server with ``sig`` (SIGKILL after 30 s) and wait until it is gone."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(ProcessLookupError):  # leftovers of the group (helpers)
            os.killpg(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()

    async def restart(self, sig: signal.Signals = signal.SIGTERM) -> float:
        """Stop and start again on the same port and data; the seconds it was away."""
        began = time.monotonic()
        await self.stop(sig)
        await self.start()
        self.restarts += 1
        return time.monotonic() - began

    def tail(self, lines: int = 15) -> str:
        text = (self.directory / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class PrivateRedis(PrivateServer):
    scheme = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip


class PrivateNats(PrivateServer):
    scheme = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        store = self.directory / "jetstream"
        return ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]

    async def probe(self) -> None:
        broker = await open_broker(self.url, retry=Retry(attempts=1))
        try:
            assert isinstance(broker, NatsJetStreamBroker)
            await broker.jetstream.account_info()  # JetStream, not only the server, is up
        except Exception as error:
            raise BrokerError(f"JetStream not ready: {error!r}") from error
        finally:
            await broker.close()


class PrivateRabbitMQ(PrivateServer):
    scheme = "amqp"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.distribution_port = free_port()
        self.node = f"sagakit{self.port}@localhost"
        (directory / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "env.conf").write_text("")
        for sub in ("mnesia", "log"):
            (directory / sub).mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return [RABBITMQ_SERVER]

    def environment(self) -> dict[str, str]:
        here = self.directory
        return {
            **os.environ,
            "HOME": str(here),  # its own Erlang cookie
            "RABBITMQ_CONF_ENV_FILE": str(here / "env.conf"),  # not the machine node's
            "RABBITMQ_CONFIG_FILE": str(here / "rabbitmq.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.distribution_port),
            "RABBITMQ_MNESIA_BASE": str(here / "mnesia"),
            "RABBITMQ_LOG_BASE": str(here / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(here / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(here / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }


SERVERS: dict[str, type[PrivateServer]] = {
    "redis": PrivateRedis,
    "nats": PrivateNats,
    "rabbitmq": PrivateRabbitMQ,
}
