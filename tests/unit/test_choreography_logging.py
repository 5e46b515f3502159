"""Choreography logs what an operator must hear of, with the saga's and the event's facts as
fields, and never a password from a broker's URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from choreography_fakes import eventually, running

from sagakit import MemoryStore, SagaState, SagaStatus
from sagakit.bus import Delivery, Event, MemoryBroker
from sagakit.bus.memory import MemoryHub
from sagakit.choreography import Choreography, ChoreographyStep, Service, Tracker, Transaction
from sagakit.cli._logs import JsonLines
from sagakit.errors import BrokerConnectionError

SECRET = "s3cretPW"
URL = f"memory://admin:{SECRET}@hub"
LOGGER = "sagakit.choreography"

CHECKOUT = Choreography(
    "checkout",
    version=3,
    steps=[
        ChoreographyStep("create_order", succeeded="OrderCreated", compensated="OrderCancelled"),
        ChoreographyStep("charge_card", succeeded="CardCharged", failed="CardDeclined"),
        ChoreographyStep("ship", succeeded="Shipped", kind="pivot"),
    ],
    starts="OrderCreated",
    completes="Shipped",
    fails="CardDeclined",
    compensated="OrderCancelled",
)


class RefusingBroker(MemoryBroker):
    """A memory broker whose first ``refusals`` publishes fail, as while a broker is down."""

    def __init__(self, url: str, hub: MemoryHub, refusals: int) -> None:
        super().__init__(url, hub=hub)
        self.refusals = refusals

    async def publish(self, stream: str, event: Event) -> None:
        if self.refusals:
            self.refusals -= 1
            raise BrokerConnectionError(self.url, "connection refused")
        await super().publish(stream, event)


def order_service(tmp_path: Path, broker: MemoryBroker) -> Service:
    orders = Service("orders", tmp_path / "orders.db", broker)

    @orders.on("CardDeclined")
    def cancel(event: Event, tx: Transaction) -> None:
        tx.emit("OrderCancelled", {"order_id": event.data["order_id"]})

    return orders


def payment_service(tmp_path: Path, broker: MemoryBroker) -> Service:
    payments = Service("payments", tmp_path / "payments.db", broker, max_attempts=2)

    @payments.on("OrderCreated")
    def charge(event: Event, tx: Transaction) -> None:
        card = event.data["card"]  # a poisoned order has none: KeyError, every time
        tx.emit("CardDeclined" if card == "stolen" else "CardCharged", event.data)

    return payments


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def find(records: list[logging.LogRecord], text: str) -> Iterator[logging.LogRecord]:
    return (r for r in records if text in r.getMessage())


async def test_a_compensated_choreography_leaves_structured_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sagakit")
    hub, store = MemoryHub(), MemoryStore()
    orders = order_service(tmp_path, RefusingBroker(URL, hub, refusals=2))
    payments = payment_service(tmp_path, MemoryBroker(URL, hub=hub))
    tracker = Tracker(store, MemoryBroker(URL, hub=hub), [CHECKOUT])

    async with running(tracker.run), running(payments.run), running(orders.run):
        await eventually(
            lambda: tracker.ready.is_set() and payments.ready.is_set() and orders.ready.is_set(),
            "the subscriptions",
        )
        await orders.publish(
            "OrderCreated", {"order_id": "o-1", "card": "stolen"}, correlation_id="o-1"
        )
        await orders.publish("OrderCreated", {"order_id": "o-2"}, correlation_id="o-2")
        await eventually(
            lambda: (
                any(find(ours(caplog), "saga o-1 (checkout@3) is compensated"))
                and any(find(ours(caplog), "dead-lettered"))
            ),
            "o-1 compensated and o-2 dead-lettered",
        )
    await orders.close()
    await payments.close()
    records = ours(caplog)

    stored = await store.load("o-1")
    assert stored is not None
    assert SagaState.from_records("o-1", stored.records).status is SagaStatus.COMPENSATED

    refused = next(r for r in find(records, "wait in the outbox") if vars(r)["attempt"] == 1)
    assert refused.levelno == logging.WARNING
    assert {vars(refused)[f] for f in ("event_type", "stream", "service")} == {
        "OrderCreated",
        "events",
        "orders relay",
    }
    assert vars(refused)["saga_id"] in {"o-1", "o-2"} and "next try in" in refused.getMessage()
    assert "memory://admin:***@hub" in refused.getMessage()
    recovered = next(find(records, "publishing again"))
    assert recovered.levelno == logging.INFO and "left in the outbox" in recovered.getMessage()

    handled = next(find(records, "payments: handled OrderCreated"))
    assert handled.levelno == logging.DEBUG
    assert (vars(handled)["saga_id"], vars(handled)["attempt"]) == ("o-1", 1)

    retried = next(r for r in find(records, "failed (attempt 1 of 2)"))
    dead = next(find(records, "dead-lettered"))
    assert retried.levelno == logging.WARNING and dead.levelno == logging.ERROR
    assert (vars(dead)["saga_id"], vars(dead)["service"], vars(dead)["attempt"]) == (
        "o-2",
        "payments",
        2,
    )
    assert dead.exc_info is not None and "KeyError" in dead.getMessage()
    assert len(await payments.broker.dead_letters("events")) == 1

    compensating = next(find(records, "saga o-1 (checkout@3) is compensating"))
    compensated = next(find(records, "saga o-1 (checkout@3) is compensated"))
    assert compensating.levelno == logging.INFO and compensated.levelno == logging.WARNING
    fields = vars(compensated)
    assert (fields["saga_id"], fields["saga_name"], fields["saga_version"]) == (
        "o-1",
        "checkout",
        3,
    )
    assert (fields["step"], fields["event_type"]) == ("create_order", "OrderCancelled")
    assert fields["service"] == "sagakit-tracker" and fields["stream"] == "events"

    line = JsonLines().format(compensated)
    assert '"event_type": "OrderCancelled"' in line and '"saga_id": "o-1"' in line
    for record in caplog.records:
        assert SECRET not in JsonLines().format(record)
        assert SECRET not in str(vars(record))
    assert SECRET not in caplog.text


async def test_a_redelivery_is_logged_at_info_and_routine_at_debug_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sagakit")
    payments = payment_service(tmp_path, MemoryBroker(URL))
    event = Event.new("OrderCreated", {"order_id": "o-3", "card": "visa"}, source="orders")
    first = Delivery(event, 1, event.to_json(), "events", "payments")

    await payments.handle(first)
    assert not ours(caplog)  # routine: debug, which is off
    await payments.handle(Delivery(event, 2, event.to_json(), "events", "payments"))
    await payments.close()

    again = next(find(ours(caplog), "came again, already handled"))
    assert again.levelno == logging.INFO
    assert (vars(again)["event_id"], vars(again)["attempt"]) == (event.id, 2)
    assert payments.duplicates == 1
