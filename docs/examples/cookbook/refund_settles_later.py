"""Recipe: a refund that settles days later.

The compensation issues the refund at once, then waits for the provider's settlement
webhook. Settled: the saga is compensated. Never settled: it needs attention.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import (
    Client,
    CompensationContext,
    Engine,
    OperatorActionError,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)

SETTLES_WITHIN = 7 * 24 * 3600.0  # 3-5 business days, as a rule: after a week, ask a person


@dataclass
class FakePayments:
    refunds: dict[str, dict[str, str]] = field(default_factory=dict)  # by idempotency key
    refund_calls: list[str] = field(default_factory=list)
    accepted: asyncio.Queue[dict[str, str]] = field(default_factory=asyncio.Queue)

    def refund(self, key: str, payment_id: str, saga_id: str) -> dict[str, str]:
        self.refund_calls.append(key)
        if key not in self.refunds:  # a repeated call gets the first answer back
            self.refunds[key] = {"refund_id": f"re-{payment_id}", "saga_id": saga_id}
            self.accepted.put_nowait(self.refunds[key])  # to settle later, by webhook
        return self.refunds[key]


def build_saga(payments: FakePayments, settles_within: float = SETTLES_WITHIN) -> Saga:
    order = Saga("place_order")

    # --8<-- [start:refund]
    async def refund(ctx: CompensationContext) -> None:
        # Made again from the top when the settlement comes: the key makes that harmless.
        payments.refund(ctx.idempotency_key, ctx.result["payment_id"], ctx.saga_id)
        await ctx.wait_for("refund_settled", timeout=settles_within)

    @order.step(compensate=refund, compensation_retry=Retry(attempts=1))
    async def charge(ctx: StepContext) -> dict[str, Any]:
        return {"payment_id": f"pay-{ctx.saga_id}"}

    # --8<-- [end:refund]

    @order.pivot()
    async def ship(ctx: StepContext) -> None:
        raise RuntimeError("the courier does not deliver to this address")

    return order


# --8<-- [start:webhook]
async def on_refund_settled(client: Client, refund: dict[str, str]) -> bool:
    """The provider's webhook: False if the saga stopped waiting (tell the operator)."""
    try:
        await client.signal(refund["saga_id"], "refund_settled", refund)
    except OperatorActionError:  # it timed out and needs attention: nothing waits now
        return False
    return True


# --8<-- [end:webhook]


async def main() -> None:
    store = await open_store("memory://")
    payments = FakePayments()
    order = build_saga(payments, settles_within=0.2)  # a week in production
    engine, client = Engine(store, [order]), Client(store, operator="ops@shop.example")

    # --8<-- [start:story]
    running = asyncio.create_task(engine.run(order, saga_id="o-1"))
    assert await on_refund_settled(client, await payments.accepted.get())  # days later, really
    assert (await running).status is SagaStatus.COMPENSATED

    stuck = await engine.run(order, saga_id="o-2")  # no webhook comes within the timeout
    assert stuck.status is SagaStatus.NEEDS_ATTENTION
    assert stuck.failed_compensations == ("charge",)
    assert not await on_refund_settled(client, await payments.accepted.get())  # too late
    # The operator sees on the provider's dashboard that re-pay-o-2 settled, and says so:
    await client.resolve("o-2", note="re-pay-o-2 settled late (provider dashboard)")
    assert (await client.state("o-2")).status is SagaStatus.COMPENSATED
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
