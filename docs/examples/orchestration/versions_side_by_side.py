"""Two versions of one saga side by side: every instance finishes on the version it started
on, and a worker claims only the versions it registered."""

import asyncio

from sagakit import (
    Client,
    CompensationContext,
    Saga,
    SagaResult,
    SagaStatus,
    StepContext,
    Store,
    Worker,
    open_store,
)
from sagakit.operations import versions


async def refund(ctx: CompensationContext) -> None:
    pass


async def release(ctx: CompensationContext) -> None:
    pass


async def charge(ctx: StepContext) -> str:
    return "charged"


async def reserve(ctx: StepContext) -> str:
    return "reserved"


async def ship(ctx: StepContext) -> str:
    return "shipped"


# --8<-- [start:versions]
order_v1 = Saga("place_order", version=1)
order_v1.add(charge, compensate=refund).add(ship, kind="pivot")

order_v2 = Saga("place_order", version=2)  # v2 reserves stock before shipping
order_v2.add(charge, compensate=refund).add(reserve, compensate=release).add(ship, kind="pivot")
# --8<-- [end:versions]


async def drive(store: Store, sagas: list[Saga], saga_id: str) -> SagaResult:
    """Run a worker of ``sagas`` until ``saga_id`` is over; return its outcome."""
    stop = asyncio.Event()
    working = asyncio.create_task(Worker(store, sagas, poll=0.05).run(stop))
    outcome = await Client(store).result(saga_id, timeout=30)
    print(f"a worker of {', '.join(s.key for s in sagas)} ran {saga_id}; now:")
    for info in await versions(store):  # what `sagakit versions` shows
        stranded = "  (nobody to drive it)" if info.stranded else ""
        print(f"  {info.key}  in flight {info.in_flight}{stranded}")
    stop.set()
    await working
    return outcome


async def main() -> None:
    store = await open_store("memory://")
    client = Client(store)
    await client.start(order_v1, {"order": 1}, saga_id="old-1")  # started before the deploy
    await client.start(order_v2, {"order": 2}, saga_id="new-1")

    new = await drive(store, [order_v2], "new-1")
    old_row = await store.load("old-1")
    assert old_row is not None and old_row.instance.status is SagaStatus.PENDING  # untouched

    old = await drive(store, [order_v1, order_v2], "old-1")
    await store.close()
    assert new.status is old.status is SagaStatus.COMPLETED
    assert (new.version, list(new.results)) == (2, ["charge", "reserve", "ship"])
    assert (old.version, list(old.results)) == (1, ["charge", "ship"])  # v1's steps
    print("old-1 finished on version", old.version, "with steps", list(old.results))


if __name__ == "__main__":
    asyncio.run(main())
