"""Recipe: a compensation that keeps trying for days.

When the payment provider is down, the refund is retried with a long back-off. Each next
try is a due time in the saga log (and in the row workers claim from), not a timer in a
process, so stopping or restarting every worker loses nothing: the next one picks it up.
"""

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagakit import (
    Client,
    CompensationContext,
    Engine,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)

DB = "sqlite:///refund_retries.db"

# --8<-- [start:policy]
FOR_DAYS = Retry(attempts=40, backoff=60.0, multiplier=2.0, max_backoff=6 * 3600.0)
"""1 min, 2, 4, ... then every 6 hours: 40 tries over about eight days, then a person."""
# --8<-- [end:policy]


class ProviderDown(Exception):
    """The payment provider does not answer."""


@dataclass
class FakePayments:
    down_for: int  # this many refund calls fail before the provider is back
    refunds: dict[str, str] = field(default_factory=dict)
    calls: int = 0

    def refund(self, key: str, payment_id: str) -> None:
        self.calls += 1
        if self.calls <= self.down_for:
            raise ProviderDown("503 from payments")
        self.refunds.setdefault(key, payment_id)


def build_saga(payments: FakePayments, retry: Retry = FOR_DAYS) -> Saga:
    order = Saga("place_order")

    # --8<-- [start:saga]
    async def refund(ctx: CompensationContext) -> None:
        payments.refund(ctx.idempotency_key, ctx.result["payment_id"])

    @order.step(compensate=refund, compensation_retry=retry)
    async def charge(ctx: StepContext) -> dict[str, Any]:
        return {"payment_id": "pay-1"}

    # --8<-- [end:saga]

    @order.pivot()
    async def ship(ctx: StepContext) -> None:
        raise RuntimeError("the warehouse is flooded")

    return order


async def main() -> None:
    payments = FakePayments(down_for=3)
    order = build_saga(payments, Retry(attempts=40, backoff=0.1, max_backoff=0.4))  # seconds

    # --8<-- [start:story]
    store = await open_store(DB)
    first = await Engine(store, [order], hand_back=True).run(order, saga_id="o-1")  # a worker
    assert first.status is SagaStatus.COMPENSATING and first.retrying == "charge"
    state = await Client(store).state("o-1")  # the due time is in the log, and in the row:
    stored = await store.load("o-1")
    assert stored is not None and stored.instance.due_at == state.by_name["charge"].retry_at
    await store.close()  # every worker stops: a deploy, a crash

    store = await open_store(DB)  # a new process knows only what the log says
    [done] = await Engine(store, [order]).resume()  # waits out the remaining back-offs
    assert done.status is SagaStatus.COMPENSATED
    assert payments.calls == 4 and payments.refunds == {"o-1:charge:compensation": "pay-1"}
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    Path("refund_retries.db").unlink(missing_ok=True)  # each run tells the story afresh
    asyncio.run(main())
