"""The broker contract against a real RabbitMQ (``SAGAKIT_AMQP_URL``, default guest@:5672)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from aio_pika import Message

from sagakit import Retry
from sagakit.bus import Broker, open_broker
from sagakit.bus.rabbitmq import RabbitMQBroker, exchange_name
from sagakit.errors import BrokerConnectionError
from sagakit.testing import GROUPS, BrokerContract, BrokerFactory

pytestmark = pytest.mark.rabbitmq

URL = os.environ.get("SAGAKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class TestRabbitMQBroker(BrokerContract):
    @pytest.fixture
    async def broker_factory(self, stream: str) -> AsyncIterator[BrokerFactory]:
        made: list[Broker] = []

        async def make() -> Broker:
            made.append(await open_broker(URL, redeliver_after=1.0))
            return made[-1]

        yield make
        for broker in made:
            await broker.close()
        cleaner = await open_broker(URL)
        await cleaner.delete_stream(stream, GROUPS)
        await cleaner.close()

    async def publish_raw(self, broker: Broker, stream: str, data: bytes) -> None:
        assert isinstance(broker, RabbitMQBroker)
        exchange = await broker.channel.get_exchange(exchange_name(stream))
        await exchange.publish(Message(data), "")


async def test_an_unreachable_rabbitmq_is_a_connection_error_without_the_password() -> None:
    with pytest.raises(BrokerConnectionError, match=r"amqp://guest:\*\*\*@127\.0\.0\.1:1/") as info:
        await open_broker("amqp://guest:secret@127.0.0.1:1/", retry=Retry(attempts=2, backoff=0.01))
    assert "secret" not in str(info.value)
