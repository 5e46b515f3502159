"""NATS JetStream: a JetStream stream per sagakit stream, a durable pull consumer per group.

Layout: events are published on subject ``sagakit.<stream>`` into the JetStream stream
``sagakit-events-<stream>`` (file storage, *limits* retention: events are kept for
``EVENTS_MAX_AGE``, however far behind a group is; interest retention, which drops an event
once every group acknowledged it, lost events a lagging group had not yet acknowledged
when nats-server 2.9 restarted). Dead letters go on ``sagakit.<stream>.dead`` into
``sagakit-dead-<stream>`` (limits retention: kept until an operator removes them). Each group
is a durable pull consumer with explicit acks, ``ack_wait = redeliver_after`` and no
``max_deliver`` limit: the consume loop dead-letters after ``max_attempts`` itself, so a
message is never dropped silently by the server. Handlers that run long send
``in_progress`` so the server does not redeliver under them.

``publish`` waits for JetStream's ack and sets ``Nats-Msg-Id`` to the event id, so a
publish retried after a lost ack is stored once (within the stream's duplicate window).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from sagakit.bus._broker import Broker
from sagakit.bus._consumer import Incoming, Receiver
from sagakit.bus._delivery import DeadLetter
from sagakit.errors import MissingBrokerDriverError

__all__ = ["NatsJetStreamBroker"]

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.api import ConsumerConfig

logger = logging.getLogger("sagakit.bus")


EVENTS_MAX_AGE = 7 * 24 * 3600.0
"""Seconds an event stays in JetStream: a week for a stopped service to catch up."""


def subject(stream: str) -> str:
    """The subject ``stream``'s events are published on."""
    return f"sagakit.{stream}"


def dead_subject(stream: str) -> str:
    """The subject ``stream``'s dead letters are published on."""
    return f"sagakit.{stream}.dead"


def jetstream_names(stream: str) -> tuple[str, str]:
    """The JetStream streams holding ``stream``'s events and its dead letters."""
    return f"sagakit-events-{stream}", f"sagakit-dead-{stream}"


HEADERS_ROOM = 1024
"""Bytes of ``max_payload`` left for the headers (``Nats-Msg-Id``): the server counts them
in, the client's own check does not."""


class NatsJetStreamBroker(Broker):
    """The broker behind ``nats://host:4222`` (``tls://`` for TLS)."""

    _nc: Client | None = None
    _ready: set[str] | None = None

    async def _connect(self) -> None:
        try:
            import nats
        except ImportError as exc:
            raise MissingBrokerDriverError("nats", "nats-py", "nats") from exc
        await self._disconnect()  # what a failed attempt left behind
        # nats-py would retry a first connect for ever; fail it fast, our back-off retries it.
        self._nc = await nats.connect(
            servers=[self._raw_url],
            connect_timeout=5,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnect,
        )
        self._nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect for ever
        self._nc.options["reconnect_time_wait"] = 1
        self._ready = set()
        self.max_event_bytes = min(self.max_event_bytes, self._nc.max_payload - HEADERS_ROOM)

    async def _on_error(self, exc: Exception) -> None:
        logger.debug("%s: %r", self.url, exc)

    async def _on_disconnect(self) -> None:
        if not self._closed:
            logger.warning("%s: disconnected; reconnecting", self.url)

    @property
    def jetstream(self) -> JetStreamContext:
        """The nats-py JetStream context (connected by :func:`sagakit.bus.open_broker`)."""
        assert self._nc is not None, "connect() first"
        return self._nc.jetstream()

    async def _ensure(self, stream: str) -> None:
        """Create the stream's two JetStream streams unless they exist (once per process)."""
        from nats.js.api import RetentionPolicy, StorageType
        from nats.js.errors import BadRequestError

        if self._ready is not None and stream in self._ready:
            return
        events, dead = jetstream_names(stream)
        specs = [(events, subject(stream), EVENTS_MAX_AGE), (dead, dead_subject(stream), None)]
        for name, on, max_age in specs:
            try:
                await self.jetstream.add_stream(
                    name=name,
                    subjects=[on],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    max_age=max_age,
                )
            except BadRequestError as exc:
                if exc.err_code != 10058:  # exists with another configuration: use it as is
                    raise
        if self._ready is not None:
            self._ready.add(stream)

    async def _publish(self, stream: str, data: bytes, key: str) -> None:
        from nats.errors import NoRespondersError

        await self._ensure(stream)
        try:
            await self.jetstream.publish(
                subject(stream),
                data,
                stream=jetstream_names(stream)[0],
                headers={"Nats-Msg-Id": key},
            )
        except NoRespondersError:
            if self._ready is not None:
                self._ready.discard(stream)  # deleted under us: recreate on the retry
            raise

    async def _receiver(self, stream: str, group: str, prefetch: int) -> Receiver:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        await self._ensure(stream)
        events, dead = jetstream_names(stream)
        config = ConsumerConfig(
            durable_name=group,
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.redeliver_after,
            max_deliver=-1,
            filter_subject=subject(stream),
            max_ack_pending=max(1000, prefetch),
        )
        await self._add_consumer(events, config)
        pull = await self.jetstream.pull_subscribe_bind(durable=group, stream=events)
        return _NatsReceiver(self.jetstream, pull, prefetch, dead, dead_subject(stream), self)

    async def _add_consumer(self, events: str, config: ConsumerConfig) -> None:
        from nats.js.errors import APIError

        try:
            await self.jetstream.add_consumer(events, config)
        except APIError:  # it exists with other settings: keep the group's as they are
            assert config.durable_name is not None
            await self.jetstream.consumer_info(events, config.durable_name)

    async def _dead(self, stream: str) -> list[DeadLetter]:
        from nats.js.errors import NotFoundError

        dead = jetstream_names(stream)[1]
        try:
            state = (await self.jetstream.stream_info(dead)).state
        except NotFoundError:
            return []
        letters = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            try:
                message = await self.jetstream.get_msg(dead, seq)
            except NotFoundError:  # removed by an operator
                continue
            letters.append(DeadLetter.from_json(message.data or b""))
        return letters

    async def _delete(self, stream: str, groups: Sequence[str]) -> None:
        """Delete both JetStream streams of ``stream``, and its groups (consumers) with them."""
        from nats.js.errors import NotFoundError

        for name in jetstream_names(stream):
            with contextlib.suppress(NotFoundError):
                await self.jetstream.delete_stream(name)
        if self._ready is not None:
            self._ready.discard(stream)

    async def _disconnect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        from nats.errors import (
            ConnectionClosedError,
            ConnectionReconnectingError,
            NoRespondersError,
            NoServersError,
            StaleConnectionError,
            TimeoutError,
        )

        return (
            ConnectionClosedError,
            ConnectionReconnectingError,
            NoRespondersError,
            NoServersError,
            StaleConnectionError,
            TimeoutError,
            OSError,
        )

    def _rejections(self) -> tuple[type[BaseException], ...]:
        from nats.errors import MaxPayloadError
        from nats.js.errors import APIError

        return (MaxPayloadError, APIError)  # JetStream refused this message (its size, say)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        from nats.errors import Error

        return (Error,)


class _NatsReceiver:
    def __init__(
        self,
        jetstream: JetStreamContext,
        pull: JetStreamContext.PullSubscription,
        prefetch: int,
        dead_stream: str,
        dead_subject: str,
        broker: NatsJetStreamBroker,
    ) -> None:
        self._jetstream = jetstream
        self._pull = pull
        self._prefetch = prefetch
        self._dead_stream = dead_stream
        self._dead_subject = dead_subject
        self.touch_every: float | None = broker.redeliver_after / 3

    async def fetch(self, timeout: float) -> Sequence[Incoming]:
        from nats.errors import TimeoutError

        try:
            messages = await self._pull.fetch(batch=self._prefetch, timeout=timeout)
        except TimeoutError:
            return []
        return [Incoming(m.data, m.metadata.num_delivered or 1, m) for m in messages]

    async def ack(self, message: Incoming) -> None:
        await _msg(message).ack()

    async def retry(self, message: Incoming) -> None:
        await _msg(message).nak()

    async def bury(self, message: Incoming, letter: DeadLetter) -> None:
        await self._jetstream.publish(
            self._dead_subject, letter.to_json(), stream=self._dead_stream
        )
        await _msg(message).ack()

    async def touch(self, message: Incoming) -> None:
        await _msg(message).in_progress()

    async def stop(self) -> None:
        await self._pull.unsubscribe()


def _msg(message: Incoming) -> Msg:
    return cast("Msg", message.token)
