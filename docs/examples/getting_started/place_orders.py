"""Start orders with a Client and wait for the workers to finish them.

The client only writes each saga's first record and returns; any `sagakit worker` serving
`order@1` on the same database claims and runs it. `result` waits for the outcome without
polling (LISTEN/NOTIFY on PostgreSQL).
"""

import asyncio
import os
import sys

from sagakit import Client, open_store

from shop import order


async def main(count: int) -> None:
    store = await open_store(os.environ["SAGAKIT_DB"])
    try:
        client = Client(store)
        ids = [
            await client.start(order, {"order_id": f"web-{n}", "quantity": 1 + n % 4})
            for n in range(count)
        ]
        for saga_id in ids:
            outcome = await client.result(saga_id, timeout=60)
            print(saga_id, outcome.status.value)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
