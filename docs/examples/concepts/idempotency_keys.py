"""At-least-once calls plus idempotency keys: the card is charged exactly once.

The payment service applies the first charge, then its answer is lost (a dropped
connection). sagakit cannot know whether the charge happened, so it calls again; the
retry carries the same key, and the service answers as it did the first time.
"""

import asyncio

from sagakit import Engine, Retry, Saga, SagaStatus, StepContext, idempotency_key, open_store


# --8<-- [start:service]
class PaymentService:
    """A remote service that de-duplicates by the key its callers send."""

    def __init__(self) -> None:
        self.charges: dict[str, dict[str, object]] = {}  # idempotency key -> the charge
        self.calls: list[str] = []
        self.drop_next_answer = True

    def charge(self, key: str, amount: int) -> dict[str, object]:
        self.calls.append(key)
        if key not in self.charges:  # a key seen before: no second effect
            self.charges[key] = {"payment_id": f"pay-{len(self.charges) + 1}", "amount": amount}
        if self.drop_next_answer:
            self.drop_next_answer = False
            raise ConnectionError("connection reset before the answer arrived")
        return self.charges[key]


# --8<-- [end:service]

payments = PaymentService()
order = Saga("place_order", version=1)


# --8<-- [start:step]
@order.pivot(retry=Retry(attempts=3, backoff=0.01))
async def charge_card(ctx: StepContext) -> dict[str, object]:
    return payments.charge(ctx.idempotency_key, ctx.input["amount"])


# --8<-- [end:step]


async def main() -> None:
    store = await open_store("memory://")
    result = await Engine(store, [order]).run(order, {"amount": 42}, saga_id="order-7")
    await store.close()
    assert result.status is SagaStatus.COMPLETED
    key = idempotency_key("order-7", "charge_card")
    assert key == "order-7:charge_card:action"
    assert payments.calls == [key, key]  # called twice: at least once
    assert list(payments.charges) == [key]  # charged once: exactly once
    assert result.results["charge_card"] == {"payment_id": "pay-1", "amount": 42}
    print("calls:", payments.calls)
    print("charges:", payments.charges)
    print("compensation key:", idempotency_key("order-7", "charge_card", "compensation"))


if __name__ == "__main__":
    asyncio.run(main())
