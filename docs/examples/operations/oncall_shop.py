"""The shop the operations guide is on call for: orders and refunds, with their faults.

`python oncall_shop.py yesterday` places yesterday's order and `python oncall_shop.py today`
this morning's (no argument: both), with fixed ids so that every command on the page can
name them; `sagakit worker --app oncall_shop:sagas` drives them. Every effect is a line in
effects.log, standing in for a call to a payment, stock, courier or mail service: what ran,
what was undone, and that nothing ran twice. While the variable MAIL_SERVER_DOWN is set,
order@1's mail relay refuses every e-mail; order@2 (today's deploy) sends through an API.
"""

import asyncio
import os
import sys
from typing import Any

from sagakit import (
    Client,
    CompensationContext,
    CompensationImpossible,
    Retry,
    Saga,
    StepContext,
    open_store,
)

DB = os.environ.get("SAGAKIT_DB", "sqlite:///shop.db")
IN_STOCK = {"LAMP": 10, "GLOBE": 0}
BACKORDER_WAIT = 3 * 86400.0
"""An item on backorder waits up to three days for the warehouse's 'restocked' message."""


class OutOfStock(Exception):
    pass


class OrderRejected(Exception):
    pass


class MailServerDown(Exception):
    pass


def effect(what: str, key: str) -> None:
    with open("effects.log", "a") as effects:
        print(f"{what} key={key}", file=effects)


# --8<-- [start:order]
async def refund(ctx: CompensationContext) -> None:
    effect(f"refund {ctx.result['payment_id']}", ctx.idempotency_key)


async def charge_payment(ctx: StepContext) -> dict[str, Any]:
    effect(f"charge {ctx.saga_id}", ctx.idempotency_key)
    return {"payment_id": f"pay-{ctx.saga_id}"}


async def release_stock(ctx: CompensationContext) -> None:
    effect(f"release {ctx.result['reservation_id']}", ctx.idempotency_key)


async def reserve_stock(ctx: StepContext) -> dict[str, Any]:
    sku = ctx.input["sku"]
    if ctx.input.get("backorder"):  # parked, holding no worker, until the warehouse says so
        await ctx.wait_for("restocked", timeout=BACKORDER_WAIT)
    elif IN_STOCK[sku] < 1:
        raise OutOfStock(f"no {sku} in stock")
    effect(f"reserve {sku} for {ctx.saga_id}", ctx.idempotency_key)
    return {"reservation_id": f"res-{ctx.saga_id}"}


async def cancel_shipment(ctx: CompensationContext) -> None:
    if ctx.input["shipping"] == "same_day":
        raise CompensationImpossible(f"the courier already picked up {ctx.result['parcel']}")
    effect(f"cancel {ctx.result['parcel']}", ctx.idempotency_key)


async def create_shipment(ctx: StepContext) -> dict[str, Any]:
    effect(f"ship {ctx.saga_id} {ctx.input['shipping']}", ctx.idempotency_key)
    return {"parcel": f"parcel-{ctx.saga_id}"}


async def confirm_order(ctx: StepContext) -> dict[str, Any]:
    if ctx.input.get("fraud_hold"):
        raise OrderRejected(f"{ctx.saga_id} rejected: held for fraud review")
    effect(f"confirm {ctx.saga_id}", ctx.idempotency_key)
    return {"confirmed": True}


async def send_confirmation_email(ctx: StepContext) -> dict[str, Any]:
    if os.environ.get("MAIL_SERVER_DOWN"):
        raise MailServerDown("mail server smtp.shop.example is unavailable")
    effect(f"email {ctx.saga_id} via smtp", ctx.idempotency_key)
    return {"sent_by": "smtp"}


async def send_confirmation_by_api(ctx: StepContext) -> dict[str, Any]:
    effect(f"email {ctx.saga_id} via api", ctx.idempotency_key)
    return {"sent_by": "api"}


MAIL_RETRY = Retry(attempts=None, backoff=0.2, max_backoff=60.0)  # after the pivot: for ever


def order_saga(version: int) -> Saga:
    """order@1 mails through the shop's own relay; order@2, today's deploy, through an API."""
    order = Saga("order", version=version)
    order.add(charge_payment, compensate=refund)
    order.add(reserve_stock, compensate=release_stock)
    order.add(create_shipment, compensate=cancel_shipment)
    order.add(confirm_order, kind="pivot")  # from here on, only forward
    mail = send_confirmation_email if version == 1 else send_confirmation_by_api
    order.add(mail, name="send_confirmation_email", kind="retriable", retry=MAIL_RETRY)
    return order


order_v1, order_v2 = order_saga(1), order_saga(2)
# --8<-- [end:order]

refund_saga = Saga("refund", version=1)


@refund_saga.pivot()
async def issue_refund(ctx: StepContext) -> dict[str, Any]:
    effect(f"refund {ctx.input['payment_id']} for {ctx.saga_id}", ctx.idempotency_key)
    return {"refund_id": f"ref-{ctx.saga_id}"}


@refund_saga.retriable()
async def record_settlement(ctx: StepContext) -> dict[str, Any]:
    settled: dict[str, Any] = await ctx.wait_for("settled")  # the bank's notice, days later
    effect(f"settled {ctx.saga_id} on {settled['settled_at']}", ctx.idempotency_key)
    return settled


sagas = [order_v1, order_v2, refund_saga]

LAMP = {"sku": "LAMP", "shipping": "standard"}
PLACED: dict[str, list[tuple[Saga, str, dict[str, Any]]]] = {
    "yesterday": [(order_v1, "order-1", LAMP)],
    "today": [
        (order_v1, "order-2", {**LAMP, "sku": "GLOBE"}),  # none in stock: compensated
        # rejected at the pivot after a same-day courier took the parcel: needs attention
        (order_v1, "order-3", {**LAMP, "shipping": "same_day", "fraud_hold": True}),
        (order_v1, "order-4", LAMP),  # with the mail server down, these three need attention
        (order_v1, "order-5", LAMP),
        (order_v1, "order-6", LAMP),
        (order_v1, "order-7", {**LAMP, "backorder": True}),  # waits for 'restocked'
        (refund_saga, "refund-9", {"payment_id": "pay-order-0"}),  # waits for 'settled'
    ],
}


async def place(client: Client, day: str) -> list[str]:
    """Start that day's sagas (a start is idempotent on its id) and return their ids."""
    return [await client.start(saga, data, saga_id=saga_id) for saga, saga_id, data in PLACED[day]]


async def main(days: list[str]) -> None:
    store = await open_store(DB)
    try:
        client = Client(store)
        for day in days:
            placed = await place(client, day)
            for saga, saga_id, _ in PLACED[day]:  # recorded and due now, for any worker
                state = await client.state(saga_id)
                assert (state.name, state.version) == (saga.name, saga.version)
            print(f"{day}: placed {', '.join(placed)}")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or list(PLACED)))
