"""A client starts sagas and waits for their outcomes; a worker, sharing only the database
with it, claims and drives them. Here both run in one process, each with its own
connection to the SQLite saga log, as a web app and a ``sagakit worker`` would."""

import asyncio
from pathlib import Path

from sagakit import (
    Client,
    CompensationContext,
    Saga,
    SagaStatus,
    StepContext,
    Worker,
    open_store,
)

LOG = "sqlite:///client_and_worker.db"
order = Saga("place_order", version=1)


async def refund(ctx: CompensationContext) -> None:
    pass


@order.step(compensate=refund)
async def charge_card(ctx: StepContext) -> dict[str, str]:
    return {"payment_id": f"pay-{ctx.input['order_id']}"}


@order.pivot()
async def ship(ctx: StepContext) -> None:
    if ctx.input["order_id"] == 3:
        raise RuntimeError("address not deliverable")


def fresh_log() -> None:
    """Each run starts from an empty saga log."""
    for stale in Path().glob("client_and_worker.db*"):
        stale.unlink()


async def main() -> None:
    fresh_log()
    # --8<-- [start:worker]
    worker_store = await open_store(LOG)
    stop = asyncio.Event()
    worker = Worker(worker_store, [order], concurrency=16, poll=0.1)
    working = asyncio.create_task(worker.run(stop, grace=10.0))
    # --8<-- [end:worker]

    # --8<-- [start:client]
    client_store = await open_store(LOG)
    client = Client(client_store)
    ids = [await client.start(order, {"order_id": n}, saga_id=f"order-{n}") for n in (1, 2, 3)]
    outcomes = [await client.result(saga_id, timeout=30) for saga_id in ids]
    # --8<-- [end:client]

    stop.set()  # finish what is in flight (up to grace), hand the rest back, retire
    await working
    await client_store.close()
    await worker_store.close()
    assert [o.status for o in outcomes] == [
        SagaStatus.COMPLETED,
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
    ]
    assert outcomes[0].results["charge_card"] == {"payment_id": "pay-1"}
    for outcome in outcomes:
        print(outcome.saga_id, outcome.status.value)


if __name__ == "__main__":
    asyncio.run(main())
