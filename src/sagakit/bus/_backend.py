"""What the brokers share: argument checks, retries with back-off, error translation, close.

A backend subclasses :class:`BrokerBackend` and implements a handful of ``_hooks`` with its
driver; it never decides retry, back-off or dead-letter policy itself (see
:mod:`sagakit.bus._consumer` for the consume side). Driver exceptions are translated here, at
the boundary, into :class:`~sagakit.errors.BrokerError` with the original as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from sagakit.bus._base import DeadLetter, Handler, check_name
from sagakit.bus._consumer import Receiver, Subscription
from sagakit.bus._event import Event
from sagakit.errors import BrokerConnectionError, BrokerError, InvalidArgumentError

logger = logging.getLogger("sagakit.bus")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Bounded exponential back-off with jitter, for connecting and publishing.

    ``attempts`` tries in all; the waits between them double from ``first`` up to ``cap``
    seconds, each shortened by a random part so that many clients do not retry in step.
    """

    attempts: int = 6
    first: float = 0.1
    cap: float = 5.0

    def delay(self, failures: int) -> float:
        """How long to wait after the ``failures``-th failure in a row."""
        return min(self.cap, self.first * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)


def redact(url: str) -> str:
    """``url`` without its password, so it can be logged and shown in errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class BrokerBackend(ABC):
    """The shared half of every broker; see :class:`sagakit.bus.Broker` for semantics.

    ``redeliver_after``: seconds an unacknowledged message waits before another consumer of
    its group may take it (Redis min-idle time, NATS ack wait); handlers that run longer
    keep their messages by renewing them.
    """

    def __init__(
        self, url: str, *, redeliver_after: float = 30.0, backoff: Backoff | None = None
    ) -> None:
        if redeliver_after <= 0:
            raise InvalidArgumentError(f"redeliver_after must be positive, not {redeliver_after!r}")
        self.url = redact(url)
        self.redeliver_after = redeliver_after
        self.backoff = backoff or Backoff()
        self._raw_url = url
        self._subscriptions: list[Subscription] = []
        self._closed = False

    @property
    def poll(self) -> float:
        """How long one fetch may block: short enough to reclaim a dead consumer's messages."""
        return min(2.0, self.redeliver_after / 2)

    async def publish(self, stream: str, event: Event) -> None:
        """See :meth:`sagakit.bus.Broker.publish`."""
        check_name("stream", stream)
        data = event.to_json()
        await self._retrying(
            f"publish to {stream!r}", lambda: self._publish(stream, data, event.id)
        )

    async def subscribe(
        self,
        stream: str,
        group: str,
        handler: Handler,
        *,
        max_attempts: int = 5,
        prefetch: int = 10,
    ) -> Subscription:
        """See :meth:`sagakit.bus.Broker.subscribe`."""
        check_name("stream", stream)
        check_name("group", group)
        if max_attempts < 1 or prefetch < 1:
            raise InvalidArgumentError("max_attempts and prefetch must be at least 1")
        receiver = await self._retrying(
            f"subscribe {group!r} to {stream!r}", lambda: self._receiver(stream, group, prefetch)
        )
        subscription = Subscription(
            receiver,
            handler,
            stream=stream,
            group=group,
            max_attempts=max_attempts,
            poll=self.poll,
            backoff=self.backoff.delay,
        )
        self._subscriptions.append(subscription)
        subscription.start()
        return subscription

    async def dead_letters(self, stream: str) -> list[DeadLetter]:
        """See :meth:`sagakit.bus.Broker.dead_letters`."""
        check_name("stream", stream)
        return await self._retrying(f"read dead letters of {stream!r}", lambda: self._dead(stream))

    async def close(self) -> None:
        """See :meth:`sagakit.bus.Broker.close`; closing twice is harmless."""
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
                if failures >= self.backoff.attempts:
                    raise BrokerConnectionError(self.url, f"{what}: {_reason(exc)}") from exc
                delay = self.backoff.delay(failures)
                logger.warning("%s: %s failed (%s); again in %.2fs", self.url, what, exc, delay)
                await asyncio.sleep(delay)

    def _translate(self, what: str, exc: Exception) -> NoReturn:
        """Raise ``exc`` as a :class:`BrokerError` if it is the driver's; else as it is."""
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
    async def _disconnect(self) -> None:
        """Close the connection; must not raise."""

    @abstractmethod
    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        """Driver errors worth retrying: the connection, not the request, failed."""

    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """Every other error the driver raises, translated to :class:`BrokerError`."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
