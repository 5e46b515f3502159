"""Each choreographed order service as a process of its own, talking to the others by broker.

::

    SAGAKIT_BROKER=redis://:password@127.0.0.1:6379/0 \\
        python -m sagakit.demo.processes payments --dir services/

The broker's URL comes from the environment (``SAGAKIT_BROKER``), not the command line: a
URL may carry a password, and every user of the machine can read a process's arguments
(``ps``), not its environment. ``--broker`` still works for a URL without one.

The process prints ``ready payments`` on stdout once it is subscribed (events published
from then on reach it), and stops cleanly on SIGTERM or SIGINT: running handlers finish,
unhandled events go back to the broker. Killed outright, it loses nothing either: its
unacknowledged events are redelivered, its inbox drops what it had already done, and its
relay publishes what its outbox still holds when it starts again. A broker that cannot be
reached is retried with back-off, and the log names its URL (without the password).

:class:`ServiceProcess` starts and stops such processes, for the demo and the fault tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from sagakit._signals import stop_on_signals
from sagakit.bus import Broker, open_broker
from sagakit.choreography._relay import RELAY_RETRY
from sagakit.demo._choreography import SERVICES, STREAM, build_service
from sagakit.errors import BrokerConnectionError

__all__ = ["ServiceProcess", "ServiceProcessError", "main"]

logger = logging.getLogger("sagakit.demo")

READY = "ready"
BROKER_ENV = "SAGAKIT_BROKER"
"""The variable a service process reads its broker's URL from (as ``sagakit demo`` does)."""


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sagakit.demo.processes",
        description="Run one choreographed order service until SIGTERM.",
    )
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--dir", required=True, help="directory of the services' databases")
    parser.add_argument(
        "--broker",
        default=os.environ.get(BROKER_ENV),
        help=f"redis://, nats:// or amqp:// URL (default: ${BROKER_ENV}, the place for a "
        "URL with a password)",
    )
    parser.add_argument("--stream", default=STREAM)
    parser.add_argument("--redeliver-after", type=float, default=30.0)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--relay-poll", type=float, default=0.5)
    args = parser.parse_args(argv)
    if not args.broker:
        parser.error(f"set {BROKER_ENV} to the broker's URL (or pass --broker)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {args.service}[%(process)d] %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("sagakit").setLevel(logging.INFO)  # the services' lifecycle too
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    """Run the service until a signal; 0 on a clean stop."""
    stop = stop_on_signals()
    broker = await connect_retrying(args.broker, stop, redeliver_after=args.redeliver_after)
    if broker is None:
        return 0
    service = build_service(
        args.service,
        args.dir,
        broker,
        stream=args.stream,
        max_attempts=args.max_attempts,
        concurrency=args.concurrency,
        relay_poll=args.relay_poll,
    )
    try:
        running = asyncio.get_running_loop().create_task(service.run(stop))
        ready = asyncio.ensure_future(service.ready.wait())
        await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
        if service.ready.is_set():
            print(f"{READY} {service.name}", flush=True)
        ready.cancel()
        await running  # which logs what the service did
    finally:
        await service.close()
        await broker.close()
    return 0


async def connect_retrying(
    url: str, stop: asyncio.Event, *, redeliver_after: float = 30.0
) -> Broker | None:
    """Connect to ``url``, retrying with back-off until it answers; None if stopped first."""
    failures = 0
    while not stop.is_set():
        try:
            return await open_broker(url, redeliver_after=redeliver_after)
        except BrokerConnectionError as error:
            failures += 1
            delay = RELAY_RETRY.delay(failures)
            logger.error("%s; again in %.1fs", error, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
    return None


class ServiceProcessError(Exception):
    """A service process did not start; the message ends with its log.

    The demo's own error, not one of sagakit's: the library never starts these processes.
    """


class ServiceProcess:
    """One order service running as a child process; its log goes to ``<dir>/<name>.log``.

    ``broker_url`` reaches the child in its environment, never on its command line.
    """

    def __init__(
        self,
        service: str,
        directory: str | os.PathLike[str],
        broker_url: str,
        *,
        stream: str = STREAM,
        options: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.directory = Path(directory)
        self.broker_url = broker_url
        self.stream = stream
        self.options = list(options)
        self.log_path = self.directory / f"{service}.log"
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    @property
    def argv(self) -> list[str]:
        """The child's command line: no URL, so nothing secret for ``ps`` to show."""
        return [
            sys.executable,
            "-m",
            "sagakit.demo.processes",
            self.service,
            "--dir",
            str(self.directory),
            "--stream",
            self.stream,
            *self.options,
        ]

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it says it is subscribed."""
        self._log = self.log_path.open("ab")  # the child writes its log here until it ends
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, BROKER_ENV: self.broker_url},
        )
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self._process.stdout.readline()
        except TimeoutError:
            self.kill()
            message = f"{self.service} not ready in {timeout:g}s:\n{self.tail()}"
            raise ServiceProcessError(message) from None
        if not line.startswith(READY.encode()):
            raise ServiceProcessError(f"{self.service} did not start:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-whatever, as in a crash."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def wait(self) -> int:
        assert self._process is not None
        code = await self._process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it has not stopped within ``timeout``; the exit code."""
        if self._process is None:
            return 0
        if self._process.returncode is None:
            self._process.terminate()
        try:
            async with asyncio.timeout(timeout):
                return await self.wait()
        except TimeoutError:
            self.kill()
            return await self.wait()

    def tail(self, lines: int = 20) -> str:
        """The end of the process's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


if __name__ == "__main__":
    raise SystemExit(main())
