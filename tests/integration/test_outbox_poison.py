"""An event too big for the broker holds back only its own saga, on a real NATS server.

NATS refuses a message over its ``max_payload`` (1 MB by default). Before, the relay took
that refusal for an outage and retried the oldest saga alone, so nothing else was ever
published; now the refused event waits out a back-off of its own and every other saga's
events leave.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from sagakit.bus import Delivery, open_broker
from sagakit.choreography import Service

pytestmark = pytest.mark.nats

URL = os.environ.get("SAGAKIT_NATS_URL", "nats://127.0.0.1:4222")
WAIT = 30.0


async def test_a_too_big_event_does_not_hold_back_other_sagas(tmp_path: Path) -> None:
    stream = f"poison{uuid.uuid4().hex[:12]}"
    broker = await open_broker(URL)
    received: list[str] = []
    everything = asyncio.Event()

    async def record(delivery: Delivery) -> None:
        received.append(delivery.event.correlation_id)
        if len(received) == 100:
            everything.set()

    orders = Service("orders", tmp_path / "orders.db", broker, stream=stream, relay_poll=0.05)
    try:
        await broker.subscribe(stream, "audit", record)
        await orders.publish("Huge", {"blob": "x" * 2_000_000}, correlation_id="poison")
        refused = await orders.relay.publish_pending()
        assert (refused.sent, refused.refused) == (0, 1)
        for n in range(100):  # the orders that come after it
            await orders.publish("OrderCreated", {"n": n}, correlation_id=f"order-{n}")
        stop = asyncio.Event()
        relay = asyncio.create_task(orders.relay.run(stop))
        async with asyncio.timeout(WAIT):
            await everything.wait()
        stop.set()
        await relay
        assert sorted(received) == sorted(f"order-{n}" for n in range(100))
        assert await orders.db.backlog() == 1  # the huge event, still waiting
    finally:
        await orders.close()
        await broker.delete_stream(stream)
        await broker.close()
