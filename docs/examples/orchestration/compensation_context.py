"""What a compensation is handed: the action's recorded result, or, for a step that failed
part-way (``compensate_on_failure=True``), the error and the key the action used; and its
own attempt count and key, for its own retries."""

import asyncio
from typing import Any

from sagakit import (
    CompensationContext,
    Engine,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)

held: dict[str, list[str]] = {}  # the venue's seat holds, by the key they were made under
undo_calls: list[dict[str, Any]] = []

# --8<-- [start:saga]
event = Saga("book_event", version=1)


async def refund_ticket(ctx: CompensationContext) -> None:
    undo_calls.append({"step": ctx.step, "attempt": ctx.attempt, "result": ctx.result})
    if ctx.attempt == 1:
        raise ConnectionError("payment service timed out")  # retried by compensation_retry


@event.step(compensate=refund_ticket, compensation_retry=Retry(attempts=3, backoff=0.01))
async def sell_ticket(ctx: StepContext) -> dict[str, str]:
    return {"ticket": "T-100"}


async def release_seats(ctx: CompensationContext) -> None:
    undo_calls.append(
        {
            "step": ctx.step,
            "result": ctx.result,  # None: the action never returned
            "error": ctx.error,  # {"type", "message", ...}: how it failed
            "key": ctx.idempotency_key,  # this compensation's own key
            "action_key": ctx.action_key,  # the key the action was called with
        }
    )
    held.pop(ctx.action_key, None)  # undo whatever the action did under its key


@event.step(compensate=release_seats, compensate_on_failure=True)
async def hold_seats(ctx: StepContext) -> None:
    seats = held.setdefault(ctx.idempotency_key, [])
    for seat in ctx.input["seats"]:
        if seat == "B7":
            raise RuntimeError("seat B7 is taken")  # after A1 and A2 were held
        seats.append(seat)


@event.pivot()
async def send_tickets(ctx: StepContext) -> None:
    pass


# --8<-- [end:saga]


async def main() -> None:
    held.clear()
    undo_calls.clear()
    store = await open_store("memory://")
    seats = ["A1", "A2", "B7"]
    result = await Engine(store, [event]).run(event, {"seats": seats}, saga_id="e-1")
    await store.close()
    assert result.status is SagaStatus.COMPENSATED
    assert held == {}  # the partial hold was released
    partial, *refunds = undo_calls
    assert partial["step"] == "hold_seats" and partial["result"] is None
    assert partial["error"]["type"] == "RuntimeError"
    assert partial["error"]["message"] == "seat B7 is taken"
    assert partial["key"] == "e-1:hold_seats:compensation"
    assert partial["action_key"] == "e-1:hold_seats:action"
    assert refunds == [
        {"step": "sell_ticket", "attempt": 1, "result": {"ticket": "T-100"}},
        {"step": "sell_ticket", "attempt": 2, "result": {"ticket": "T-100"}},
    ]
    print("hold_seats undone with error:", partial["error"]["message"])
    print("sell_ticket undone on compensation attempt", refunds[-1]["attempt"])


if __name__ == "__main__":
    asyncio.run(main())
