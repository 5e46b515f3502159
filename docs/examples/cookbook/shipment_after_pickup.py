"""Recipe: a shipment can only be cancelled before pickup.

After pickup the compensation raises CompensationImpossible: the other compensations still
run, and the saga needs attention until an operator recalls the parcel and resolves it.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import (
    Client,
    CompensationContext,
    CompensationImpossible,
    Engine,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)


class AlreadyCollected(Exception):
    """The courier's answer to a cancel after pickup."""


@dataclass
class FakeCourier:
    van_at_dock: bool = False  # then it takes every parcel as soon as it is labelled
    cancelled: list[str] = field(default_factory=list)

    def cancel(self, label: str) -> None:
        if self.van_at_dock:
            raise AlreadyCollected(f"{label} was collected")
        self.cancelled.append(label)


def build_saga(courier: FakeCourier, refunds: list[str]) -> Saga:
    order = Saga("place_order")

    async def refund(ctx: CompensationContext) -> None:
        refunds.append(ctx.result["payment_id"])

    @order.step(compensate=refund)
    async def charge(ctx: StepContext) -> dict[str, Any]:
        return {"payment_id": f"pay-{ctx.saga_id}"}

    # --8<-- [start:cancel]
    async def cancel_shipment(ctx: CompensationContext) -> None:
        try:
            courier.cancel(ctx.result["label"])
        except AlreadyCollected as error:  # no retry can mend this: ask a person
            raise CompensationImpossible(f"{error}: recall the parcel") from error

    @order.step(compensate=cancel_shipment)
    async def create_label(ctx: StepContext) -> dict[str, Any]:
        return {"label": f"LBL-{ctx.saga_id}"}

    # --8<-- [end:cancel]

    @order.pivot()
    async def confirm(ctx: StepContext) -> None:
        raise RuntimeError("held for fraud review")

    return order


async def main() -> None:
    store = await open_store("memory://")
    courier, refunds = FakeCourier(), list[str]()
    order = build_saga(courier, refunds)
    engine, client = Engine(store, [order]), Client(store, operator="ops@shop.example")

    # --8<-- [start:story]
    assert (await engine.run(order, saga_id="o-1")).status is SagaStatus.COMPENSATED
    assert courier.cancelled == ["LBL-o-1"]  # cancelled before the van came

    courier.van_at_dock = True  # o-2's parcel is gone before anything fails
    after = await engine.run(order, saga_id="o-2")
    assert after.status is SagaStatus.NEEDS_ATTENTION
    assert after.failed_compensations == ("create_label",)
    assert refunds == ["pay-o-1", "pay-o-2"]  # the refund ran all the same

    # The operator has the courier bring LBL-o-2 back, then says so in the log:
    await client.resolve("o-2", note="LBL-o-2 recalled, back in stock (courier case RTS-77)")
    assert (await client.state("o-2")).status is SagaStatus.COMPENSATED
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
