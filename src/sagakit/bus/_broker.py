"""The Broker base class: the one seam between choreographed services and a message broker.

Semantics every broker keeps (and :class:`sagakit.testing.BrokerContract` checks against the
real servers):

- ``publish`` returns only once the broker has the event durably.
- A *group* is a service: the subscriptions of one group compete for the events (each is
  handled by one of them), and every group gets every event (fan-out). A group receives the
  events published after it was first subscribed; earlier ones are not replayed.
- Delivery is at least once. A handler that returns acknowledges the event; one that raises
  gets it again (``attempt`` 2, 3, ...) until ``max_attempts``, after which the event goes to
  the stream's dead letters with the error. A message that is not a valid event goes there
  at once. An event held by a consumer that died is given to another consumer of the group
  after ``redeliver_after`` seconds (RabbitMQ: as soon as the connection drops).
- Consumers should de-duplicate by ``event.id`` (an inbox), as the DESIGN says.

A backend subclasses :class:`Broker` and implements its ``_hooks`` with its driver; it never
decides retry, back-off or dead-letter policy itself (the consume loop is
:mod:`sagakit.bus._consumer`). Driver exceptions are translated here, at the boundary, into
:class:`~sagakit.errors.BrokerError` with the original as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, Protocol, TypeVar

from sagakit._retry import Retry
from sagakit._urls import redact
from sagakit.bus._consumer import Consumer, Receiver
from sagakit.bus._delivery import DeadLetter, Handler
from sagakit.bus._event import Event
from sagakit.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerNameError,
    EventRejectedError,
    EventTooLargeError,
    InvalidArgumentError,
)

logger = logging.getLogger("sagakit.bus")

MAX_EVENT_BYTES = 1024 * 1024
"""The default size limit of an event's JSON: NATS's default ``max_payload``, so a
choreography can move between brokers. Events are facts, not files: keep large data
elsewhere and send its key."""

T = TypeVar("T")

BROKER_RETRY = Retry(attempts=6, backoff=0.075, max_backoff=3.75, jitter=1 / 3)
"""Connecting, publishing and the other calls to a broker: 6 tries in all.

The waits double from 0.075 s up to 3.75 s, each scattered by up to a third either way so
that many clients do not retry in step: at most 0.1 s after the first failure, never more
than 5 s, never less than half of that bound.
"""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")


def check_name(kind: str, name: str) -> str:
    """``name`` if every broker can use it as is (Redis key, NATS subject and stream, AMQP).

    Letters, digits, ``-`` and ``_`` only: NATS forbids dots and wildcards in stream names,
    and the backends build their own names with ``.`` and ``:`` as separators.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BrokerNameError(
            f"invalid {kind} name {name!r}: use 1 to 100 letters, digits, '-' or '_'"
        )
    return name


def encode_within(event: Event, limit: int, broker: str = "the broker") -> bytes:
    """``event``'s JSON, or :class:`EventTooLargeError` if it is over ``limit`` bytes."""
    data = event.to_json()
    if len(data) > limit:
        raise EventTooLargeError(event.type, event.id, len(data), limit, broker)
    return data


class Subscription(Protocol):
    """A running consumer of one stream for one group, as :meth:`Broker.subscribe` made it."""

    @property
    def stream(self) -> str:
        """The stream consumed."""
        ...

    @property
    def group(self) -> str:
        """The group this subscription competes in for the stream's events."""
        ...

    @property
    def running(self) -> bool:
        """True until the subscription is closed or aborted."""
        ...

    async def close(self, grace: float = 30.0) -> None:
        """Stop consuming; a running handler gets ``grace`` seconds to finish and be acked.

        Messages fetched but not handled go back to the group for another consumer.
        """
        ...

    async def abort(self) -> None:
        """Stop at once without settling anything, as if the process had died."""
        ...


class Broker(ABC):
    """Durable publish/subscribe with consumer groups, retries and dead letters.

    ``redeliver_after``: seconds an unacknowledged message waits before another consumer of
    its group may take it (Redis min-idle time, NATS ack wait); handlers that run longer
    keep their messages by renewing them. ``retry``: how calls to the broker are retried
    while its connection is lost (:data:`BROKER_RETRY` by default). ``max_event_bytes``:
    the largest event's JSON published (:data:`MAX_EVENT_BYTES` by default; a server with
    a lower limit of its own lowers it once connected).
    """

    url: str
    """The broker's URL, without any password (safe to log)."""

    def __init__(
        self,
        url: str,
        *,
        redeliver_after: float = 30.0,
        retry: Retry | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if redeliver_after <= 0:
            raise InvalidArgumentError(f"redeliver_after must be positive, not {redeliver_after!r}")
        if max_event_bytes < 1:
            raise InvalidArgumentError(f"max_event_bytes must be positive, not {max_event_bytes}")
        self.max_event_bytes = max_event_bytes
        self.url = redact(url)
        self.redeliver_after = redeliver_after
        self.retry = retry or BROKER_RETRY
        self._raw_url = url
        self._subscriptions: list[Subscription] = []
        self._closed = False

    @property
    def poll(self) -> float:
        """How long one fetch may block: short enough to reclaim a dead consumer's messages."""
        return min(2.0, self.redeliver_after / 2)

    async def publish(self, stream: str, event: Event) -> None:
        """Append ``event`` to ``stream``; returns once the broker has it durably.

        Retries a lost connection with bounded exponential back-off, then raises
        :class:`~sagakit.errors.BrokerConnectionError`.
        """
        check_name("stream", stream)
        data = self.encode(event)
        await self._retrying(
            f"publish to {stream!r}", lambda: self._publish(stream, data, event.id)
        )

    def encode(self, event: Event) -> bytes:
        """``event`` as the JSON this broker takes: :class:`EventTooLargeError` if over
        :attr:`max_event_bytes`, :class:`MalformedEventError` if its data is not JSON."""
        return encode_within(event, self.max_event_bytes, self.url)

    async def subscribe(
        self,
        stream: str,
        group: str,
        handler: Handler,
        *,
        max_attempts: int = 5,
        prefetch: int = 10,
    ) -> Subscription:
        """Start calling ``handler`` for the events of ``stream`` given to ``group``.

        Handlers of one subscription run one at a time, in stream order; ``prefetch`` is
        how many unacknowledged events it may hold at once.
        """
        check_name("stream", stream)
        check_name("group", group)
        if max_attempts < 1 or prefetch < 1:
            raise InvalidArgumentError("max_attempts and prefetch must be at least 1")
        receiver = await self._retrying(
            f"subscribe {group!r} to {stream!r}", lambda: self._receiver(stream, group, prefetch)
        )
        consumer = Consumer(
            receiver,
            handler,
            stream=stream,
            group=group,
            max_attempts=max_attempts,
            poll=self.poll,
            backoff=self.retry.delay,
            max_letter_bytes=self.max_event_bytes,
        )
        self._subscriptions.append(consumer)
        consumer.start()
        return consumer

    async def dead_letters(self, stream: str) -> list[DeadLetter]:
        """The messages of ``stream`` given up on, oldest first (left in place)."""
        check_name("stream", stream)
        return await self._retrying(f"read dead letters of {stream!r}", lambda: self._dead(stream))

    async def delete_stream(self, stream: str, groups: Sequence[str] = ()) -> None:
        """Delete ``stream``: its events, its dead letters and its groups' positions.

        For tests, demos and operators, once every subscription to it is closed. RabbitMQ
        cannot list a stream's queues without its management plugin, so name the ``groups``
        to delete; the other brokers delete every group of the stream anyway.
        """
        check_name("stream", stream)
        for group in groups:
            check_name("group", group)
        await self._retrying(f"delete {stream!r}", lambda: self._delete(stream, groups))

    async def close(self) -> None:
        """Stop every subscription (letting running handlers finish) and disconnect.

        Closing twice is harmless.
        """
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.close() for s in self._subscriptions))
        await self._disconnect()

    async def abort(self) -> None:
        """Drop everything as a crashing process would: nothing is acked or given back.

        For fault-injection tests: the broker must redeliver what this one held.
        """
        self._closed = True
        await asyncio.gather(*(s.abort() for s in self._subscriptions))
        await self._disconnect()

    async def connect(self) -> None:
        """Connect, retrying with back-off; :func:`sagakit.bus.open_broker` calls this."""
        try:
            await self._retrying("connect", self._connect)
        except BaseException:
            await self._disconnect()
            raise

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, retrying lost connections with back-off; translate failures."""
        failures = 0
        while True:
            if self._closed:
                raise BrokerError(f"cannot {what}: the broker {self.url} is closed")
            try:
                return await operation()
            except BrokerError:
                raise
            except Exception as exc:
                # The error classes are looked up only now: the driver is surely imported.
                if not isinstance(exc, self._transient_errors()):
                    self._translate(what, exc)
                failures += 1
                if not self.retry.allows_another(failures, exc):
                    raise BrokerConnectionError(self.url, f"{what}: {_reason(exc)}") from exc
                delay = self.retry.delay(failures)
                logger.warning("%s: %s failed (%s); again in %.2fs", self.url, what, exc, delay)
                await asyncio.sleep(delay)

    def _translate(self, what: str, exc: Exception) -> NoReturn:
        """Raise ``exc`` as a :class:`BrokerError` if it is the driver's; else as it is."""
        if isinstance(exc, self._rejections()):
            raise EventRejectedError(f"{self.url}: cannot {what}: {_reason(exc)}") from exc
        if isinstance(exc, self._driver_errors()):
            raise BrokerError(f"{self.url}: cannot {what}: {_reason(exc)}") from exc
        raise exc

    @abstractmethod
    async def _connect(self) -> None:
        """Connect (or check the connection) to the server; raise a transient error if not."""

    @abstractmethod
    async def _publish(self, stream: str, data: bytes, key: str) -> None:
        """Store ``data`` durably in ``stream``; ``key`` lets the broker drop a duplicate."""

    @abstractmethod
    async def _receiver(self, stream: str, group: str, prefetch: int) -> Receiver:
        """Create the group if need be and a consumer in it."""

    @abstractmethod
    async def _dead(self, stream: str) -> list[DeadLetter]:
        """Read the stream's dead letters without removing them."""

    @abstractmethod
    async def _delete(self, stream: str, groups: Sequence[str]) -> None:
        """Delete the stream, its dead letters and its groups (at least those in ``groups``)."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close the connection; must not raise."""

    @abstractmethod
    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        """Driver errors worth retrying: the connection, not the request, failed."""

    def _rejections(self) -> tuple[type[BaseException], ...]:
        """The driver's errors that refuse one message, not the connection: none by default."""
        return ()

    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """Every other error the driver raises, translated to :class:`BrokerError`."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
