"""Recipe: a compensation that may run twice has one effect.

sagakit records `compensation_started` before it calls a compensation and the outcome
after. A process that dies in between leaves a log whose last record is the start, and
whoever resumes the saga calls the compensation again, with the same idempotency key. The
payment service keeps its answer by key, so the second refund returns the first one.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from sagakit import (
    CompensationContext,
    Engine,
    RecordType,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)


class ProcessKilled(BaseException):
    """Stands in for SIGKILL: no `except Exception` catches it, so the log stays as is."""


# --8<-- [start:service]
@dataclass
class FakePayments:
    """A payment service that de-duplicates on the idempotency key its callers send."""

    refunds: dict[str, str] = field(default_factory=dict)  # key -> refund id
    calls: list[str] = field(default_factory=list)
    die_after_next_refund: bool = False

    def refund(self, key: str, payment_id: str) -> str:
        self.calls.append(key)
        if key not in self.refunds:  # the effect happens once per key
            self.refunds[key] = f"re-{len(self.refunds) + 1}-of-{payment_id}"
        if self.die_after_next_refund:  # the refund is done; our process dies before the reply
            self.die_after_next_refund = False
            raise ProcessKilled
        return self.refunds[key]


# --8<-- [end:service]


def build_saga(payments: FakePayments) -> Saga:
    order = Saga("place_order")

    # --8<-- [start:refund]
    async def refund(ctx: CompensationContext) -> None:
        payments.refund(ctx.idempotency_key, ctx.result["payment_id"])

    # --8<-- [end:refund]

    @order.step(compensate=refund)
    async def charge(ctx: StepContext) -> dict[str, Any]:
        return {"payment_id": "pay-1"}

    @order.pivot()
    async def ship(ctx: StepContext) -> None:
        raise RuntimeError("out of parcels")

    return order


async def main() -> None:
    store = await open_store("memory://")
    payments = FakePayments(die_after_next_refund=True)
    order = build_saga(payments)

    # --8<-- [start:story]
    with contextlib.suppress(ProcessKilled):  # the first process is gone; its log is not
        await Engine(store, [order]).run(order, saga_id="o-1")
    stored = await store.load("o-1")
    assert stored is not None and stored.records[-1].type is RecordType.COMPENSATION_STARTED

    [resumed] = await Engine(store, [order]).resume()  # any process, from the log alone
    assert resumed.status is SagaStatus.COMPENSATED
    assert payments.calls == ["o-1:charge:compensation"] * 2  # called twice, one key
    assert payments.refunds == {"o-1:charge:compensation": "re-1-of-pay-1"}  # refunded once
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
