"""The outbox and inbox on PostgreSQL survive SIGKILL at each moment a handler's event passes.

``outbox_child.py`` runs a ``payments`` service that charges an order (a row in its own
table) and emits ``PaymentCompleted``. It is killed inside the handler, after the local
commit, and after the broker took the event but before it was marked sent; then a second
child resumes from PostgreSQL and Redis alone. The evidence comes from the service's own
table, the raw outgoing stream and a consumer's inbox: the charge happened exactly once, the
event was published at least once (twice when the kill came between publish and mark), and
a consumer that de-duplicates by its inbox ships the order once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from sagakit.bus import Event, open_broker
from sagakit.bus.redis_streams import dead_key, stream_key
from sagakit.choreography import Service, Transaction
from sagakit.choreography.postgres import PostgresDatabase
from servers import POSTGRES, REDIS

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("outbox_child.py")
SUBPROCESS_TIMEOUT = 90.0
"""Generous: a child takes a second or two, plus the redelivery wait, but CI machines stall."""
WAIT = 30.0


@dataclass(frozen=True, slots=True)
class Point:
    """A kill point, and what the killed run must have left behind."""

    name: str
    paid: int
    """Rows in the service's own table once it is dead."""
    published_before: int
    """Copies of the outgoing event on the raw stream once it is dead."""
    published_after: int
    """Copies once the restarted run is done."""


POINTS = (
    Point("handler", paid=0, published_before=0, published_after=1),
    Point("committed", paid=1, published_before=0, published_after=1),
    Point("published", paid=1, published_before=1, published_after=2),
)


@dataclass(frozen=True, slots=True)
class World:
    """One run's schemas and streams, unique to it."""

    name: str

    @property
    def payments(self) -> str:
        return f"{POSTGRES}?schema=crash_pay_{self.name}&pool=4"

    @property
    def shipping(self) -> str:
        return f"{POSTGRES}?schema=crash_ship_{self.name}&pool=4"

    @property
    def orders(self) -> str:
        return f"orders{self.name}"

    @property
    def paid(self) -> str:
        return f"paid{self.name}"

    def child(self, kill_at: str | None) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, str(CHILD), "--in-stream", self.orders, "--out-stream", self.paid]
        if kill_at is not None:
            args += ["--kill-at", kill_at]
        env = {**os.environ, "SAGAKIT_CRASH_DB": self.payments, "SAGAKIT_CRASH_BROKER": REDIS}
        return subprocess.run(
            args,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS)
    yield client
    await client.aclose()


@pytest.fixture
async def world(redis: Redis) -> AsyncIterator[World]:
    made = World(uuid.uuid4().hex[:12])
    yield made
    for stream in (made.orders, made.paid):
        await redis.delete(stream_key(stream), dead_key(stream))
    conn = await asyncpg.connect(POSTGRES)
    try:
        for prefix in ("crash_pay", "crash_ship"):
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}_{made.name}" CASCADE')
    finally:
        await conn.close()


async def payments_left(world: World) -> tuple[int, int]:
    """(rows in the service's own table, its outbox backlog), as committed."""
    db = await PostgresDatabase.open(world.payments)
    try:
        async with db.transaction() as tx:
            paid = await tx.connection.fetchval("SELECT count(*) FROM payments")
        return int(paid), await db.backlog()
    finally:
        await db.close()


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Return once ``condition()`` holds, looking every 50 ms; fail after :data:`WAIT`."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"after {WAIT}s, still waiting for {what}")


async def ship_everything(world: World, redis: Redis) -> tuple[int, int, int]:
    """Run a ``shipping`` consumer until it has taken every copy on the outgoing stream;
    (its effects, events it handled, duplicates its inbox dropped)."""
    db = await PostgresDatabase.open(world.shipping, tables="CREATE TABLE shipments (o text);")
    broker = await open_broker(REDIS)
    shipping = Service("shipping", db, broker, stream=world.paid)

    @shipping.on("PaymentCompleted")
    async def ship(event: Event, tx: Transaction) -> None:
        await tx.db.execute("INSERT INTO shipments (o) VALUES ($1)", event.data["order_id"])

    async def all_taken() -> bool:
        copies = int(await redis.xlen(stream_key(world.paid)))
        return shipping.handled + shipping.duplicates == copies

    stop = asyncio.Event()
    running = asyncio.create_task(shipping.run(stop))
    try:
        await until(all_taken, "the consumer to take every copy of the event")
    finally:
        stop.set()
        await running
    try:
        async with db.transaction() as tx:
            shipped = int(await tx.connection.fetchval("SELECT count(*) FROM shipments"))
    finally:
        await db.close()
        await broker.close()
    return shipped, shipping.handled, shipping.duplicates


def _last_json(process: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = process.stdout.strip().splitlines()
    assert lines, f"no output; exit {process.returncode}; stderr:\n{process.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
async def test_a_killed_service_resumes_with_one_effect_and_the_event_delivered(
    point: Point, world: World, redis: Redis
) -> None:
    for stream, group in ((world.orders, "payments"), (world.paid, "shipping")):
        await redis.xgroup_create(stream_key(stream), group, id="$", mkstream=True)
    broker = await open_broker(REDIS)
    try:
        await broker.publish(
            world.orders, Event.new("OrderCreated", {"order_id": "o-1"}, source="t")
        )
    finally:
        await broker.close()

    killed = await asyncio.to_thread(world.child, point.name)
    assert killed.returncode == -signal.SIGKILL, f"exit {killed.returncode}\n{killed.stderr}"
    assert _last_json(killed) == {"killed_at": point.name}
    assert await payments_left(world) == (point.paid, point.paid)  # a payment's event waits
    assert await redis.xlen(stream_key(world.paid)) == point.published_before

    restarted = await asyncio.to_thread(world.child, None)
    assert restarted.returncode == 0, f"exit {restarted.returncode}\n{restarted.stderr}"
    outcome = _last_json(restarted)
    assert await payments_left(world) == (1, 0)  # charged exactly once, nothing left to send
    assert await redis.xlen(stream_key(world.paid)) == point.published_after
    assert outcome["published"] == 1  # the restarted relay sent what the killed one had not
    assert outcome["handled"] == (1 if point.paid == 0 else 0)  # the inbox knew the rest

    assert await ship_everything(world, redis) == (
        1,
        1,
        point.published_after - 1,
    )
