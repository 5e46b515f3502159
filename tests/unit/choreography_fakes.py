"""Helpers for the choreography tests: a broker that fails on demand, and bounded waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sagakit.bus import Event, Handler, MemoryBroker, Subscription
from sagakit.errors import BrokerConnectionError, EventRejectedError

WAIT = 10.0
"""Seconds any awaited condition may take before the test fails."""


async def eventually(condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
    """Return once ``condition()`` holds, checking each turn of the loop; fail after ``within``."""
    try:
        async with asyncio.timeout(within):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class FlakyBroker(MemoryBroker):
    """``inner`` (a :class:`MemoryBroker`), but its publishes (and subscribes) fail while told to.

    ``lose_acks``: the publish reaches the broker but the caller hears an error, as when
    the connection drops before the broker's confirmation arrives.
    """

    def __init__(self, inner: MemoryBroker) -> None:
        super().__init__(inner.url, redeliver_after=inner.redeliver_after, hub=inner.hub)
        self.inner = inner
        self.down = False
        self.lose_acks = False
        self.refuse: Callable[[Event], bool] = lambda event: False
        self.too_big: Callable[[Event], bool] = lambda event: False
        self.attempts: list[Event] = []
        self.subscribe_failures = 0

    async def publish(self, stream: str, event: Event) -> None:
        self.attempts.append(event)
        if self.down or self.refuse(event):
            raise BrokerConnectionError(self.url, "connection refused")
        if self.too_big(event):
            raise EventRejectedError(f"{self.url}: cannot publish: payload too large")
        await self.inner.publish(stream, event)
        if self.lose_acks:
            raise BrokerConnectionError(self.url, "connection lost before the confirmation")

    async def subscribe(
        self,
        stream: str,
        group: str,
        handler: Handler,
        *,
        max_attempts: int = 5,
        prefetch: int = 10,
    ) -> Subscription:
        if self.subscribe_failures:
            self.subscribe_failures -= 1
            raise BrokerConnectionError(self.url, "connection refused")
        return await self.inner.subscribe(
            stream, group, handler, max_attempts=max_attempts, prefetch=prefetch
        )

    async def close(self) -> None:
        await super().close()
        await self.inner.close()


@asynccontextmanager
async def running(
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
) -> AsyncIterator[asyncio.Event]:
    """Run ``run(stop)`` in a task for the block's life; stop it and await it at the end."""
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
