"""The source document's order saga, orchestrated by sagakit.

Steps, in order, with what undoes each:

====================  ============  =====================================================
charge_payment        refund        the refund settles in days, but it is issued at once
debit_loyalty_points  credit back   with the points' original expiry dates
reserve_inventory     release       also after a *failed* reserve: it may be partial
create_shipment       cancel        only before pickup, else CompensationImpossible
confirm_order         (pivot)       the go/no-go point: after it, only forward
send_confirmation     (retriable)   cannot be unsent, so it runs only once all else held
====================  ============  =====================================================

Every call passes the idempotency key sagakit hands the step, so a retry or a resumed step
never charges, debits or reserves twice.

The order input is JSON::

    {"order_id": "A-1001", "customer_id": "c-ada", "email": "ada@example.com",
     "card": "tok_visa", "total_cents": 12990, "loyalty_points": 500,
     "items": [{"sku": "LAMP", "qty": 1}], "address": "1 Loop Rd, Springfield",
     "shipping": "standard"}

``card`` is a payment-provider token, never a card number: the input is kept in the saga
log. ``shipping`` may be ``"same_day"``: the courier then collects the parcel at once.
"""

from __future__ import annotations

import os
from typing import Any

from sagakit._retry import COMPENSATION_RETRY, Retry
from sagakit.demo._services import OrderServices, open_services
from sagakit.orchestration import CompensationContext, Saga, StepContext

NAME = "place_order"
VERSION = 1
EMAIL_RETRY = Retry(attempts=None, backoff=1.0, multiplier=2.0, max_backoff=300.0)
"""The e-mail is retried until it is sent: the order is confirmed, there is no going back."""


def build_order_saga(
    services: OrderServices,
    *,
    email_retry: Retry = EMAIL_RETRY,
    compensation_retry: Retry = COMPENSATION_RETRY,
) -> Saga:
    """The ``place_order@1`` saga, calling ``services``.

    The steps are plain (blocking) functions: the services are synchronous, and sagakit
    runs such steps in a worker thread. Pass short retry policies for demos and tests.
    """
    saga = Saga(NAME, version=VERSION)
    pay, points, stock = services.payments, services.loyalty, services.inventory
    ship, orders, mail = services.shipping, services.orders, services.email

    def refund_payment(ctx: CompensationContext) -> None:
        pay.refund(ctx.result["payment_id"], key=ctx.idempotency_key)

    @saga.step(compensate=refund_payment, compensation_retry=compensation_retry)
    def charge_payment(ctx: StepContext) -> dict[str, Any]:
        order = ctx.input
        return pay.charge(
            order["order_id"],
            order["customer_id"],
            order["card"],
            int(order["total_cents"]),
            key=ctx.idempotency_key,
        )

    def credit_loyalty_points(ctx: CompensationContext) -> None:
        points.credit_back(ctx.result["debit_id"], key=ctx.idempotency_key)

    @saga.step(compensate=credit_loyalty_points, compensation_retry=compensation_retry)
    def debit_loyalty_points(ctx: StepContext) -> dict[str, Any]:
        order = ctx.input
        wanted = int(order.get("loyalty_points", 0))
        customer, key = order["customer_id"], ctx.idempotency_key
        return points.debit(order["order_id"], customer, wanted, key=key)

    def release_inventory(ctx: CompensationContext) -> None:
        # By the reserve call's key, not its result: a partial reserve returned no result.
        stock.release(ctx.action_key, key=ctx.idempotency_key)

    @saga.step(
        compensate=release_inventory,
        compensate_on_failure=True,
        compensation_retry=compensation_retry,
    )
    def reserve_inventory(ctx: StepContext) -> dict[str, Any]:
        order = ctx.input
        return stock.reserve(order["order_id"], list(order["items"]), key=ctx.idempotency_key)

    def cancel_shipment(ctx: CompensationContext) -> None:
        ship.cancel(ctx.result["shipment_id"], key=ctx.idempotency_key)

    @saga.step(compensate=cancel_shipment, compensation_retry=compensation_retry)
    def create_shipment(ctx: StepContext) -> dict[str, Any]:
        order = ctx.input
        same_day = order.get("shipping") == "same_day"
        return ship.create(
            order["order_id"], order["address"], same_day=same_day, key=ctx.idempotency_key
        )

    @saga.pivot()
    def confirm_order(ctx: StepContext) -> dict[str, Any]:
        return orders.confirm(ctx.input["order_id"], key=ctx.idempotency_key)

    @saga.retriable(retry=email_retry)
    def send_confirmation_email(ctx: StepContext) -> dict[str, Any]:
        order = ctx.input
        subject = f"Your order {order['order_id']} is confirmed"
        return mail.send(order["order_id"], order["email"], subject, key=ctx.idempotency_key)

    return saga


SERVICES_ENV = "SAGAKIT_ORDER_SERVICES"


def from_environment() -> Saga:
    """The saga over services in the directory ``$SAGAKIT_ORDER_SERVICES`` (else in memory).

    For ``sagakit worker --app sagakit.demo:from_environment``: a worker in
    another process then sees the same service databases as the process that started the
    saga. The services stay open for the life of the process.
    """
    directory = os.environ.get(SERVICES_ENV) or None
    return build_order_saga(open_services(directory))


def order_input(order_id: str, customer: str, **changes: Any) -> dict[str, Any]:
    """A valid order input (see this module's docstring) for ``customer``: one lamp, paid
    with a test card, 200 loyalty points, standard shipping; ``changes`` override fields."""
    order: dict[str, Any] = {
        "order_id": order_id,
        "customer_id": customer,
        "email": f"{customer}@example.com",
        "card": "tok_visa",
        "total_cents": 4990,
        "loyalty_points": 200,
        "items": [{"sku": "LAMP", "qty": 1}],
        "address": "1 Loop Rd, Springfield",
        "shipping": "standard",
    }
    order.update(changes)
    return order
