"""Queues: teams share one saga log and scale their workers apart. A worker started with
``queues=`` (``sagakit worker --queue``) drives only the sagas on those queues."""

import asyncio

from sagakit import (
    Client,
    InvalidArgumentError,
    Saga,
    SagaStatus,
    StepContext,
    Store,
    Worker,
    open_store,
)


async def refund_card(ctx: StepContext) -> None:
    pass


async def print_label(ctx: StepContext) -> None:
    pass


# --8<-- [start:queues]
refund = Saga("refund", version=1, queue="payments")
refund.add(refund_card, kind="pivot")

label = Saga("ship_parcel", version=1, queue="shipping")
label.add(print_label, kind="pivot")

every_saga = [refund, label]  # the one app module both teams deploy


async def payments_worker(store: Store, stop: asyncio.Event) -> None:
    await Worker(store, every_saga, queues=["payments"], poll=0.05).run(stop)


# --8<-- [end:queues]


async def main() -> None:
    store = await open_store("memory://")
    client = Client(store)
    await client.start(refund, {"order": 1}, saga_id="refund-1")
    await client.start(label, {"order": 1}, saga_id="label-1")

    stop = asyncio.Event()
    working = asyncio.create_task(payments_worker(store, stop))
    refunded = await client.result("refund-1", timeout=30)
    stop.set()
    await working
    assert refunded.status is SagaStatus.COMPLETED
    waiting = await store.load("label-1")
    assert waiting is not None and waiting.instance.status is SagaStatus.PENDING  # not ours

    try:
        Worker(store, every_saga, queues=["billing"])  # no saga is on it: it would idle
    except InvalidArgumentError as error:
        print("refused:", error)
    else:
        raise AssertionError("a worker for a queue with no sagas")
    await store.close()
    print("refund-1", refunded.status.value, "-- label-1", waiting.instance.status.value)


if __name__ == "__main__":
    asyncio.run(main())
