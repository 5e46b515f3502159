"""Remove what a test, a demo or a benchmark created on a broker, whichever broker it is.

Each backend deletes a stream its own way (RabbitMQ must be told the groups, as it cannot
list a stream's queues without its management plugin); this hides the difference.
"""

from __future__ import annotations

from collections.abc import Sequence

from sagakit.bus import Broker
from sagakit.bus.memory import MemoryBroker


async def delete_stream(broker: Broker, stream: str, groups: Sequence[str]) -> None:
    """Delete ``stream`` with its dead letters and the state of ``groups`` on ``broker``."""
    if isinstance(broker, MemoryBroker):
        broker.hub.streams.pop(stream, None)
        return
    scheme = broker.url.split("://", 1)[0]
    if scheme in ("redis", "rediss"):
        from sagakit.bus.redis_streams import RedisStreamsBroker

        assert isinstance(broker, RedisStreamsBroker)
        await broker.delete_stream(stream)
    elif scheme in ("nats", "tls"):
        from sagakit.bus.nats_jetstream import NatsJetStreamBroker

        assert isinstance(broker, NatsJetStreamBroker)
        await broker.delete_stream(stream)
    elif scheme in ("amqp", "amqps"):
        from sagakit.bus.rabbitmq import RabbitMQBroker

        assert isinstance(broker, RabbitMQBroker)
        await broker.delete_stream(stream, groups)
