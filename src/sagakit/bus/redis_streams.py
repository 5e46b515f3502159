"""Redis Streams: a stream key per sagakit stream, a consumer group per service.

Layout: events are entries ``{"event": <json>}`` of the stream ``sagakit:<stream>``; dead
letters are entries ``{"dead": <json>}`` of ``sagakit:<stream>.dead``. A group is created
at the stream's end (``XGROUP CREATE ... $``). Consumers read with ``XREADGROUP`` and
acknowledge with ``XACK``; before each read they take over entries other consumers have held
for ``redeliver_after`` seconds (``XAUTOCLAIM``), which is how a dead consumer's events and
failed events come back, with Redis counting the deliveries. A failed event is handed back
by marking it idle (``XCLAIM ... IDLE``), so any consumer of the group retries it next.

Durability is Redis's: ``publish`` returns once Redis has the entry in memory, and it
survives a restart as far as the server's ``appendfsync`` setting makes it. Streams are not
trimmed: an operator trims them (``XTRIM``) once every group is past old entries.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sagakit.bus._broker import Broker
from sagakit.bus._consumer import Incoming, Receiver
from sagakit.bus._delivery import DeadLetter
from sagakit.errors import MissingBrokerDriverError

__all__ = ["RedisStreamsBroker"]

if TYPE_CHECKING:
    from redis.asyncio import Redis

EVENT_FIELD = b"event"
DEAD_FIELD = b"dead"


def stream_key(stream: str) -> str:
    """The Redis key holding ``stream``'s events."""
    return f"sagakit:{stream}"


def dead_key(stream: str) -> str:
    """The Redis key holding ``stream``'s dead letters."""
    return f"sagakit:{stream}.dead"


class RedisStreamsBroker(Broker):
    """The broker behind ``redis://host:port/db`` (``rediss://`` for TLS)."""

    _client: Redis | None = None

    async def _connect(self) -> None:
        try:
            from redis.asyncio import Redis
        except ImportError as exc:
            raise MissingBrokerDriverError("redis", "redis", "redis") from exc
        if self._client is None:
            self._client = Redis.from_url(self._raw_url, socket_connect_timeout=5)
        await self._client.ping()

    @property
    def client(self) -> Redis:
        """The redis-py client (connected by :func:`sagakit.bus.open_broker`)."""
        assert self._client is not None, "connect() first"
        return self._client

    async def _publish(self, stream: str, data: bytes, key: str) -> None:
        await self.client.xadd(stream_key(stream), {EVENT_FIELD: data})

    async def _receiver(self, stream: str, group: str, prefetch: int) -> Receiver:
        receiver = _RedisReceiver(self.client, stream, group, prefetch, self.redeliver_after)
        await receiver.create_group()
        return receiver

    async def _dead(self, stream: str) -> list[DeadLetter]:
        entries = await self.client.xrange(dead_key(stream)) or []
        letters = []
        for _, fields in entries:
            data = (fields or {}).get(DEAD_FIELD)
            letters.append(DeadLetter.from_json(data if isinstance(data, bytes) else repr(fields)))
        return letters

    async def _delete(self, stream: str, groups: Sequence[str]) -> None:
        await self.client.delete(stream_key(stream), dead_key(stream))  # the groups with it

    async def _disconnect(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        from redis.exceptions import ConnectionError, TimeoutError

        return (ConnectionError, TimeoutError, OSError)

    def _rejections(self) -> tuple[type[BaseException], ...]:
        from redis.exceptions import ResponseError

        return (ResponseError,)  # the server refused the command (WRONGTYPE, OOM), not the link

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        from redis.exceptions import RedisError

        return (RedisError,)


class _RedisReceiver:
    def __init__(
        self, client: Redis, stream: str, group: str, prefetch: int, redeliver_after: float
    ) -> None:
        self._client = client
        self._key = stream_key(stream)
        self._dead_key = dead_key(stream)
        self._group = group
        self._name = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        self._prefetch = prefetch
        self._idle_ms = int(redeliver_after * 1000)
        self._cursor: bytes | str = "0-0"
        self.touch_every: float | None = redeliver_after / 3

    async def create_group(self) -> None:
        """Create the group at the stream's end, unless it exists (one per service)."""
        from redis.exceptions import ResponseError

        try:
            await self._client.xgroup_create(self._key, self._group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def fetch(self, timeout: float) -> Sequence[Incoming]:
        from redis.exceptions import ResponseError

        try:
            claimed = await self._claim()
            if claimed:
                return claimed
            reply: Any = await self._client.xreadgroup(
                self._group,
                self._name,
                {self._key: ">"},
                count=self._prefetch,
                block=max(1, int(timeout * 1000)),
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.create_group()  # the stream was deleted under us: start again
            return []
        return [_incoming(i, fields, 1) for _, entries in reply or [] for i, fields in entries]

    async def _claim(self) -> list[Incoming]:
        """Take over entries idle for ``redeliver_after``: failed, or held by the dead."""
        reply = await self._client.xautoclaim(
            self._key,
            self._group,
            self._name,
            self._idle_ms,
            start_id=self._cursor,
            count=self._prefetch,
        )
        self._cursor, entries = reply[0], reply[1]
        found = []
        for entry_id, fields in entries:
            if fields is not None:  # Redis 6.2 lists deleted entries as nil
                found.append(_incoming(entry_id, fields, await self._deliveries(entry_id)))
        return found

    async def _deliveries(self, entry_id: bytes) -> int:
        pending = await self._client.xpending_range(
            self._key, self._group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def ack(self, message: Incoming) -> None:
        await self._client.xack(self._key, self._group, message.token)

    async def retry(self, message: Incoming) -> None:
        await self._client.xclaim(
            self._key, self._group, self._name, 0, [message.token], idle=self._idle_ms, justid=True
        )

    async def bury(self, message: Incoming, letter: DeadLetter) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xadd(self._dead_key, {DEAD_FIELD: letter.to_json()})
            pipe.xack(self._key, self._group, message.token)
            await pipe.execute()

    async def touch(self, message: Incoming) -> None:
        await self._client.xclaim(
            self._key, self._group, self._name, 0, [message.token], justid=True
        )

    async def stop(self) -> None:
        """Hand back what we hold at once and forget this consumer's name."""
        pending = await self._client.xpending_range(
            self._key, self._group, min="-", max="+", count=1000, consumername=self._name
        )
        held: list[Any] = [p["message_id"] for p in pending]
        if held:
            await self._client.xclaim(
                self._key, self._group, self._name, 0, held, idle=self._idle_ms, justid=True
            )
        else:
            await self._client.xgroup_delconsumer(self._key, self._group, self._name)


def _incoming(entry_id: bytes, fields: dict[Any, Any], attempt: int) -> Incoming:
    data = fields.get(EVENT_FIELD)
    if isinstance(data, bytes):
        return Incoming(data, attempt, entry_id)
    names = ", ".join(repr(k) for k in fields)
    problem = f"Redis entry has no {EVENT_FIELD.decode()!r} field (it has {names})"
    return Incoming(repr(fields).encode(), attempt, entry_id, problem)
