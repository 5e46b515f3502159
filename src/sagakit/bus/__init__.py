"""Message brokers for choreographed sagas, chosen by URL.

=============================================  ======================  =====================
URL                                            broker                  extra
=============================================  ======================  =====================
``memory://``                                  :class:`MemoryBroker`   (none)
``redis://host:6379/0``                        ``RedisStreamsBroker``  ``sagakit[redis]``
``nats://host:4222``                           ``NatsJetStreamBroker`` ``sagakit[nats]``
``amqp://user:password@host:5672/vhost``       ``RabbitMQBroker``      ``sagakit[rabbitmq]``
=============================================  ======================  =====================

``rediss://``, ``tls://`` and ``amqps://`` select the same brokers over TLS.
"""

from __future__ import annotations

from sagakit._retry import Retry
from sagakit._urls import Backend, SchemeTable, lazy
from sagakit.bus._broker import MAX_EVENT_BYTES, Broker, Subscription
from sagakit.bus._delivery import DeadLetter, Delivery, Handler
from sagakit.bus._event import Event, event_schema
from sagakit.bus.memory import MemoryBroker
from sagakit.errors import MissingBrokerDriverError, UnsupportedBrokerError

__all__ = [
    "MAX_EVENT_BYTES",
    "SCHEMES",
    "Broker",
    "DeadLetter",
    "Delivery",
    "Event",
    "Handler",
    "MemoryBroker",
    "Subscription",
    "event_schema",
    "open_broker",
]

_BROKERS: SchemeTable[type[Broker]] = SchemeTable(
    Backend(("memory",), lambda: MemoryBroker),
    Backend(
        ("redis", "rediss"),
        lazy("sagakit.bus.redis_streams", "RedisStreamsBroker"),
        driver="redis.asyncio",
        package="redis",
        extra="redis",
    ),
    Backend(
        ("nats", "tls"),
        lazy("sagakit.bus.nats_jetstream", "NatsJetStreamBroker"),
        driver="nats",
        package="nats-py",
        extra="nats",
    ),
    Backend(
        ("amqp", "amqps"),
        lazy("sagakit.bus.rabbitmq", "RabbitMQBroker"),
        driver="aio_pika",
        package="aio-pika",
        extra="rabbitmq",
    ),
    unsupported=UnsupportedBrokerError,
    missing=lambda backend: MissingBrokerDriverError(
        backend.schemes[0], backend.package, backend.extra
    ),
)

SCHEMES = _BROKERS.names


async def open_broker(
    url: str,
    *,
    redeliver_after: float = 30.0,
    retry: Retry | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> Broker:
    """Connect to the broker at ``url`` (see the table above).

    Connecting is retried with ``retry`` (by default 6 tries, waits doubling to at most
    5 s); an unreachable broker is a :class:`~sagakit.errors.BrokerConnectionError` naming
    the URL without its password. Any other scheme is an
    :class:`~sagakit.errors.UnsupportedBrokerError`; a broker whose driver is missing, a
    :class:`~sagakit.errors.MissingBrokerDriverError` saying which extra to install.
    """
    broker = _BROKERS.load(url)(
        url, redeliver_after=redeliver_after, retry=retry, max_event_bytes=max_event_bytes
    )
    await broker.connect()
    return broker
