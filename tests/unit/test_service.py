"""Choreographed services: handlers, the inbox that makes redelivery harmless, emitted events."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from choreography_fakes import FlakyBroker, eventually, running

from sagakit.bus import Delivery, Event, MemoryBroker
from sagakit.choreography import Service, Transaction
from sagakit.errors import EventTooLargeError, MalformedEventError, ServiceDefinitionError

TABLES = "CREATE TABLE IF NOT EXISTS charges (order_id TEXT NOT NULL);"


def charges(service: Service) -> int:
    path = getattr(service.db, "path")  # noqa: B009 - a SqliteDatabase
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM charges").fetchone()[0])


def payments(
    tmp_path: Path, broker: MemoryBroker | FlakyBroker, *, max_attempts: int = 5
) -> Service:
    path = tmp_path / "payments.db"
    service = Service("payments", path, broker, schema=TABLES, max_attempts=max_attempts)

    @service.on("OrderCreated")
    async def charge(event: Event, tx: Transaction) -> None:
        if event.data.get("explode"):
            raise RuntimeError("the card network is down")
        tx.db.execute("INSERT INTO charges VALUES (?)", (event.data["order_id"],))
        tx.emit("PaymentCompleted", {"order_id": event.data["order_id"]})

    return service


class Seen:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.events.append(delivery.event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]


async def test_a_handler_emits_the_next_event_of_the_same_saga(tmp_path: Path) -> None:
    broker = MemoryBroker()
    seen = Seen()
    await broker.subscribe("events", "watcher", seen)
    service = payments(tmp_path, broker.sibling())
    async with running(service.run):
        await eventually(service.ready.is_set, "the subscription")
        created = Event.new("OrderCreated", {"order_id": "o-1"}, source="orders")
        await broker.publish("events", created)
        await eventually(lambda: bool(seen.of("PaymentCompleted")), "PaymentCompleted")
    (paid,) = seen.of("PaymentCompleted")
    assert paid.correlation_id == created.correlation_id
    assert paid.causation_id == created.id
    assert paid.source == "payments"
    assert charges(service) == 1
    await service.close()
    await broker.close()


async def test_a_redelivered_event_is_acknowledged_without_a_second_effect(tmp_path: Path) -> None:
    broker = MemoryBroker()
    service = payments(tmp_path, broker)
    created = Event.new("OrderCreated", {"order_id": "o-1"}, source="orders")
    delivery = Delivery(created, 1, created.to_json(), "events", "payments")
    await service.handle(delivery)
    await service.handle(replace(delivery, attempt=2))
    assert (service.handled, service.duplicates) == (1, 1)
    assert charges(service) == 1
    assert await service.db.backlog() == 1  # one PaymentCompleted, not two
    await service.close()


async def test_a_failing_handler_changes_nothing_and_is_retried_then_dead_lettered(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    service = payments(tmp_path, broker.sibling(), max_attempts=3)
    async with running(service.run):
        await eventually(service.ready.is_set, "the subscription")
        poison = Event.new("OrderCreated", {"order_id": "o-1", "explode": True}, source="orders")
        await broker.publish("events", poison)
        await eventually(lambda: bool(broker.hub.stream("events").dead), "the dead letter")
    (letter,) = await broker.dead_letters("events")
    assert letter.event is not None and letter.event.id == poison.id
    assert letter.attempts == 3 and "card network is down" in letter.error
    assert charges(service) == 0 and await service.db.backlog() == 0
    await service.close()


async def test_events_of_other_types_are_ignored(tmp_path: Path) -> None:
    service = payments(tmp_path, MemoryBroker())
    other = Event.new("ShipmentCreated", {"order_id": "o-1"}, source="shipping")
    await service.handle(Delivery(other, 1, other.to_json(), "events", "payments"))
    assert (service.handled, service.duplicates) == (0, 0)
    await service.close()


async def test_publish_starts_a_saga_through_the_outbox(tmp_path: Path) -> None:
    broker = MemoryBroker()
    seen = Seen()
    await broker.subscribe("events", "watcher", seen)
    orders = Service("orders", tmp_path / "orders.db", broker)
    created = await orders.publish("OrderCreated", {"order_id": "o-7"}, correlation_id="o-7")
    assert created.correlation_id == "o-7" and created.causation_id is None
    assert await orders.db.backlog() == 1
    async with running(orders.run):
        await eventually(lambda: [e.id for e in seen.events] == [created.id], "the event")
    await orders.close()


async def test_a_service_waits_for_an_unreachable_broker_instead_of_dying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FlakyBroker(MemoryBroker())
    broker.subscribe_failures = 2
    service = payments(tmp_path, broker)
    async with running(service.run):
        await eventually(service.ready.is_set, "the subscription", within=15)
    assert "cannot subscribe" in caplog.text and "memory://" in caplog.text
    await service.close()


async def test_a_payload_that_is_not_json_fails_at_the_emit(tmp_path: Path) -> None:
    orders = Service("orders", tmp_path / "orders.db", MemoryBroker())
    with pytest.raises(MalformedEventError):
        async with orders.transaction() as tx:
            tx.emit("OrderCreated", {"when": object()})
    assert await orders.db.backlog() == 0
    await orders.close()


def test_handlers_are_checked_when_declared(tmp_path: Path) -> None:
    service = payments(tmp_path, MemoryBroker())
    with pytest.raises(ServiceDefinitionError, match="already handles 'OrderCreated'"):
        service.on("OrderCreated")(lambda event, tx: None)
    with pytest.raises(ServiceDefinitionError, match="concurrency"):
        Service("x", tmp_path / "x.db", MemoryBroker(), concurrency=0)
    assert service.streams == ["events"]


async def test_an_event_over_the_broker_s_limit_fails_at_emit_and_rolls_back(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker(max_event_bytes=2_000)
    service = Service("payments", tmp_path / "payments.db", broker, stream="s")

    async def emit_both() -> None:
        async with service.transaction() as tx:
            tx.emit("Small", {"n": 1})
            tx.emit("Huge", {"blob": "x" * 5_000}, correlation_id="o-1")

    with pytest.raises(EventTooLargeError) as refused:
        await emit_both()
    error = refused.value
    assert (error.event_type, error.limit) == ("Huge", 2_000) and error.size > 5_000
    assert "over the 2,000 bytes the broker takes" in str(error)
    assert await service.db.backlog() == 0  # the small one went with the transaction
    with pytest.raises(EventTooLargeError, match="memory://"):
        await broker.publish("s", Event.new("Huge", "x" * 5_000, source="t"))
    await service.close()
    await broker.close()
