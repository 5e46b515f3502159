"""A forward event re-published for an order already compensated, on memory:// and Redis.

A producer that retries its publish outside an outbox sends its event again under a new id,
so no inbox recognises it. Here the order of the demo choreography is run until it is
compensated (3 globes wanted, 2 in stock: ``StockReservationFailed``, refund, cancel), then a
``PaymentCompleted`` with a new id, and the saga and cause of the one the payment service
published, goes straight to the broker. Once the services that handle it have (its id is in
their inboxes) and the tracker has heard it: no stock is reserved, nothing ships, the order
stays cancelled, and the tracker has the saga ``needs_attention``, its reason naming the
event. A second test sends every service a forward event of its own for the order, and the
tracker raises its flag once for all of them.

The four services run in this process, each with its own broker connection and SQLite file,
as separate processes would; the broker is the machine's Redis (on a stream of this run's
own) or the in-memory hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sagakit import Client, SagaState, SagaStatus, open_store
from sagakit.bus import Broker, Delivery, Event, MemoryBroker, open_broker
from sagakit.choreography import Service, Tracker
from sagakit.choreography._tracker import TRACKER_GROUP
from sagakit.demo._choreography import (
    ORDER_CHOREOGRAPHY,
    SERVICES,
    Audit,
    add_stock,
    audit,
    build_service,
    create_databases,
    database_path,
    place_orders,
)
from sagakit.log import RecordType
from sagakit.log._codec import decode
from sagakit.store import Store
from servers import REDIS

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
WAIT = 30.0
"""Seconds any one condition may take; every wait below is bounded by it."""
REASON = "forward event after compensation: {type} {id} from {source}"


class HeardTracker(Tracker):
    """A tracker that also keeps the ids of the events it has handled, so that a test knows
    when it has heard one it records nothing for."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.heard: set[str] = set()

    async def handle(self, delivery: Delivery) -> None:
        await super().handle(delivery)
        self.heard.add(delivery.event.id)


@dataclass
class World:
    directory: Path
    stream: str
    store: Store
    db_url: str
    publisher: Broker
    tracker: HeardTracker
    services: dict[str, Service] = field(default_factory=dict)

    async def compensated_order(self) -> SagaState:
        """Place an order short of stock; its saga once the tracker has it compensated, and
        once every service but orders has heard its ``OrderCancelled``."""
        order_id = f"L-{uuid.uuid4().hex[:8]}"
        order = {
            "order_id": order_id,
            "customer_id": "ada",
            "card": "tok_visa",
            "total_cents": 3000,
            "items": [{"sku": "GLOBE", "qty": 3}],
            "address": "1 Loop Rd",
        }
        await place_orders(self.services["orders"].db, [order], stream=self.stream)
        self.services["orders"].relay.wake()
        state = await self.ended(order_id)
        assert state.status is SagaStatus.COMPENSATED
        cancelled = facts(state, "OrderCancelled")["event_id"]
        await until("the OrderCancelled everywhere", lambda: self.handled(cancelled, *SERVICES[1:]))
        return state

    async def ended(self, saga_id: str) -> SagaState:
        """The saga once terminal in the tracker's log; fails after :data:`WAIT`."""
        deadline = time.monotonic() + WAIT
        async with self.store.watch(saga_id) as change:
            while True:
                stored = await self.store.load(saga_id)
                state = SagaState.from_records(saga_id, stored.records if stored else [])
                left = deadline - time.monotonic()
                if state.status.is_terminal:
                    return state
                assert left > 0, f"{saga_id} did not end within {WAIT:g}s: {state.status}"
                await change.wait(min(left, 1.0))

    async def state(self, saga_id: str) -> SagaState:
        stored = await self.store.load(saga_id)
        assert stored is not None
        return SagaState.from_records(saga_id, stored.records)

    def handled(self, event_id: str, *services: str) -> bool:
        """Whether every one of ``services`` has the event's id in its inbox."""
        return all(inbox_has(self.directory, name, event_id) for name in services)

    def outbox_sizes(self) -> dict[str, int]:
        return {name: outbox_size(self.directory, name) for name in SERVICES}


def facts(state: SagaState, event_type: str) -> dict[str, Any]:
    """The facts (and payload) of the record ``event_type`` made in the saga's log."""
    for record in state.records:
        data = decode(record.data) if record.data else None
        if isinstance(data, dict) and data.get("event") == event_type and "payload" in data:
            return data
    raise AssertionError(f"no record of {event_type} in {state.id}")


def again(original: dict[str, Any], saga_id: str) -> Event:
    """The event behind ``original`` (a record's facts) published once more by a producer
    retrying outside an outbox: a new id, the same saga and cause."""
    fresh = Event.new(
        original["event"], original["payload"], source=original["source"], correlation_id=saga_id
    )
    return dataclasses.replace(fresh, causation_id=original["causation_id"])


def forward(event_type: str, source: str, state: SagaState, **data: Any) -> Event:
    """A forward event for the saga's order that nobody published before."""
    payload = {"order_id": state.id, **data}
    return Event.new(event_type, payload, source=source, correlation_id=state.id)


def inbox_has(directory: Path, service: str, event_id: str) -> bool:
    with closing(sqlite3.connect(database_path(directory, service), timeout=30)) as db:
        row = db.execute(
            "SELECT 1 FROM sagakit_inbox WHERE consumer = ? AND event_id = ?", (service, event_id)
        ).fetchone()
    return row is not None


def outbox_size(directory: Path, service: str) -> int:
    """How many events the service has ever committed to its outbox."""
    with closing(sqlite3.connect(database_path(directory, service), timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM sagakit_outbox").fetchone()[0])


async def until(what: str, check: Callable[[], bool]) -> None:
    """Poll ``check`` (other connections' databases announce nothing) until it holds; fail
    after :data:`WAIT`."""
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT:g}s waiting for {what}")
        await asyncio.sleep(0.02)


async def show(saga_id: str, db_url: str, *options: str) -> str:
    """``sagakit show ID``, as an operator runs it beside the running services."""
    process = await asyncio.create_subprocess_exec(
        *(SAGAKIT, "show", saga_id, "--db", db_url, *options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def effects(found: Audit, order_id: str) -> dict[str, Any]:
    """What the services' own tables hold for the order."""
    return {
        "status": found.orders.get(order_id),
        "changes": sorted((s, n) for (o, s), n in found.changes.items() if o == order_id),
        "charges": found.charges[order_id],
        "refunds": found.refunds[order_id],
        "reservations": found.reservations[order_id],
        "shipments": found.shipments[order_id],
    }


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    url = "memory://" if request.param == "memory" else REDIS
    stream = f"late-{uuid.uuid4().hex[:10]}"  # nothing of another run is replayed
    directory = tmp_path / "services"
    create_databases(directory)
    add_stock(directory, {"LAMP": 5, "GLOBE": 2})
    db_url = f"sqlite:///{tmp_path / 'sagas.db'}"
    store = await open_store(db_url)
    first = await open_broker(url, redeliver_after=5.0)
    brokers = [first]

    async def connection() -> Broker:
        if isinstance(first, MemoryBroker):
            return first.sibling()
        brokers.append(await open_broker(url, redeliver_after=5.0))
        return brokers[-1]

    tracker = HeardTracker(store, await connection(), [ORDER_CHOREOGRAPHY], streams=[stream])
    world = World(directory, stream, store, db_url, first, tracker)
    try:
        for name in SERVICES:
            world.services[name] = build_service(
                name, directory, await connection(), stream=stream, relay_poll=0.1
            )
        async with contextlib.AsyncExitStack() as stack:
            runners: list[Tracker | Service] = [tracker, *world.services.values()]
            for runner in runners:
                await stack.enter_async_context(running(runner))
            yield world
    finally:
        for service in world.services.values():
            await service.close()
        if not isinstance(first, MemoryBroker):
            with contextlib.suppress(Exception):
                await first.delete_stream(stream, (*SERVICES, TRACKER_GROUP))
        for broker in brokers:
            await broker.close()
        await store.close()


@contextlib.asynccontextmanager
async def running(runner: Tracker | Service) -> AsyncIterator[None]:
    """Run the tracker or service until the block ends; enter once it is subscribed."""
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(runner.run(stop))
    try:
        async with asyncio.timeout(WAIT):
            await runner.ready.wait()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


async def test_a_late_payment_for_a_compensated_order_changes_nothing(world: World) -> None:
    state = await world.compensated_order()
    before, outboxes = effects(audit(world.directory), state.id), world.outbox_sizes()
    late = again(facts(state, "PaymentCompleted"), state.id)

    await world.publisher.publish(world.stream, late)
    await until("inventory to handle the late event", lambda: world.handled(late.id, "inventory"))
    await until("the tracker to hear it", lambda: late.id in world.tracker.heard)

    found = effects(audit(world.directory), state.id)
    assert found == before
    assert found["status"] == "cancelled"
    assert found["reservations"] == found["shipments"] == 0
    assert world.outbox_sizes() == outboxes  # inventory emitted nothing: no one else can act
    flagged = await world.state(state.id)
    assert flagged.status is SagaStatus.NEEDS_ATTENTION
    assert flagged.reason == REASON.format(type=late.type, id=late.id, source=late.source)
    assert flagged.records[: len(state.records)] == state.records
    (flag,) = flagged.records[len(state.records) :]
    assert flag.type is RecordType.SAGA_NEEDS_ATTENTION

    last = json.loads(await show(state.id, world.db_url, "--json"))["events"][-1]
    assert last["type"] == "saga_needs_attention" and last["data"]["event_id"] == late.id
    assert "to do" not in await show(state.id, world.db_url)  # it ended; nothing left to run

    await Client(world.store, operator="ops").resolve(state.id, note="nothing was reserved")
    assert (await world.state(state.id)).status is SagaStatus.COMPENSATED


async def test_every_service_refuses_its_forward_event_and_the_tracker_flags_once(
    world: World,
) -> None:
    state = await world.compensated_order()
    before, outboxes = effects(audit(world.directory), state.id), world.outbox_sizes()
    late = {
        "payments": again(facts(state, "OrderCreated"), state.id),
        "inventory": again(facts(state, "PaymentCompleted"), state.id),
        "shipping": forward("StockReserved", "inventory", state, address="1 Loop Rd"),
        "orders": forward("ShipmentCreated", "shipping", state, shipment_id="shp_late"),
    }

    for event in late.values():
        await world.publisher.publish(world.stream, event)
    for service, event in late.items():
        handled = lambda: world.handled(event.id, service)  # noqa: B023, E731 (awaited here)
        await until(f"{service} to handle {event.type}", handled)
    ids = {event.id for event in late.values()}
    await until("the tracker to hear them all", lambda: ids <= world.tracker.heard)

    assert effects(audit(world.directory), state.id) == before
    assert world.outbox_sizes() == outboxes
    flagged = await world.state(state.id)
    assert flagged.status is SagaStatus.NEEDS_ATTENTION
    added = flagged.records[len(state.records) :]
    assert [r.type for r in added] == [RecordType.SAGA_NEEDS_ATTENTION]  # one flag
    assert decode(added[0].data or "{}")["event_id"] in ids
