"""The choreographed order example: four services on the in-memory broker, and a tracker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from choreography_fakes import eventually, running

from sagakit import MemoryStore, SagaState, SagaStatus
from sagakit.bus import Event, MemoryBroker
from sagakit.choreography import Service, Tracker
from sagakit.demo._choreography import (
    ORDER_CHOREOGRAPHY,
    SERVICES,
    STREAM,
    add_stock,
    audit,
    build_service,
    create_databases,
    decline_cards,
    free_stock,
    place_orders,
)
from sagakit.log._codec import decode


@dataclass
class World:
    directory: Path
    broker: MemoryBroker
    store: MemoryStore
    services: dict[str, Service]

    async def place(self, *orders: dict[str, Any]) -> None:
        await place_orders(self.services["orders"].db, list(orders))
        self.services["orders"].relay.wake()

    async def status(self, saga_id: str) -> SagaStatus | None:
        stored = await self.store.load(saga_id)
        return None if stored is None else stored.instance.status

    async def ended(self, *saga_ids: str) -> None:
        found: dict[str, SagaStatus | None] = {}

        def all_ended() -> bool:
            return all(s is not None and s.is_terminal for s in found.values())

        async with self.store.watch(saga_ids[0]) as change:
            for _ in range(400):
                found = {saga_id: await self.status(saga_id) for saga_id in saga_ids}
                if all_ended():
                    return
                await change.wait(0.025)
        raise AssertionError(f"not all ended: {found}")


def order(order_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "ada",
        "card": "tok_visa",
        "total_cents": 1500,
        "items": [{"sku": "LAMP", "qty": 1}],
        "address": "1 Loop Rd",
        **extra,
    }


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    create_databases(tmp_path)
    add_stock(tmp_path, {"LAMP": 5, "GLOBE": 2})
    decline_cards(tmp_path, "tok_stolen")
    broker, store = MemoryBroker(), MemoryStore()
    services = {name: build_service(name, tmp_path, broker.sibling()) for name in SERVICES}
    tracker = Tracker(store, broker.sibling(), [ORDER_CHOREOGRAPHY], streams=[STREAM])
    async with contextlib.AsyncExitStack() as stack:
        runners: list[Tracker | Service] = [tracker, *services.values()]
        for runner in runners:
            await stack.enter_async_context(running(runner.run))
            await eventually(runner.ready.is_set, "a subscription")
        yield World(tmp_path, broker, store, services)
    for service in services.values():
        await service.close()


async def test_an_order_flows_through_all_four_services(world: World) -> None:
    await world.place(order("A-1"))
    await world.ended("A-1")
    assert await world.status("A-1") is SagaStatus.COMPLETED
    found = audit(world.directory)
    assert found.orders["A-1"] == "completed"
    assert found.charges["A-1"] == found.reservations["A-1"] == found.shipments["A-1"] == 1
    assert free_stock(world.directory, "LAMP") == 4


async def test_short_stock_refunds_the_card_and_cancels_the_order(world: World) -> None:
    await world.place(order("A-2", items=[{"sku": "GLOBE", "qty": 3}]))
    await world.ended("A-2")
    stored = await world.store.load("A-2")
    assert stored is not None
    state = SagaState.from_records("A-2", stored.records)
    assert state.status is SagaStatus.COMPENSATED
    found = audit(world.directory)
    assert found.orders["A-2"] == "cancelled"
    assert found.charges["A-2"] == found.refunds["A-2"] == 1 and found.net_charged["A-2"] == 0
    assert found.reservations["A-2"] == 0 and free_stock(world.directory, "GLOBE") == 2
    undone = [decode_event(r.data) for r in state.records if r.type.value.startswith("compens")]
    assert [e for e in undone if e] == ["PaymentRefunded", "OrderCancelled"]


def decode_event(data: str | None) -> str | None:
    return decode(data).get("event") if data else None


async def test_a_declined_card_cancels_the_order_with_nothing_charged(world: World) -> None:
    await world.place(order("A-3", card="tok_stolen"))
    await world.ended("A-3")
    assert await world.status("A-3") is SagaStatus.COMPENSATED
    found = audit(world.directory)
    assert found.orders["A-3"] == "cancelled" and found.charges["A-3"] == 0


async def test_events_published_twice_have_one_effect(world: World) -> None:
    await world.place(order("A-4"))
    await world.ended("A-4")
    sent: list[Event] = [Event.parse(raw) for raw in world.broker.hub.stream(STREAM).log]
    for event in sent:  # every event of the saga again, as after lost confirmations
        await world.broker.publish(STREAM, event)
    await eventually(
        lambda: sum(s.duplicates for s in world.services.values()) == 4, "the duplicates"
    )
    assert not audit(world.directory).twice()
    assert await world.status("A-4") is SagaStatus.COMPLETED


async def test_a_poison_order_lands_in_dead_letters_and_the_rest_carry_on(world: World) -> None:
    poison = Event.new("OrderCreated", "not an order", source="intruder")
    await world.broker.publish(STREAM, poison)
    await world.place(order("A-5"))
    await world.ended("A-5")
    await eventually(lambda: bool(world.broker.hub.stream(STREAM).dead), "the dead letter")
    (letter,) = await world.broker.dead_letters(STREAM)
    assert letter.group == "payments" and letter.event is not None
    assert letter.event.id == poison.id and "TypeError" in letter.error
    assert await world.status("A-5") is SagaStatus.COMPLETED
