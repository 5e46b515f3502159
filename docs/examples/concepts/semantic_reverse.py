"""Compensation is a semantic reverse: it is handed the saga's input and the result its step
recorded, and undoes the business effect (a refund, a cancellation), newest step first."""

import asyncio

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store

undone: list[str] = []

# --8<-- [start:saga]
stay = Saga("book_stay", version=1)


async def cancel_room(ctx: CompensationContext) -> None:
    # the hotel knows the booking by the id it gave, not by anything in the input
    undone.append(f"cancel booking {ctx.result['booking_id']} for {ctx.input['guest']}")


@stay.step(compensate=cancel_room)
async def book_room(ctx: StepContext) -> dict[str, str]:
    return {"booking_id": f"H-{ctx.input['nights']}N"}


async def refund_card(ctx: CompensationContext) -> None:
    # a refund, not a deleted row: the charge stays on the statement, and so does this
    undone.append(f"refund {ctx.result['amount']} on {ctx.result['payment_id']}")


@stay.step(compensate=refund_card)
async def charge_card(ctx: StepContext) -> dict[str, object]:
    return {"payment_id": "pay-81", "amount": 120 * ctx.input["nights"]}


async def give_back_points(ctx: CompensationContext) -> None:
    undone.append(f"return {ctx.result['points']} points, expiring {ctx.result['expires']}")


@stay.step(compensate=give_back_points)
async def redeem_points(ctx: StepContext) -> dict[str, object]:
    return {"points": 500, "expires": "2026-03-31"}  # the undo must restore this expiry


@stay.pivot()
async def confirm_with_hotel(ctx: StepContext) -> None:
    raise RuntimeError("the hotel's channel manager refused the booking")


# --8<-- [end:saga]


async def main() -> None:
    undone.clear()
    store = await open_store("memory://")
    result = await Engine(store, [stay]).run(stay, {"guest": "Ada", "nights": 3})
    await store.close()
    assert result.status is SagaStatus.COMPENSATED
    assert result.reason == (
        "step 'confirm_with_hotel' failed: the hotel's channel manager refused the booking"
    )
    assert undone == [
        "return 500 points, expiring 2026-03-31",
        "refund 360 on pay-81",
        "cancel booking H-3N for Ada",
    ]
    print(result.status.value, "--", result.reason)
    for line in undone:
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
