"""The order saga twice: as the source document's hand-written orchestrator, and with sagakit.

Both call the same no-op async clients with the same order, so the only difference a
benchmark sees is the orchestration: a list of lambdas and a try/except against the
engine with its saga log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sagakit import CompensationContext, Saga, StepContext

ORDER: dict[str, Any] = {
    "id": "o-1001",
    "customer_id": "c-ada",
    "total": 12990,
    "items": [{"sku": "LAMP", "qty": 1}],
    "address": "1 Loop Rd, Springfield",
}
"""The one input every scenario runs: the fields the source document's orchestrator reads."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a fake client hands back; the source document only reads ``.id``."""

    id: str


_PAYMENT = Receipt("p-1")
_RESERVATION = Receipt("r-1")
_SHIPMENT = Receipt("s-1")


class FakePaymentClient:
    """Succeeds at once without suspending: the benchmark measures orchestration, not I/O."""

    async def charge(self, customer_id: str, total: int) -> Receipt:
        return _PAYMENT

    async def refund(self, payment_id: str) -> None:
        return None


class FakeInventoryClient:
    """A no-op inventory service."""

    async def reserve(self, items: list[dict[str, Any]]) -> Receipt:
        return _RESERVATION

    async def release(self, reservation_id: str) -> None:
        return None


class FakeShippingClient:
    """A no-op shipping service."""

    async def create(self, order_id: str, address: str) -> Receipt:
        return _SHIPMENT

    async def cancel(self, shipment_id: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Clients:
    """The three services an order saga calls."""

    payment: FakePaymentClient
    inventory: FakeInventoryClient
    shipping: FakeShippingClient

    @classmethod
    def fake(cls) -> Clients:
        return cls(FakePaymentClient(), FakeInventoryClient(), FakeShippingClient())


@dataclass(frozen=True, slots=True)
class Order:
    """Attribute access to :data:`ORDER`, because the document's orchestrator reads ``order.x``.

    Built once per scenario, not per saga, so the baseline pays nothing the engine does not.
    """

    id: str
    customer_id: str
    total: int
    items: list[dict[str, Any]]
    address: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> Order:
        return cls(data["id"], data["customer_id"], data["total"], data["items"], data["address"])


class OrderSagaOrchestrator:
    """The source document's orchestrator, kept as written (only types added).

    It keeps no log: a crash between steps leaves a charge nobody will refund. That is the
    durability the sagakit scenarios pay for, and the ratio in the report is its price.
    """

    def __init__(
        self,
        payment_client: FakePaymentClient,
        inventory_client: FakeInventoryClient,
        shipping_client: FakeShippingClient,
    ) -> None:
        self.payment = payment_client
        self.inventory = inventory_client
        self.shipping = shipping_client

    async def execute(self, order: Order) -> dict[str, Any]:
        compensations: list[Callable[[], Awaitable[None]]] = []

        try:
            # Step 1: Charge payment
            payment = await self.payment.charge(order.customer_id, order.total)
            compensations.append(lambda: self.payment.refund(payment.id))

            # Step 2: Reserve inventory
            reservation = await self.inventory.reserve(order.items)
            compensations.append(lambda: self.inventory.release(reservation.id))

            # Step 3: Create shipment
            shipment = await self.shipping.create(order.id, order.address)
            compensations.append(lambda: self.shipping.cancel(shipment.id))

            return {"status": "completed", "shipment_id": shipment.id}

        except Exception as e:
            # Run compensations in reverse order
            for compensate in reversed(compensations):
                try:
                    await compensate()
                except Exception as comp_error:
                    logging.error(f"Compensation failed: {comp_error}")
                    # Log for manual intervention

            return {"status": "failed", "error": str(e)}


SAGA_NAME = "bench_order"
STEPS = ("charge_payment", "reserve_inventory", "create_shipment")
RECORDS_PER_SAGA = 2 + 2 * len(STEPS)
"""``saga_started``, a started/succeeded pair per step, ``saga_completed``: a whole log."""
COMMITS_ALONE = len(STEPS) + 1
"""Store writes of a saga run alone: its records are batched up to each next action call."""


def build_order_saga(clients: Clients) -> Saga:
    """The same three steps as :class:`OrderSagaOrchestrator`, each with its compensation."""
    saga = Saga(SAGA_NAME, version=1)
    pay, stock, ship = clients.payment, clients.inventory, clients.shipping

    async def refund_payment(ctx: CompensationContext) -> None:
        await pay.refund(ctx.result["payment_id"])

    async def release_inventory(ctx: CompensationContext) -> None:
        await stock.release(ctx.result["reservation_id"])

    async def cancel_shipment(ctx: CompensationContext) -> None:
        await ship.cancel(ctx.result["shipment_id"])

    @saga.step(compensate=refund_payment)
    async def charge_payment(ctx: StepContext) -> dict[str, str]:
        payment = await pay.charge(ctx.input["customer_id"], ctx.input["total"])
        return {"payment_id": payment.id}

    @saga.step(compensate=release_inventory)
    async def reserve_inventory(ctx: StepContext) -> dict[str, str]:
        reservation = await stock.reserve(ctx.input["items"])
        return {"reservation_id": reservation.id}

    @saga.step(compensate=cancel_shipment)
    async def create_shipment(ctx: StepContext) -> dict[str, str]:
        shipment = await ship.create(ctx.input["id"], ctx.input["address"])
        return {"shipment_id": shipment.id}

    return saga
