import asyncio

from sagakit import Client, open_store

from quickstart import order


async def main() -> None:
    client = Client(await open_store("sqlite:///orders.db"))
    saga_id = await client.start(order, {"order_id": 9, "quantity": 1})  # returns at once
    outcome = await client.result(saga_id, timeout=30)  # a worker runs it meanwhile
    print(outcome.status.value)


if __name__ == "__main__":
    asyncio.run(main())
