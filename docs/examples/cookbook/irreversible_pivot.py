"""Recipe: a step that cannot be undone at all is the pivot.

Handing the parcel to the courier cannot be taken back, so it is the pivot: it runs only
after every undoable step succeeded, and after it the saga only goes forward. The
definition refuses anything else when it is declared.
"""

import asyncio
from typing import Any

from sagakit import (
    Client,
    CompensationContext,
    Engine,
    OperatorActionError,
    Saga,
    SagaDefinitionError,
    SagaStatus,
    StepContext,
    open_store,
)


def build_saga(effects: list[str]) -> Saga:
    order = Saga("place_order")

    # --8<-- [start:saga]
    async def refund(ctx: CompensationContext) -> None:
        effects.append(f"refund {ctx.saga_id}")

    @order.step(compensate=refund)
    async def charge(ctx: StepContext) -> None:
        effects.append(f"charge {ctx.saga_id}")

    @order.pivot()  # irreversible: no compensation, and nothing undoable after it
    async def hand_to_courier(ctx: StepContext) -> dict[str, Any]:
        if not ctx.input["address"]:
            raise RuntimeError("the courier refuses a parcel without an address")
        effects.append(f"hand over {ctx.saga_id}")
        return {"parcel": f"P-{ctx.saga_id}"}

    @order.retriable()  # after the pivot: retried until it succeeds, never undone
    async def email_tracking(ctx: StepContext) -> None:
        scan = await ctx.wait_for("parcel_scanned")  # the courier's first scan of it
        effects.append(f"email {ctx.results['hand_to_courier']['parcel']} {scan}")

    # --8<-- [end:saga]
    return order


# --8<-- [start:refused]
async def ship(ctx: StepContext) -> None: ...
async def gift_wrap(ctx: StepContext) -> None: ...
async def unwrap(ctx: CompensationContext) -> None: ...


def undo_after_the_pivot() -> Saga:
    return Saga("wrong_order").add(ship, kind="pivot").add(gift_wrap, compensate=unwrap)


def irreversible_step_left_undoable() -> Saga:
    return Saga("wrong_order").add(ship)  # compensatable unless it says otherwise


# --8<-- [end:refused]


async def main() -> None:
    store, effects = await open_store("memory://"), list[str]()
    order = build_saga(effects)
    engine, client = Engine(store, [order], hand_back=True), Client(store)

    # --8<-- [start:story]
    refused = await engine.run(order, {"address": ""}, saga_id="o-1")
    assert refused.status is SagaStatus.COMPENSATED  # the pivot failed: undo what came before
    shipped = await engine.run(order, {"address": "1 Loop Rd"}, saga_id="o-2")
    assert shipped.waiting_for == "parcel_scanned"  # past the pivot, waiting to go forward
    try:
        await client.cancel("o-2", reason="the customer asked")
    except OperatorActionError as error:
        print(error)  # and nothing is recorded
    await client.signal("o-2", "parcel_scanned", "Leipzig hub")
    assert (await engine.resume_saga("o-2")).status is SagaStatus.COMPLETED
    assert effects == [
        *("charge o-1", "refund o-1"),
        *("charge o-2", "hand over o-2", "email P-o-2 Leipzig hub"),
    ]
    for declare in (undo_after_the_pivot, irreversible_step_left_undoable):
        try:
            declare()
        except SagaDefinitionError as error:
            print(error)
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
