"""A choreographed service: handlers that react to events, with an inbox and an outbox.

::

    payments = Service("payments", "payments.db", broker, stream="orders", schema=TABLES)

    @payments.on("OrderCreated")
    def charge(event: Event, tx: Transaction) -> None:
        tx.db.execute("INSERT INTO payments ...")
        tx.emit("PaymentCompleted", {"order_id": event.data["order_id"]})

    await payments.run(stop)

Each delivery is handled in one local transaction that also records the event's id in the
service's inbox and writes the events the handler emits to its outbox: either all of it
commits or none of it does. A redelivered event finds its id in the inbox and is
acknowledged without running the handler again; a handler that raises rolls everything
back and the broker delivers the event again, up to ``max_attempts`` times, after which it
goes to the stream's dead letters. Emitted events carry the handled event's correlation id
and its id as their causation id, which is what lets a tracker rebuild the saga.

Events of types the service has no handler for are acknowledged and otherwise ignored:
every service of a stream receives every event (fan-out, a consumer group each).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sagakit._retry import Retry
from sagakit.bus import Broker, Delivery, Event, Handler, Subscription
from sagakit.bus._broker import MAX_EVENT_BYTES, check_name, encode_within
from sagakit.choreography._logging import event_fields, handling_failed, logger
from sagakit.choreography._outbox import LocalDatabase, OutboxTransaction
from sagakit.choreography._relay import RELAY_RETRY, Relay
from sagakit.choreography.sqlite import SqliteDatabase
from sagakit.errors import BrokerConnectionError, ServiceDefinitionError
from sagakit.telemetry._switch import active as active_telemetry

if TYPE_CHECKING:
    from sagakit.telemetry._otel import Telemetry

EventHandler = Callable[[Event, "Transaction"], Awaitable[None] | None]
"""``async def handler(event, tx)`` or a plain function; it does the service's local work.

A plain function is called as its database needs (:meth:`OutboxTransaction.call`): on the
event loop for SQLite, in a thread for a database reached through a blocking driver."""
H = TypeVar("H", bound=EventHandler)


class Transaction:
    """What a handler works in: the open local transaction, and a way to emit events.

    ``db`` is the service database's connection (``sqlite3.Connection`` for a SQLite
    service), inside the transaction. ``event`` is the event being handled, or None in a
    transaction opened with :meth:`Service.transaction`.
    """

    def __init__(
        self,
        source: str,
        stream: str,
        tx: OutboxTransaction,
        cause: Event | None,
        telemetry: Telemetry | None = None,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.event = cause
        self._max_event_bytes = max_event_bytes
        self._source = source
        self._stream = stream
        self._tx = tx
        self._emitted: list[tuple[str, Event]] = []
        self._telemetry = telemetry

    @property
    def db(self) -> Any:
        return self._tx.connection

    def emit(
        self,
        type: str,
        data: Any = None,
        *,
        stream: str | None = None,
        correlation_id: str | None = None,
    ) -> Event:
        """Write an event to the outbox, to be published once this transaction commits.

        Inside a handler it continues the handled event's saga; elsewhere it starts a new
        one, whose correlation id is ``correlation_id`` if given (an order number, say).
        Data that is not JSON, or an event over the broker's ``max_event_bytes``, fails
        here, at the handler's line, not at commit or publish
        (:class:`~sagakit.errors.MalformedEventError`,
        :class:`~sagakit.errors.EventTooLargeError`).
        """
        tel = self._telemetry
        if tel is not None and not tel.recording():
            tel = None
        event = Event.new(
            type,
            data,
            source=self._source,
            correlation_id=correlation_id,
            caused_by=self.event,
            traceparent=None if tel is None else tel.event_traceparent(type),
        )
        encode_within(event, self._max_event_bytes)
        self._emitted.append((check_name("stream", stream or self._stream), event))
        return event

    @property
    def emitted(self) -> list[Event]:
        """The events emitted so far in this transaction."""
        return [event for _, event in self._emitted]

    async def flush(self) -> None:
        """Put the emitted events in the outbox (inside the transaction, before commit)."""
        for stream, event in self._emitted:
            await self._tx.enqueue(stream, event)


class Service:
    """One choreographed service: its handlers, its database and its relay.

    ``db`` is a :class:`~sagakit.choreography.LocalDatabase` or the path of a SQLite file (made
    with ``schema``, the service's own tables). ``stream`` is where its handlers listen and
    its events go unless told otherwise. ``concurrency`` subscriptions per stream handle
    events side by side (on SQLite their transactions still commit one at a time).
    """

    def __init__(
        self,
        name: str,
        db: LocalDatabase | str | os.PathLike[str],
        broker: Broker,
        *,
        stream: str = "events",
        schema: str = "",
        max_attempts: int = 5,
        prefetch: int = 10,
        concurrency: int = 1,
        relay_poll: float = 0.5,
    ) -> None:
        self.name = check_name("group", name)
        self.stream = check_name("stream", stream)
        if concurrency < 1:
            raise ServiceDefinitionError(f"service {name!r}: concurrency must be at least 1")
        self._owns_db = isinstance(db, str | os.PathLike)
        self.db: LocalDatabase = (
            SqliteDatabase(db, schema) if isinstance(db, str | os.PathLike) else db
        )
        self.broker = broker
        self.max_attempts = max_attempts
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.relay = Relay(self.db, broker, name=f"{name} relay", poll=relay_poll)
        self.ready = asyncio.Event()
        """Set once every subscription is in place: events published from then on reach us."""
        self.handled = 0
        self.duplicates = 0
        self._handlers: dict[tuple[str, str], EventHandler] = {}
        self._telemetry = active_telemetry()

    def on(self, type: str, *, stream: str | None = None) -> Callable[[H], H]:
        """Decorator: call the function for each event of ``type`` (on ``stream``)."""
        where = check_name("stream", stream or self.stream)

        def register(handler: H) -> H:
            if not isinstance(type, str) or not type:
                raise ServiceDefinitionError(f"service {self.name!r}: event type must be text")
            if not callable(handler):
                raise ServiceDefinitionError(f"service {self.name!r}: {handler!r} not callable")
            if (where, type) in self._handlers:
                raise ServiceDefinitionError(
                    f"service {self.name!r} already handles {type!r} on stream {where!r}"
                )
            self._handlers[(where, type)] = handler
            return handler

        return register

    @property
    def streams(self) -> list[str]:
        """The streams this service listens to."""
        return sorted({stream for stream, _ in self._handlers})

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A local transaction not caused by an event: for work that starts a saga.

        ::

            async with orders.transaction() as tx:
                tx.db.execute("INSERT INTO orders ...")
                tx.emit("OrderCreated", order, correlation_id=order["order_id"])
        """
        async with self.db.transaction() as tx:
            work = Transaction(
                self.name,
                self.stream,
                tx,
                None,
                self._telemetry,
                max_event_bytes=self.broker.max_event_bytes,
            )
            yield work
            await work.flush()
        self.relay.wake()

    async def publish(
        self,
        type: str,
        data: Any = None,
        *,
        correlation_id: str | None = None,
        stream: str | None = None,
    ) -> Event:
        """Emit one event in a transaction of its own (through the outbox, like any other)."""
        async with self.transaction() as tx:
            event = tx.emit(type, data, correlation_id=correlation_id, stream=stream)
        return event

    async def handle(self, delivery: Delivery) -> None:
        """Handle one delivery exactly once in effect (the subscriptions call this)."""
        handler = self._handlers.get((delivery.stream, delivery.event.type))
        if handler is None:
            return
        tel = self._telemetry
        traced = None if tel is None or not tel.recording() else tel.handling(self.name, delivery)
        try:
            emitted = await self._handle(delivery, handler)
        except BaseException as error:
            if traced is not None:
                traced.failed(error, delivery.attempt >= self.max_attempts)
            if isinstance(error, Exception):
                fields = event_fields(delivery.event, delivery.stream, self.name, delivery.attempt)
                handling_failed(fields, error, delivery.attempt, self.max_attempts)
            raise
        if traced is not None:
            traced.ended(emitted is None)
        if emitted is not None:
            self.relay.wake()
        self._handled(delivery, emitted)

    async def _handle(self, delivery: Delivery, handler: EventHandler) -> list[Event] | None:
        """Run ``handler`` in one local transaction; what it emitted, or None if the inbox
        says the event was handled before."""
        event = delivery.event
        async with self.db.transaction() as tx:
            if not await tx.first_delivery(self.name, event.id):
                self.duplicates += 1
                return None
            work = Transaction(
                self.name,
                self.stream,
                tx,
                event,
                self._telemetry,
                max_event_bytes=self.broker.max_event_bytes,
            )
            if inspect.iscoroutinefunction(handler):
                await handler(event, work)
            else:  # where its calls wait on a server, the database runs it in a thread
                outcome = await tx.call(handler, event, work)
                if inspect.isawaitable(outcome):
                    await outcome
            await work.flush()
        self.handled += 1
        return work.emitted

    def _handled(self, delivery: Delivery, emitted: list[Event] | None) -> None:
        """Log a handled delivery: at debug as routine, at info if it came again."""
        level = logging.INFO if emitted is None or delivery.attempt > 1 else logging.DEBUG
        if not logger.isEnabledFor(level):  # the hot path builds no fields
            return
        event = delivery.event
        fields = event_fields(event, delivery.stream, self.name, delivery.attempt)
        what = f"{event.type} {event.id} of saga {event.correlation_id}"
        if emitted is None:
            logger.info(
                "%s: %s came again, already handled: acknowledged", self.name, what, extra=fields
            )
            return
        types = ", ".join(e.type for e in emitted) or "nothing"
        logger.log(
            level,
            "%s: handled %s on delivery %d, emitted %s",
            *(self.name, what, delivery.attempt, types),
            extra=fields,
        )

    async def run(self, stop: asyncio.Event, *, grace: float = 10.0) -> None:
        """Subscribe and relay until ``stop`` is set; then let running handlers finish.

        An unreachable broker is retried with back-off (and logged with its URL) rather
        than ending the service; meanwhile emitted events wait in the outbox.
        """
        halt = asyncio.Event()
        relay = asyncio.get_running_loop().create_task(self.relay.run(halt), name=self.relay.name)
        subscriptions: list[Subscription] = []
        try:
            if not await subscribe_all(
                self.broker,
                self.streams,
                self.name,
                self.handle,
                stop,
                into=subscriptions,
                copies=self.concurrency,
                max_attempts=self.max_attempts,
                prefetch=self.prefetch,
            ):
                return
            self.ready.set()
            logger.info(
                "%s: listening on %s",
                self.name,
                ", ".join(self.streams),
                extra={"service": self.name},
            )
            await stop.wait()
        finally:
            await asyncio.gather(*(s.close(grace) for s in subscriptions))
            halt.set()
            await _finish(relay, grace)
            logger.info(
                "%s: stopped: handled %d event(s), acknowledged %d redelivered duplicate(s), "
                "published %d",
                *(self.name, self.handled, self.duplicates, self.relay.published),
                extra={"service": self.name},
            )

    async def close(self) -> None:
        """Close the database if the service opened it (from a path)."""
        if self._owns_db:
            await self.db.close()


async def subscribe_all(
    broker: Broker,
    streams: Sequence[str],
    group: str,
    handler: Handler,
    stop: asyncio.Event,
    *,
    into: list[Subscription],
    copies: int,
    max_attempts: int,
    prefetch: int,
) -> bool:
    """``copies`` competing subscriptions of ``group`` to every stream, each made with
    :func:`subscribe_retrying`, added to ``into`` as they come (so that the caller closes
    what was made if it stops early); False if ``stop`` was set first."""
    for stream in streams:
        for _ in range(copies):
            subscription = await subscribe_retrying(
                broker, stream, group, handler, stop, max_attempts=max_attempts, prefetch=prefetch
            )
            if subscription is None:
                return False
            into.append(subscription)
    return True


async def subscribe_retrying(
    broker: Broker,
    stream: str,
    group: str,
    handler: Handler,
    stop: asyncio.Event,
    *,
    max_attempts: int = 5,
    prefetch: int = 10,
    retry: Retry = RELAY_RETRY,
) -> Subscription | None:
    """Subscribe, retrying an unreachable broker with back-off until ``stop``; None if stopped.

    A consumer that starts while its broker restarts must wait for it, not die.
    """
    failures = 0
    while not stop.is_set():
        try:
            return await broker.subscribe(
                stream, group, handler, max_attempts=max_attempts, prefetch=prefetch
            )
        except BrokerConnectionError as error:
            failures += 1
            delay = retry.delay(failures)
            logger.warning(
                "%s: cannot subscribe to %r (attempt %d): %s; again in %.1fs",
                *(group, stream, failures, error, delay),
                extra={"service": group, "stream": stream, "attempt": failures},
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
    return None


async def _finish(task: asyncio.Task[None], grace: float) -> None:
    """Let ``task`` end by itself for ``grace`` seconds, then cancel it."""
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
