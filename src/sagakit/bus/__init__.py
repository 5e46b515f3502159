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

from sagakit.bus._backend import Backoff, BrokerBackend, redact
from sagakit.bus._base import Broker, DeadLetter, Delivery, Handler
from sagakit.bus._consumer import Subscription
from sagakit.bus._event import Event
from sagakit.bus.memory import MemoryBroker
from sagakit.errors import UnsupportedBrokerError

__all__ = [
    "SCHEMES",
    "Backoff",
    "Broker",
    "BrokerBackend",
    "DeadLetter",
    "Delivery",
    "Event",
    "Handler",
    "MemoryBroker",
    "Subscription",
    "open_broker",
]

SCHEMES = ["memory", "redis", "nats", "amqp"]


async def open_broker(
    url: str, *, redeliver_after: float = 30.0, backoff: Backoff | None = None
) -> BrokerBackend:
    """Connect to the broker at ``url`` (see the table above).

    Connecting is retried with ``backoff``; an unreachable broker is a
    :class:`~sagakit.errors.BrokerConnectionError` naming the URL without its password.
    Any other scheme is an :class:`~sagakit.errors.UnsupportedBrokerError`.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    backend: BrokerBackend
    if scheme == "memory":
        return MemoryBroker(url, redeliver_after=redeliver_after, backoff=backoff)
    if scheme in ("redis", "rediss"):
        from sagakit.bus.redis_streams import RedisStreamsBroker

        backend = RedisStreamsBroker(url, redeliver_after=redeliver_after, backoff=backoff)
    elif scheme in ("nats", "tls"):
        from sagakit.bus.nats_jetstream import NatsJetStreamBroker

        backend = NatsJetStreamBroker(url, redeliver_after=redeliver_after, backoff=backoff)
    elif scheme in ("amqp", "amqps"):
        from sagakit.bus.rabbitmq import RabbitMQBroker

        backend = RabbitMQBroker(url, redeliver_after=redeliver_after, backoff=backoff)
    else:
        raise UnsupportedBrokerError(redact(url), SCHEMES)
    await backend.connect()
    return backend
