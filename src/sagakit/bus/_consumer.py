"""The consume loop every broker shares: parse, call, acknowledge, retry, dead-letter.

A backend only supplies a :class:`Receiver` (fetch and settle messages with its driver);
everything that decides *what* happens to a message lives here, once, so the four brokers
cannot drift apart in the semantics :class:`sagakit.bus.Broker` promises. A
:class:`Consumer` is what ``Broker.subscribe`` returns as a ``Subscription``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sagakit.bus._delivery import DeadLetter, Delivery, Handler
from sagakit.bus._event import Event
from sagakit.errors import MalformedEventError

logger = logging.getLogger("sagakit.bus")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message as a backend received it.

    ``attempt`` is the broker's delivery count (1 the first time). ``token`` is whatever the
    backend needs to settle the message. ``problem`` is set when the backend found no event
    at all in the message (a Redis entry without the field we write, say).
    """

    data: bytes
    attempt: int
    token: Any
    problem: str | None = None


class Receiver(Protocol):
    """One subscription's handle on a backend: what the consume loop asks of a driver."""

    @property
    def touch_every(self) -> float | None:
        """How often to :meth:`touch` a message while its handler runs; None if never needed."""
        ...

    async def fetch(self, timeout: float) -> Sequence[Incoming]:
        """The next messages for this consumer, waiting up to ``timeout`` s; may be empty."""
        ...

    async def ack(self, message: Incoming) -> None:
        """Done with ``message``: never deliver it to this group again."""
        ...

    async def retry(self, message: Incoming) -> None:
        """Give ``message`` back for redelivery, with its delivery count incremented."""
        ...

    async def bury(self, message: Incoming, letter: DeadLetter) -> None:
        """Store ``letter`` in the stream's dead letters durably, then ack ``message``."""
        ...

    async def touch(self, message: Incoming) -> None:
        """Still working on ``message``: do not hand it to another consumer yet."""
        ...

    async def stop(self) -> None:
        """Stop receiving; messages fetched but not settled go back to the group."""
        ...


class Consumer:
    """A running consumer of one stream for one group; made by ``Broker.subscribe``.

    Handlers run one at a time, in the order the broker delivers. The loop never dies on a
    broker or handler error: it logs, backs off and carries on, relying on the driver to
    reconnect, so a service survives a broker restart.
    """

    def __init__(
        self,
        receiver: Receiver,
        handler: Handler,
        *,
        stream: str,
        group: str,
        max_attempts: int,
        poll: float,
        backoff: Callable[[int], float],
        max_letter_bytes: int | None = None,
    ) -> None:
        self.stream = stream
        self.max_letter_bytes = max_letter_bytes
        """The largest dead letter the broker takes: a bigger one keeps an excerpt."""
        self.group = group
        self.max_attempts = max_attempts
        self._receiver = receiver
        self._handler = handler
        self._poll = poll
        self._backoff = backoff
        self._task: asyncio.Task[None] | None = None
        self._idle = False
        self._stopping = False

    def start(self) -> None:
        """Begin consuming in a background task."""
        name = f"sagakit-consumer {self.stream}/{self.group}"
        self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    @property
    def running(self) -> bool:
        """True until the subscription is closed or aborted."""
        return self._task is not None and not self._task.done()

    async def close(self, grace: float = 30.0) -> None:
        """Stop consuming; a running handler gets ``grace`` seconds to finish and be acked.

        Messages fetched but not handled go back to the group for another consumer.
        """
        task = self._task
        if task is None or self._stopping:
            return
        self._stopping = True
        await self._cancel(task, grace, idle_only=True)
        await self._cancel(task, grace, idle_only=False)
        with contextlib.suppress(Exception):
            await self._receiver.stop()

    async def abort(self) -> None:
        """Stop at once without settling anything, as if the process had died."""
        self._stopping = True
        if self._task is not None:
            await self._cancel(self._task, math.inf, idle_only=False)

    async def _cancel(self, task: asyncio.Task[None], within: float, *, idle_only: bool) -> None:
        """Cancel ``task`` (only while it waits on the broker, if ``idle_only``) until done.

        Cancelling again and again, because Python 3.11's ``asyncio.wait_for`` (used inside
        drivers) can swallow a cancellation that arrives just as its operation completes.
        """
        deadline = asyncio.get_running_loop().time() + within
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            if self._idle or not idle_only:
                task.cancel()
            await asyncio.wait({task}, timeout=0.05)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                batch = await self._while_idle(self._receiver.fetch(self._poll))
            except Exception as exc:  # a broken connection must not end the consumer
                failures += 1
                delay = self._backoff(failures)
                logger.warning("%s/%s: fetch failed (%s); again in %.1fs", *self._at(), exc, delay)
                await self._while_idle(asyncio.sleep(delay))
                continue
            failures = 0
            for message in batch:
                if self._stopping:
                    break
                await self._settle(message)

    async def _while_idle(self, waiting: Awaitable[T]) -> T:
        """Await ``waiting`` marked as safe to cancel (nothing is being handled)."""
        self._idle = True
        try:
            return await waiting
        finally:
            self._idle = False

    async def _settle(self, message: Incoming) -> None:
        try:
            await self._dispatch(message)
        except Exception as exc:  # the broker will redeliver what we could not settle
            logger.warning("%s/%s: could not settle a message: %r", *self._at(), exc)

    async def _dispatch(self, message: Incoming) -> None:
        if message.problem is not None:
            return await self._bury(message, message.problem)
        try:
            event = Event.parse(message.data)
        except MalformedEventError as exc:
            return await self._bury(message, f"malformed event: {exc}")
        if message.attempt > self.max_attempts:
            return await self._bury(message, self._abandoned(message.attempt))
        delivery = Delivery(event, message.attempt, message.data, self.stream, self.group)
        try:
            await self._call(delivery, message)
        except Exception as exc:
            return await self._failed(message, f"{type(exc).__name__}: {exc}")
        await self._receiver.ack(message)

    async def _failed(self, message: Incoming, error: str) -> None:
        if message.attempt >= self.max_attempts:
            await self._bury(message, error)
            return
        logger.info("%s/%s: attempt %d failed: %s", *self._at(), message.attempt, error)
        await self._receiver.retry(message)

    async def _call(self, delivery: Delivery, message: Incoming) -> None:
        every = self._receiver.touch_every
        if every is None:
            return await self._handler(delivery)
        keeper = asyncio.get_running_loop().create_task(
            self._keep(message, every), name="sagakit-keepalive"
        )
        try:
            await self._handler(delivery)
        finally:
            keeper.cancel()
            await asyncio.wait({keeper})

    async def _keep(self, message: Incoming, every: float) -> None:
        """Renew the claim on a message whose handler is slow, so nobody else takes it."""
        while True:
            await asyncio.sleep(every)
            try:
                await self._receiver.touch(message)
            except Exception as exc:
                logger.warning("%s/%s: could not renew a message: %r", *self._at(), exc)

    async def _bury(self, message: Incoming, error: str) -> None:
        logger.warning("%s/%s: dead-lettering a message: %s", *self._at(), error)
        letter = DeadLetter(
            self.stream, self.group, error, message.attempt, time.time(), message.data
        )
        if self.max_letter_bytes is not None:
            letter = letter.within(self.max_letter_bytes)
        await self._receiver.bury(message, letter)

    def _abandoned(self, attempt: int) -> str:
        return (
            f"delivered {attempt} times without being acknowledged, more than "
            f"max_attempts={self.max_attempts} (did its consumers die while handling it?)"
        )

    def _at(self) -> tuple[str, str]:
        return self.stream, self.group
