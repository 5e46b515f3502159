"""Start two orders for another process to drive, as a web front end would.

The order services keep their state in files under ./services (stock and loyalty points
are seeded here), so that a worker in another process, built by
`sagakit.demo:from_environment` over the same directory, sees what this process saw. Nothing
is driven here: the sagas are recorded in orders.db, due now, for any worker to take.
"""

import asyncio
from datetime import date, timedelta

from sagakit import Client, SagaStatus, open_store
from sagakit.demo import build_order_saga, open_services, order_input

ORDERS = {"B-2001": "ada", "B-2002": "bob"}


async def main() -> None:
    with open_services("services") as services:
        services.inventory.add_stock("LAMP", len(ORDERS))
        for customer in ORDERS.values():
            services.loyalty.grant(customer, 500, date.today() + timedelta(days=90))
        saga = build_order_saga(services)  # only its name and version matter for a start
    store = await open_store("sqlite:///orders.db")
    try:
        client = Client(store)
        for order_id, customer in ORDERS.items():
            await client.start(saga, order_input(order_id, customer), saga_id=order_id)
            assert (await client.state(order_id)).status is SagaStatus.PENDING
    finally:
        await store.close()
    print(f"started {', '.join(ORDERS)}")


if __name__ == "__main__":
    asyncio.run(main())
