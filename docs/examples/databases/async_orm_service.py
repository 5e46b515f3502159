"""The payment service on an async engine: ``tx.db`` is an ``AsyncSession``.

The same models and the same promise as ``orm_service.py``, for a service whose handlers
are ``async def``. Run it as it is (aiosqlite, a file in the current directory), or pass
another async engine URL: ``python async_orm_service.py postgresql+asyncpg://app@127.0.0.1/shop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from sagakit import Event, MemoryBroker, Service, Transaction
from sagakit.bus import Delivery
from sagakit.choreography.sqlalchemy import AsyncSqlAlchemyDatabase
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from orm_service import STREAM, CardDeclined, Charge, placed, target_metadata


# --8<-- [start:service]
def payment_service(database: AsyncSqlAlchemyDatabase, broker: MemoryBroker) -> Service:
    payments = Service("payments", database, broker, stream=STREAM)

    @payments.on("OrderPlaced")
    async def charge(event: Event, tx: Transaction) -> None:
        session: AsyncSession = tx.db
        order = event.data
        session.add(Charge(order_id=order["order_id"], cents=order["cents"]))
        await session.flush()  # the row is in the database, inside the transaction
        tx.emit("PaymentTaken", {"order_id": order["order_id"]})
        if order["card"] == "tok_stolen":
            raise CardDeclined(order["order_id"])

    return payments


# --8<-- [end:service]


# --8<-- [start:main]
async def main(url: str = "sqlite+aiosqlite:///payments.db") -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:  # a fresh start; your migrations, in a real one
        for tables in target_metadata:
            await connection.run_sync(tables.drop_all)
    broker = MemoryBroker()
    database = AsyncSqlAlchemyDatabase(engine)
    payments = payment_service(database, broker)
    async with engine.begin() as connection:
        await connection.run_sync(Charge.metadata.create_all)
    await database.create_tables()  # the outbox and inbox, where they are missing

    for event in (placed("A-2001", "tok_visa"), placed("A-2002", "tok_stolen")):
        with contextlib.suppress(CardDeclined):
            await payments.handle(Delivery(event, 1, event.to_json(), STREAM, "payments"))
    async with AsyncSession(engine) as session:
        charged = await session.scalars(select(Charge.order_id))
        assert list(charged) == ["A-2001"]
        assert await session.scalar(select(func.count()).select_from(Charge)) == 1
    assert await payments.db.backlog() == 1  # A-2001's PaymentTaken, waiting for the relay

    await payments.db.close()
    await broker.close()
    await engine.dispose()
    print("charged A-2001; A-2002 left nothing")


# --8<-- [end:main]

if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
