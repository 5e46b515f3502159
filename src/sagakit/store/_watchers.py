"""Waiting for an instance to change, for the stores' ``changed``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Watchers:
    """The callers waiting for news of each instance; a store wakes them when it writes
    (and, on PostgreSQL, when a NOTIFY says another process did)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    @contextlib.contextmanager
    def watch(self, saga_id: str) -> Iterator[asyncio.Future[None]]:
        """A future woken by the next change of ``saga_id``, registered while in the block."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(saga_id, []).append(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiting.get(saga_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(saga_id, None)

    async def wait(self, saga_id: str, timeout: float) -> None:
        """Return on the next change of ``saga_id`` or after ``timeout`` seconds."""
        with self.watch(saga_id) as waiter, contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await waiter

    def wake(self, saga_id: str) -> None:
        for waiter in self._waiting.pop(saga_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def wake_all(self) -> None:
        for saga_id in list(self._waiting):
            self.wake(saga_id)
