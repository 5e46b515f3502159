"""A payment service whose charges are SQLAlchemy models, on a sync engine.

A handler's ORM insert, the inbox row of the event it handles and the ``PaymentTaken`` it
emits commit in one transaction, or, when the handler raises, none of them does. Run it as
it is (a SQLite file in the current directory), or pass another engine URL:
``python orm_service.py postgresql+psycopg://app@127.0.0.1/shop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from sagakit import Event, MemoryBroker, Service, Transaction
from sagakit.bus import Delivery
from sagakit.choreography.sqlalchemy import SqlAlchemyDatabase
from sagakit.choreography.sqlalchemy import metadata as sagakit_tables
from sqlalchemy import Engine, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

STREAM = "orders"


# --8<-- [start:models]
class Base(DeclarativeBase):
    pass


class Charge(Base):
    __tablename__ = "charges"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cents: Mapped[int]


# --8<-- [end:models]


class CardDeclined(Exception):
    pass


# --8<-- [start:service]
def payment_service(engine: Engine, broker: MemoryBroker) -> Service:
    sessions = sessionmaker(engine, expire_on_commit=False)  # your own session options
    db = SqlAlchemyDatabase(engine, sessions=sessions)
    payments = Service("payments", db, broker, stream=STREAM)

    @payments.on("OrderPlaced")
    def charge(event: Event, tx: Transaction) -> None:  # runs in a thread: it may block
        session: Session = tx.db  # the transaction's session: inbox and outbox go through it
        order = event.data
        session.add(Charge(order_id=order["order_id"], cents=order["cents"]))
        tx.emit("PaymentTaken", {"order_id": order["order_id"]})
        if order["card"] == "tok_stolen":
            raise CardDeclined(order["order_id"])  # the charge, inbox row and event all go

    return payments


# --8<-- [end:service]

# --8<-- [start:migrations]
target_metadata = [Base.metadata, sagakit_tables]  # in Alembic's env.py, or create_all:
# --8<-- [end:migrations]


def counts(engine: Engine) -> tuple[int, int, int]:
    """Charges, inbox rows and outbox rows, as committed."""
    with Session(engine) as session:
        charges = session.scalar(select(func.count()).select_from(Charge))
        inbox = session.scalar(text("SELECT count(*) FROM sagakit_inbox"))
        outbox = session.scalar(text("SELECT count(*) FROM sagakit_outbox"))
    return (charges or 0, inbox or 0, outbox or 0)


def placed(order_id: str, card: str) -> Event:
    data = {"order_id": order_id, "cents": 4200, "card": card}
    return Event.new("OrderPlaced", data, source="orders", correlation_id=order_id)


# --8<-- [start:main]
async def main(url: str = "sqlite:///payments.db") -> None:
    engine = create_engine(url)
    for tables in target_metadata:  # a fresh start; your migrations, in a real service
        tables.drop_all(engine)
        tables.create_all(engine)
    broker = MemoryBroker()
    payments = payment_service(engine, broker)

    good, declined = placed("A-1001", "tok_visa"), placed("A-1002", "tok_stolen")
    for event, attempt in ((good, 1), (good, 2), (declined, 1)):  # 2: a redelivery
        delivery = Delivery(event, attempt, event.to_json(), STREAM, "payments")
        with contextlib.suppress(CardDeclined):  # the broker would deliver it again
            await payments.handle(delivery)
    assert counts(engine) == (1, 1, 1)  # one charge, one inbox row, one PaymentTaken
    assert (await payments.relay.publish_pending()).sent == 1  # the relay's pass

    await payments.db.close()
    await broker.close()
    engine.dispose()
    print("charged A-1001 once, A-1002 left nothing, 1 event published")


# --8<-- [end:main]


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
