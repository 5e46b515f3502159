"""Countermeasure: the pessimistic view. Cancelling an order gives the customer's credit
back and cancels the delivery, which fails once the van has left. Credit first, and other
sagas may spend credit that the compensation then takes back; credit after the pivot, as a
retriable step, and nobody ever sees credit that is not for good."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store


@dataclass
class FakeServices:
    credit: int = 100
    seen: list[int] = field(default_factory=lambda: [100])  # every value readers could see
    dispatched: set[str] = field(default_factory=set)  # orders whose van has left
    cancelled: set[str] = field(default_factory=set)

    def add_credit(self, amount: int) -> None:
        self.credit += amount
        self.seen.append(self.credit)


def build_sagas(services: FakeServices) -> tuple[Saga, Saga]:
    async def credit_back(ctx: StepContext) -> dict[str, Any]:
        services.add_credit(ctx.input["amount"])
        return {}

    async def debit_again(ctx: CompensationContext) -> None:
        services.add_credit(-ctx.input["amount"])

    async def cancel_delivery(ctx: StepContext) -> dict[str, Any]:
        if ctx.input["order_id"] in services.dispatched:
            raise RuntimeError("the van has left")
        return {}

    async def mark_cancelled(ctx: StepContext) -> dict[str, Any]:
        services.cancelled.add(ctx.input["order_id"])
        return {}

    # --8<-- [start:definitions]
    credit_first = (
        Saga("cancel_order_credit_first")
        .add(credit_back, compensate=debit_again)  # others see the credit from here on
        .add(cancel_delivery, kind="pivot")  # ... and this may still fail
        .add(mark_cancelled, kind="retriable")
    )
    credit_last = (
        Saga("cancel_order_credit_last")
        .add(cancel_delivery, kind="pivot")  # the step that can fail goes first
        .add(credit_back, kind="retriable")  # credit only once the cancel is certain
        .add(mark_cancelled, kind="retriable")
    )
    # --8<-- [end:definitions]
    return credit_first, credit_last


async def cancel(saga_name: str, order_id: str) -> tuple[SagaStatus, FakeServices]:
    store = await open_store("memory://")
    services = FakeServices(dispatched={"o-late"})
    sagas = {saga.name: saga for saga in build_sagas(services)}
    engine = Engine(store, sagas.values())
    done = await engine.run(sagas[saga_name], {"order_id": order_id, "amount": 50})
    await store.close()
    return done.status, services


async def main() -> None:
    # --8<-- [start:story]
    status, services = await cancel("cancel_order_credit_first", "o-late")
    assert status is SagaStatus.COMPENSATED and services.seen == [100, 150, 100]  # dirty 150
    status, services = await cancel("cancel_order_credit_last", "o-late")
    assert status is SagaStatus.COMPENSATED and services.seen == [100]  # nothing to see
    for saga_name in ("cancel_order_credit_first", "cancel_order_credit_last"):
        status, services = await cancel(saga_name, "o-early")  # the van has not left
        assert status is SagaStatus.COMPLETED and services.seen == [100, 150]
    # --8<-- [end:story]


if __name__ == "__main__":
    asyncio.run(main())
