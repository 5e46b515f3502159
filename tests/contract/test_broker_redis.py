"""The broker contract against a real Redis (``SAGAKIT_REDIS_URL``, default 127.0.0.1:6379)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sagakit import Retry
from sagakit.bus import Broker, Event, open_broker
from sagakit.bus.redis_streams import RedisStreamsBroker, dead_key, stream_key
from sagakit.errors import BrokerConnectionError
from sagakit.testing import BrokerContract, BrokerFactory, Recorder, events

pytestmark = pytest.mark.redis

URL = os.environ.get("SAGAKIT_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(URL)
    yield client
    await client.aclose()


class TestRedisStreamsBroker(BrokerContract):
    @pytest.fixture
    async def broker_factory(self, stream: str, redis: Redis) -> AsyncIterator[BrokerFactory]:
        made: list[Broker] = []

        async def make() -> Broker:
            made.append(await open_broker(URL, redeliver_after=1.0))
            return made[-1]

        yield make
        for broker in made:
            await broker.close()
        await redis.delete(stream_key(stream), dead_key(stream))

    async def publish_raw(self, broker: Broker, stream: str, data: bytes) -> None:
        assert isinstance(broker, RedisStreamsBroker)
        await broker.client.xadd(stream_key(stream), {"event": data})

    async def test_an_entry_without_an_event_field_is_dead_lettered(
        self, broker: Broker, stream: str
    ) -> None:
        assert isinstance(broker, RedisStreamsBroker)
        seen = Recorder()
        await broker.subscribe(stream, "alpha", seen)
        await broker.client.xadd(stream_key(stream), {"other": b"x"})
        good = Event.new("Fine", source="test")
        await broker.publish(stream, good)
        await seen.wait_for(lambda: good.id in seen.ids(), "the good event")
        (letter,) = await broker.dead_letters(stream)
        assert "no 'event' field" in letter.error and letter.event is None

    async def test_consumers_and_publishers_survive_dropped_connections(
        self, broker_factory: BrokerFactory, redis: Redis, stream: str
    ) -> None:
        name = f"sagakit-{stream}"  # tag this broker's connections, to drop only those
        broker = await open_broker(f"{URL}?client_name={name}", redeliver_after=1.0)
        try:
            seen = Recorder()
            await broker.subscribe(stream, "alpha", seen)
            first, second = events(2)
            await broker.publish(stream, first)
            await seen.wait_for(lambda: len(seen.deliveries) >= 1, "the first event")
            dropped = [c["id"] for c in await redis.client_list() if c["name"] == name]
            for client_id in dropped:
                await redis.client_kill_filter(_id=client_id)
            assert dropped
            await broker.publish(stream, second)
            await seen.wait_for(lambda: second.id in seen.ids(), "the event after the drop")
            assert seen.ids() == [first.id, second.id]
        finally:
            await broker.close()


async def test_an_unreachable_redis_is_a_connection_error_without_the_password() -> None:
    with pytest.raises(BrokerConnectionError, match=r"redis://:\*\*\*@127\.0\.0\.1:1/0") as info:
        await open_broker("redis://:secret@127.0.0.1:1/0", retry=Retry(attempts=2, backoff=0.01))
    assert "secret" not in str(info.value)
