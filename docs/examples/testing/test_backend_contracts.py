"""sagakit's contract suites, run against the in-memory store and broker: the same
subclasses, with your backend's fixture, check a saga log or a broker you write.

The suites are ``async def`` tests and async fixtures without asyncio marks: they need
pytest-asyncio in auto mode (``asyncio_mode = "auto"`` in your pytest configuration; run
as a script, this file passes it on the command line).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sagakit import Broker, MemoryBroker, MemoryStore, Store
from sagakit.testing import BrokerContract, BrokerFactory, SchedulingContract, StoreContract


# --8<-- [start:contracts]
class TestMemoryStore(StoreContract, SchedulingContract):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryStore()  # a fresh, empty saga log for every test


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    async def broker_factory(self) -> AsyncIterator[BrokerFactory]:
        made: list[MemoryBroker] = []

        async def connect() -> Broker:  # another connection to the same server
            made.append(made[0].sibling() if made else MemoryBroker(redeliver_after=0.5))
            return made[-1]

        yield connect
        for broker in made:
            await broker.close()

    async def publish_raw(self, broker: Broker, stream: str, data: bytes) -> None:
        assert isinstance(broker, MemoryBroker)  # bytes no sagakit publisher would send
        broker.hub.append(stream, data)


# --8<-- [end:contracts]

if __name__ == "__main__":
    auto = ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *auto]))
