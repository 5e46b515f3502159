"""The three step kinds, and the definitions sagakit refuses when they are declared."""

import asyncio
from collections.abc import Callable

from sagakit import (
    CompensationContext,
    Engine,
    Saga,
    SagaDefinitionError,
    SagaStatus,
    StepContext,
    StepKind,
    open_store,
)


async def undo(ctx: CompensationContext) -> None:
    pass


async def work(ctx: StepContext) -> None:
    pass


# --8<-- [start:kinds]
trip = Saga("book_trip", version=1)
trip.add(work, name="reserve_flight", compensate=undo)  # compensatable: has an undo
trip.add(work, name="reserve_hotel", compensate=undo)  # compensatable
trip.add(work, name="charge_card", kind="pivot")  # go/no-go: after it, only forward
trip.add(work, name="email_itinerary", kind="retriable")  # retried until it succeeds
# --8<-- [end:kinds]


# --8<-- [start:refused]
def refusals() -> list[Callable[[Saga], object]]:
    return [
        lambda s: s.add(work, name="reserve_flight"),  # no compensation
        lambda s: s.add(work, name="a", kind="pivot").add(work, name="b", compensate=undo),
        lambda s: s.add(work, name="a", kind="pivot").add(work, name="b", kind="pivot"),
        lambda s: s.add(work, name="charge_card", kind="pivot", compensate=undo),
        lambda s: s.add(work, name="a", kind="retriable").add(work, name="b", kind="pivot"),
        lambda s: s.add(work, name="a", compensate=undo).add(work, name="a", compensate=undo),
        lambda s: s.add(work, name="a:b", compensate=undo),  # ':' separates key parts
        lambda s: s.add(work, name="a", compensate=undo, timeout=0),
    ]


# --8<-- [end:refused]


async def main() -> None:
    assert [step.kind for step in trip.steps] == [
        StepKind.COMPENSATABLE,
        StepKind.COMPENSATABLE,
        StepKind.PIVOT,
        StepKind.RETRIABLE,
    ]
    store = await open_store("memory://")
    result = await Engine(store, [trip]).run(trip, {"traveller": "ada"})
    assert result.status is SagaStatus.COMPLETED
    try:
        Engine(store, [Saga("empty", version=1)])  # checked when it is registered
    except SagaDefinitionError as error:
        print(error)
    await store.close()
    for declare in refusals():
        try:
            declare(Saga("bad", version=1))
        except SagaDefinitionError as error:
            print(error)
        else:
            raise AssertionError("sagakit accepted a wrong definition")


if __name__ == "__main__":
    asyncio.run(main())
