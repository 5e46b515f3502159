"""Waiting for an instance to change, for the stores' ``watch``.

A watch is registered for as long as its block runs, not just while someone awaits it, so a
change made between two waits (while the caller looks at what changed) is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Watched:
    """One registered watch: :meth:`wait` returns at the first change since the watch began
    or since the previous ``wait`` returned, or after its timeout (a :class:`Watch`)."""

    __slots__ = ("_changed", "_poll")

    def __init__(self, poll: float | None) -> None:
        self._changed = asyncio.Event()
        self._poll = poll

    def wake(self) -> None:
        self._changed.set()

    async def wait(self, timeout: float) -> None:
        if self._poll is not None:
            timeout = min(timeout, self._poll)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        self._changed.clear()


class Watchers:
    """The watches on each instance; a store wakes them when it writes (and, on PostgreSQL,
    when a NOTIFY says another process did).

    ``poll`` caps every wait, for a store that cannot be told of other processes' changes
    and so must look again that often.
    """

    def __init__(self, poll: float | None = None) -> None:
        self._watching: dict[str, set[Watched]] = {}
        self._poll = poll

    def __bool__(self) -> bool:
        return bool(self._watching)

    @contextlib.asynccontextmanager
    async def watch(self, saga_id: str) -> AsyncIterator[Watched]:
        """A watch on ``saga_id``, registered from entering the block to leaving it."""
        watched = Watched(self._poll)
        self._watching.setdefault(saga_id, set()).add(watched)
        try:
            yield watched
        finally:
            watching = self._watching[saga_id]
            watching.discard(watched)
            if not watching:
                del self._watching[saga_id]

    def wake(self, saga_id: str) -> None:
        for watched in self._watching.get(saga_id, ()):
            watched.wake()

    def wake_all(self) -> None:
        for watching in self._watching.values():
            for watched in watching:
                watched.wake()
