"""An in-process broker with the semantics of the real ones, for tests and the demo.

It keeps groups, delivery counts, redelivery of what a dead consumer held (after
``redeliver_after`` seconds) and dead letters, so code tested against it behaves the same on
Redis, NATS or RabbitMQ. Brokers made with :meth:`MemoryBroker.sibling` share one "server",
like two processes connected to the same broker. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sagakit._retry import Retry
from sagakit.bus._broker import MAX_EVENT_BYTES, Broker
from sagakit.bus._consumer import Incoming, Receiver
from sagakit.bus._delivery import DeadLetter

__all__ = ["MemoryBroker"]


@dataclass
class _Held:
    consumer: object
    since: float
    count: int


@dataclass
class _Group:
    next: int
    ready: deque[int] = field(default_factory=deque)
    held: dict[int, _Held] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)


@dataclass
class _Stream:
    log: list[bytes] = field(default_factory=list)
    groups: dict[str, _Group] = field(default_factory=dict)
    dead: list[bytes] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """Wake every consumer waiting on this stream (they re-check what is ready)."""
        self.wakeup.set()
        self.wakeup = asyncio.Event()


class MemoryHub:
    """The state of one in-memory "server": streams, their groups and dead letters."""

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}

    def stream(self, name: str) -> _Stream:
        """The stream called ``name``, made on first use."""
        return self.streams.setdefault(name, _Stream())

    def append(self, name: str, data: bytes) -> None:
        """Add a raw message to a stream (what a publisher, or a foreign producer, does)."""
        stream = self.stream(name)
        stream.log.append(data)
        stream.wake()


class MemoryBroker(Broker):
    """The in-process broker behind ``memory://``."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        redeliver_after: float = 30.0,
        retry: Retry | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        hub: MemoryHub | None = None,
    ) -> None:
        super().__init__(
            url, redeliver_after=redeliver_after, retry=retry, max_event_bytes=max_event_bytes
        )
        self.hub = hub or MemoryHub()

    def sibling(self) -> MemoryBroker:
        """Another broker on the same hub, as another process on the same server."""
        return MemoryBroker(
            self._raw_url,
            redeliver_after=self.redeliver_after,
            retry=self.retry,
            max_event_bytes=self.max_event_bytes,
            hub=self.hub,
        )

    async def _connect(self) -> None:
        return None

    async def _publish(self, stream: str, data: bytes, key: str) -> None:
        self.hub.append(stream, data)

    async def _receiver(self, stream: str, group: str, prefetch: int) -> Receiver:
        state = self.hub.stream(stream)
        if group not in state.groups:
            state.groups[group] = _Group(next=len(state.log))
        return _MemoryReceiver(state, state.groups[group], prefetch, self.redeliver_after)

    async def _dead(self, stream: str) -> list[DeadLetter]:
        state = self.hub.streams.get(stream)
        return [DeadLetter.from_json(data) for data in state.dead] if state else []

    async def _delete(self, stream: str, groups: Sequence[str]) -> None:
        self.hub.streams.pop(stream, None)

    async def _disconnect(self) -> None:
        return None

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        return ()

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return ()


class _MemoryReceiver:
    def __init__(self, stream: _Stream, group: _Group, prefetch: int, expiry: float) -> None:
        self._stream = stream
        self._group = group
        self._prefetch = prefetch
        self._expiry = expiry
        self.touch_every: float | None = expiry / 3

    async def fetch(self, timeout: float) -> Sequence[Incoming]:
        deadline = time.monotonic() + timeout
        while True:
            batch = self._take()
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                return batch
            wakeup = self._stream.wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self._until_expiry())):
                    await wakeup.wait()

    def _take(self) -> list[Incoming]:
        group, now = self._group, time.monotonic()
        for index, held in list(group.held.items()):
            if now - held.since >= self._expiry:
                del group.held[index]
                group.ready.append(index)
        taken: list[Incoming] = []
        while len(taken) < self._prefetch and (group.ready or group.next < len(self._stream.log)):
            if group.ready:
                index = group.ready.popleft()
            else:
                index, group.next = group.next, group.next + 1
            count = group.counts.get(index, 0) + 1
            group.counts[index] = count
            group.held[index] = _Held(self, now, count)
            taken.append(Incoming(self._stream.log[index], count, index))
        return taken

    def _until_expiry(self) -> float:
        oldest = min((h.since for h in self._group.held.values()), default=None)
        if oldest is None:
            return self._expiry
        return max(0.0, oldest + self._expiry - time.monotonic())

    async def ack(self, message: Incoming) -> None:
        self._group.held.pop(message.token, None)
        self._group.counts.pop(message.token, None)

    async def retry(self, message: Incoming) -> None:
        if self._group.held.pop(message.token, None) is not None:
            self._group.ready.appendleft(message.token)
            self._stream.wake()

    async def bury(self, message: Incoming, letter: DeadLetter) -> None:
        self._stream.dead.append(letter.to_json())
        await self.ack(message)

    async def touch(self, message: Incoming) -> None:
        held = self._group.held.get(message.token)
        if held is not None and held.consumer is self:
            held.since = time.monotonic()

    async def stop(self) -> None:
        mine = [i for i, held in self._group.held.items() if held.consumer is self]
        for index in mine:
            del self._group.held[index]
        self._group.ready.extendleft(reversed(mine))
        if mine:
            self._stream.wake()
