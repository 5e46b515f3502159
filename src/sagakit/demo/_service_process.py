"""A choreographed order service started as a child process, and stopped, by its parent.

For the demo and the fault tests. Apart from :mod:`.processes`, the child's entry point, so
that ``python -m sagakit.demo.processes`` does not find itself imported by its own package.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from sagakit.demo._choreography import STREAM

READY = "ready"
BROKER_ENV = "SAGAKIT_BROKER"
"""The variable a service process reads its broker's URL from (as ``sagakit demo`` does)."""


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
