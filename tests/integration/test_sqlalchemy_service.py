"""A real service on SQLAlchemy's ORM: a handler's row, its inbox row and its event are one.

The payment service keeps charges as a declarative model on PostgreSQL and MariaDB (a
database of the test's own on each), through a sync engine (a plain handler, run in the
adapter's threads) and an async one (an ``async def`` handler). What is shown:

- a handled event leaves the charge, the inbox row and the ``PaymentTaken`` outbox row,
  committed together, and the relay publishes the event;
- a commit that fails (the charge breaks the table's key, found at the session's flush,
  after the inbox and outbox rows were written) leaves none of the three, and once the
  cause is gone the redelivery is handled;
- a handler that raises is redelivered by the broker and handled once: one charge, one
  inbox row, one event published.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sagakit.bus import Delivery, Event, MemoryBroker
from sagakit.choreography import Service, Transaction
from sagakit.choreography.sqlalchemy import AsyncSqlAlchemyDatabase, SqlAlchemyDatabase
from sagakit.errors import LocalDatabaseError
from sqlalchemy_databases import FreshDatabase, run_sql

STREAM = "orders"
WAIT = 30.0


class Base(DeclarativeBase):
    pass


class Charge(Base):
    """The payment service's own table, as its ORM declares it."""

    __tablename__ = "charges"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cents: Mapped[int]


class CardNetworkDown(Exception):
    """The first attempt's failure, after the handler did all its work."""


@dataclass
class Payments:
    """The service under test, the database it runs on, and what its handler saw."""

    service: Service
    fresh: FreshDatabase
    db: SqlAlchemyDatabase | AsyncSqlAlchemyDatabase
    fail_once: set[str]
    calls: list[str]
    threads: set[str]

    async def scalar(self, query: str, **params: object) -> int:
        [(found,)] = await run_sql(self.db.engine, query, **params)
        return int(found)

    async def three(self, event: Event) -> tuple[int, int, int]:
        """Charges of the event's order, its inbox rows, and its saga's outbox rows."""
        return (
            await self.scalar(
                "SELECT count(*) FROM charges WHERE order_id = :id", id=event.data["order_id"]
            ),
            await self.scalar(
                "SELECT count(*) FROM sagakit_inbox WHERE event_id = :id", id=event.id
            ),
            await self.scalar(
                "SELECT count(*) FROM sagakit_outbox WHERE correlation_id = :id",
                id=event.correlation_id,
            ),
        )


def sync_handler(payments: Payments) -> None:
    @payments.service.on("OrderPlaced")
    def charge(event: Event, tx: Transaction) -> None:
        payments.calls.append(event.id)
        payments.threads.add(threading.current_thread().name)
        session: Session = tx.db
        session.add(Charge(order_id=event.data["order_id"], cents=event.data["cents"]))
        tx.emit("PaymentTaken", {"order_id": event.data["order_id"]})
        if event.id in payments.fail_once:
            session.flush()  # the charge is in the database's transaction when it fails
            payments.fail_once.discard(event.id)
            raise CardNetworkDown(event.id)


def async_handler(payments: Payments) -> None:
    @payments.service.on("OrderPlaced")
    async def charge(event: Event, tx: Transaction) -> None:
        payments.calls.append(event.id)
        session: AsyncSession = tx.db
        session.add(Charge(order_id=event.data["order_id"], cents=event.data["cents"]))
        tx.emit("PaymentTaken", {"order_id": event.data["order_id"]})
        if event.id in payments.fail_once:
            await session.flush()
            payments.fail_once.discard(event.id)
            raise CardNetworkDown(event.id)


SETUPS = [
    pytest.param(("postgres", False), marks=pytest.mark.postgres, id="postgres-sync"),
    pytest.param(("postgres", True), marks=pytest.mark.postgres, id="postgres-async"),
    pytest.param(("mariadb", False), marks=pytest.mark.mariadb, id="mariadb-sync"),
    pytest.param(("mariadb", True), marks=pytest.mark.mariadb, id="mariadb-async"),
]


@pytest.fixture(params=SETUPS)
async def payments(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Payments]:
    kind, asynchronous = request.param
    fresh = FreshDatabase(kind, tmp_path)
    await fresh.create()
    db: SqlAlchemyDatabase | AsyncSqlAlchemyDatabase
    if asynchronous:
        engine = fresh.async_engine()
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        db = AsyncSqlAlchemyDatabase(engine)
    else:
        sync_engine = fresh.engine()
        await asyncio.to_thread(Base.metadata.create_all, sync_engine)
        db = SqlAlchemyDatabase(sync_engine)
    await db.create_tables()
    broker = MemoryBroker()
    service = Service("payments", db, broker, stream=STREAM, relay_poll=0.05)
    made = Payments(service, fresh, db, set(), [], set())
    (async_handler if asynchronous else sync_handler)(made)
    yield made
    await db.close()
    await broker.close()
    await fresh.drop()


def order(order_id: str, cents: int = 4200) -> Event:
    return Event.new(
        "OrderPlaced",
        {"order_id": order_id, "cents": cents},
        source="orders",
        correlation_id=order_id,
    )


def delivery(event: Event, attempt: int) -> Delivery:
    return Delivery(event, attempt, event.to_json(), STREAM, "payments")


async def test_the_charge_its_inbox_row_and_its_event_commit_together(payments: Payments) -> None:
    placed = order("o-1")
    await payments.service.handle(delivery(placed, 1))
    assert await payments.three(placed) == (1, 1, 1)
    await payments.service.handle(delivery(placed, 2))  # a redelivery: nothing more
    assert await payments.three(placed) == (1, 1, 1)
    assert (payments.service.handled, payments.service.duplicates) == (1, 1)
    async with payments.db.claim(10) as claim:
        [taken] = claim.rows
    assert (taken.event.type, taken.event.causation_id) == ("PaymentTaken", placed.id)
    if isinstance(payments.db, SqlAlchemyDatabase):  # a plain handler never runs on the loop
        assert payments.threads and all(
            name.startswith("sagakit-sqlalchemy") for name in payments.threads
        )


async def test_a_commit_that_fails_leaves_none_of_the_three(payments: Payments) -> None:
    """The charge breaks the key only at the flush the commit makes, after the inbox and
    outbox rows were written in the same transaction: all three roll back."""
    await run_sql(payments.db.engine, "INSERT INTO charges (order_id, cents) VALUES ('o-2', 1)")
    placed = order("o-2")
    with pytest.raises(LocalDatabaseError, match="service database"):
        await payments.service.handle(delivery(placed, 1))
    assert await payments.three(placed) == (1, 0, 0)  # only the row that was there before

    await run_sql(payments.db.engine, "DELETE FROM charges WHERE order_id = 'o-2'")
    await payments.service.handle(delivery(placed, 2))  # the broker's redelivery
    assert await payments.three(placed) == (1, 1, 1)
    assert await payments.scalar("SELECT cents FROM charges WHERE order_id = 'o-2'") == 4200


async def test_a_handler_that_raises_is_redelivered_and_handled_once(payments: Payments) -> None:
    broker = payments.service.broker
    published: list[Event] = []
    arrived = asyncio.Event()

    async def audit(got: Delivery) -> None:
        if got.event.type == "PaymentTaken":
            published.append(got.event)
            arrived.set()

    await broker.subscribe(STREAM, "audit", audit)
    placed = order("o-3")
    payments.fail_once.add(placed.id)
    stop = asyncio.Event()
    running = asyncio.create_task(payments.service.run(stop))
    try:
        async with asyncio.timeout(WAIT):
            await payments.service.ready.wait()
            await broker.publish(STREAM, placed)
            await arrived.wait()
    finally:
        stop.set()
        await running
    assert payments.calls == [placed.id, placed.id]  # the failed attempt, then the redelivery
    assert [event.causation_id for event in published] == [placed.id]
    assert await payments.three(placed) == (1, 1, 1)
    assert await payments.db.backlog() == 0  # the event is marked sent
