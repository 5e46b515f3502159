"""The broker contract against a real NATS JetStream (``SAGAKIT_NATS_URL``, default :4222)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from sagakit import Retry
from sagakit.bus import Broker, open_broker
from sagakit.bus.nats_jetstream import NatsJetStreamBroker, jetstream_names, subject
from sagakit.errors import BrokerConnectionError
from sagakit.testing import BrokerContract, BrokerFactory

pytestmark = pytest.mark.nats

URL = os.environ.get("SAGAKIT_NATS_URL", "nats://127.0.0.1:4222")


class TestNatsJetStreamBroker(BrokerContract):
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
        await cleaner.delete_stream(stream)
        await cleaner.close()

    async def publish_raw(self, broker: Broker, stream: str, data: bytes) -> None:
        assert isinstance(broker, NatsJetStreamBroker)
        await broker.jetstream.publish(subject(stream), data, stream=jetstream_names(stream)[0])


async def test_an_unreachable_nats_is_a_connection_error_without_the_password() -> None:
    with pytest.raises(BrokerConnectionError, match=r"nats://me:\*\*\*@127\.0\.0\.1:1") as info:
        await open_broker("nats://me:secret@127.0.0.1:1", retry=Retry(attempts=2, backoff=0.01))
    assert "secret" not in str(info.value)
