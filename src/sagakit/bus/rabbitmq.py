"""RabbitMQ: a fanout exchange per sagakit stream, a durable quorum queue per group.

Layout: events are published (persistent, with publisher confirms) to the durable fanout
exchange ``sagakit.<stream>``; each group has the durable queue ``sagakit.<stream>.group.<g>``
bound to it, so every group gets every event and the consumers of a group share its queue.
The queues are *quorum* queues because those count deliveries (``x-delivery-count``), which
gives the attempt number even after a consumer died; classic queues only say "redelivered".
Dead letters are kept in the durable queue ``sagakit.<stream>.dead``; it is also each group
queue's dead-letter target, so a message the server gives up on (RabbitMQ 4's default
delivery limit of 20) is kept there rather than dropped, with RabbitMQ's ``x-death`` reason.

A message held by a consumer whose connection drops goes back to the queue at once (there
is no ``redeliver_after`` wait). Events published to a stream no group has subscribed to yet
are dropped by the exchange, as on the other brokers a new group starts at the stream's end.
``aio-pika``'s robust connection reconnects and restores queues and consumers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from sagakit.bus._broker import Broker
from sagakit.bus._consumer import Incoming, Receiver
from sagakit.bus._delivery import DeadLetter
from sagakit.errors import EventRejectedError, MissingBrokerDriverError

__all__ = ["RabbitMQBroker"]

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractChannel,
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustConnection,
    )

DEAD_HEADER = "x-sagakit-dead-letter"


def exchange_name(stream: str) -> str:
    """The exchange ``stream``'s events are published to."""
    return f"sagakit.{stream}"


def queue_name(stream: str, group: str) -> str:
    """The queue ``group`` consumes ``stream`` from."""
    return f"sagakit.{stream}.group.{group}"


def dead_queue_name(stream: str) -> str:
    """The queue holding ``stream``'s dead letters."""
    return f"sagakit.{stream}.dead"


class RabbitMQBroker(Broker):
    """The broker behind ``amqp://user:password@host:5672/vhost`` (``amqps://`` for TLS)."""

    _connection: AbstractRobustConnection | None = None
    _channel: AbstractChannel | None = None
    _exchanges: dict[str, AbstractExchange] | None = None

    async def _connect(self) -> None:
        try:
            import aio_pika
        except ImportError as exc:
            raise MissingBrokerDriverError("amqp", "aio-pika", "rabbitmq") from exc
        self._connection = await aio_pika.connect_robust(self._raw_url, timeout=5)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchanges = {}

    @property
    def channel(self) -> AbstractChannel:
        """The publishing channel (publisher confirms on); connected by ``open_broker``."""
        assert self._channel is not None, "connect() first"
        return self._channel

    async def _exchange(self, stream: str) -> AbstractExchange:
        from aio_pika import ExchangeType

        assert self._exchanges is not None
        if stream not in self._exchanges:
            self._exchanges[stream] = await self.channel.declare_exchange(
                exchange_name(stream), ExchangeType.FANOUT, durable=True
            )
        return self._exchanges[stream]

    async def _publish(self, stream: str, data: bytes, key: str) -> None:
        exchange = await self._exchange(stream)
        await _confirmed(exchange.publish(_message(data, message_id=key), "", mandatory=False))

    async def _receiver(self, stream: str, group: str, prefetch: int) -> Receiver:
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        dead = await self._declare_dead(channel, stream)
        arguments = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead.name,
        }
        queue = await channel.declare_queue(
            queue_name(stream, group), durable=True, arguments=arguments
        )
        await queue.bind(await self._exchange(stream))
        receiver = _RabbitReceiver(channel, queue, self, dead.name)
        await receiver.start()
        return receiver

    async def _declare_dead(self, channel: AbstractChannel, stream: str) -> AbstractQueue:
        return await channel.declare_queue(dead_queue_name(stream), durable=True)

    async def bury(self, queue: str, letter: DeadLetter) -> None:
        """Store ``letter`` in the dead-letter queue ``queue``, confirmed."""
        body = _message(letter.to_json(), headers={DEAD_HEADER: 1})
        await _confirmed(self.channel.default_exchange.publish(body, queue))

    async def _dead(self, stream: str) -> list[DeadLetter]:
        from aio_pika.exceptions import ChannelClosed

        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        letters: list[DeadLetter] = []
        try:
            queue = await channel.declare_queue(dead_queue_name(stream), passive=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                letters.append(_letter(stream, message))
        except ChannelClosed:  # no such queue: nothing was ever dead-lettered
            return []
        finally:  # closing without acks puts every message back, in order
            with contextlib.suppress(Exception):
                await channel.close()
        return letters

    async def _delete(self, stream: str, groups: Sequence[str]) -> None:
        """Delete the exchange, the dead letters and the queues of ``groups``.

        RabbitMQ cannot list a stream's queues without its management plugin, so the
        caller names the groups.
        """
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        for group in groups:
            await channel.queue_delete(queue_name(stream, group))
        await channel.queue_delete(dead_queue_name(stream))
        await channel.exchange_delete(exchange_name(stream))
        await channel.close()
        if self._exchanges is not None:
            self._exchanges.pop(stream, None)

    async def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        from aio_pika.exceptions import AMQPConnectionError, ChannelInvalidStateError

        return (
            AMQPConnectionError,
            ChannelInvalidStateError,
            ConnectionError,
            OSError,
            TimeoutError,
        )

    def _rejections(self) -> tuple[type[BaseException], ...]:
        from aiormq.exceptions import DeliveryError

        return (DeliveryError,)  # a nack: a queue refused this message (full, say)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        from aio_pika.exceptions import AMQPError

        return (AMQPError,)


class _RabbitReceiver:
    """Pushed deliveries, buffered (at most ``prefetch`` of them) until the loop fetches."""

    touch_every: float | None = None  # RabbitMQ waits for a live consumer's ack for ever

    def __init__(
        self, channel: AbstractChannel, queue: AbstractQueue, broker: RabbitMQBroker, dead: str
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._broker = broker
        self._dead = dead
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._tag: str | None = None

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._inbox.put, no_ack=False)

    async def fetch(self, timeout: float) -> Sequence[Incoming]:
        try:
            async with asyncio.timeout(timeout):
                first = await self._inbox.get()
        except TimeoutError:
            return []
        batch = [first]
        while not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return [Incoming(m.body, _deliveries(m) + 1, m) for m in batch]

    async def ack(self, message: Incoming) -> None:
        await _incoming(message).ack()

    async def retry(self, message: Incoming) -> None:
        await _incoming(message).nack(requeue=True)

    async def bury(self, message: Incoming, letter: DeadLetter) -> None:
        await self._broker.bury(self._dead, letter)
        await _incoming(message).ack()

    async def touch(self, message: Incoming) -> None:
        return None

    async def stop(self) -> None:
        if self._tag is not None:
            await self._queue.cancel(self._tag)
        await self._channel.close()  # unacked deliveries go back to the queue


def _message(body: bytes, **properties: Any) -> Any:
    from aio_pika import DeliveryMode, Message

    return Message(
        body, delivery_mode=DeliveryMode.PERSISTENT, content_type="application/json", **properties
    )


async def _confirmed(publishing: Any) -> None:
    """Await a publish and insist the broker confirmed (not nacked) it."""
    from aiormq import spec

    result = await publishing
    if result is not None and not isinstance(result, spec.Basic.Ack):  # a queue full, say
        raise EventRejectedError(f"RabbitMQ did not accept the message: {result!r}")


def _incoming(message: Incoming) -> AbstractIncomingMessage:
    return cast("AbstractIncomingMessage", message.token)


def _deliveries(message: AbstractIncomingMessage) -> int:
    count = (message.headers or {}).get("x-delivery-count", 0)
    return count if isinstance(count, int) else 0


def _letter(stream: str, message: AbstractIncomingMessage) -> DeadLetter:
    """Our own dead letter, or a message the server dead-lettered (with its reason)."""
    headers = message.headers or {}
    if headers.get(DEAD_HEADER):
        return DeadLetter.from_json(message.body)
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths else None
    if not isinstance(death, dict):
        death = {}
    queue = _text(death.get("queue"))
    group = queue.rsplit(".group.", 1)[-1] if ".group." in queue else ""
    error = f"dead-lettered by RabbitMQ: {_text(death.get('reason')) or 'unknown reason'}"
    return DeadLetter(stream, group, error, _deliveries(message), time.time(), message.body)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)
