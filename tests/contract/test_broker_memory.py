"""The broker contract against the in-process broker (brokers share one hub)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagakit.bus import Broker, MemoryBroker
from sagakit.testing import BrokerContract, BrokerFactory


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    async def broker_factory(self) -> AsyncIterator[BrokerFactory]:
        made: list[MemoryBroker] = []

        async def make() -> Broker:
            made.append(made[0].sibling() if made else MemoryBroker(redeliver_after=0.5))
            return made[-1]

        yield make
        for broker in made:
            await broker.close()

    async def publish_raw(self, broker: Broker, stream: str, data: bytes) -> None:
        assert isinstance(broker, MemoryBroker)
        broker.hub.append(stream, data)
