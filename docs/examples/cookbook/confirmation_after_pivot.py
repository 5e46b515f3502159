"""Recipe: e-mails that cannot be unsent.

The confirmation goes out in a retriable step after the pivot, so it is only ever sent once
the order can no longer be undone. What the customer hears before the pivot promises
nothing, and its compensation is the cancellation e-mail.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import Client, CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store


@dataclass
class FakeShop:
    """The mail server (which drops a repeated key) and the card authorisations voided."""

    emails: list[tuple[str, str]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    voided: list[str] = field(default_factory=list)

    def send(self, key: str, to: str, subject: str) -> None:
        if key not in self.keys:
            self.keys.add(key)
            self.emails.append((to, subject))


def build_saga(shop: FakeShop) -> Saga:
    order = Saga("place_order")

    # --8<-- [start:emails]
    async def send_cancellation(ctx: CompensationContext) -> None:
        shop.send(ctx.idempotency_key, ctx.input["email"], "Your order is cancelled")

    @order.step(compensate=send_cancellation)
    async def acknowledge(ctx: StepContext) -> None:  # true whatever happens next
        shop.send(ctx.idempotency_key, ctx.input["email"], "We have your order")

    async def void(ctx: CompensationContext) -> None:
        shop.voided.append(ctx.result["authorisation"])

    @order.step(compensate=void)
    async def authorise(ctx: StepContext) -> dict[str, Any]:
        approval: dict[str, Any] = await ctx.wait_for("card_authorised")  # 3-D Secure
        return approval

    @order.pivot()  # the money is taken: from here the order stands
    async def capture(ctx: StepContext) -> dict[str, Any]:
        return {"payment_id": f"pay-{ctx.results['authorise']['authorisation']}"}

    @order.retriable()  # retried until sent, never undone
    async def send_confirmation(ctx: StepContext) -> None:
        shop.send(ctx.idempotency_key, ctx.input["email"], "Your order is confirmed")

    # --8<-- [end:emails]
    return order


async def main() -> None:
    store = await open_store("memory://")
    shop = FakeShop()
    order = build_saga(shop)
    engine = Engine(store, [order], hand_back=True)  # as a worker: waits end the drive
    client = Client(store)

    # --8<-- [start:story]
    ada, bob = {"email": "ada@example.com"}, {"email": "bob@example.com"}
    assert (await engine.run(order, ada, saga_id="o-1")).waiting_for == "card_authorised"
    await client.signal("o-1", "card_authorised", {"authorisation": "auth-1"})
    assert (await engine.resume_saga("o-1")).status is SagaStatus.COMPLETED

    assert (await engine.run(order, bob, saga_id="o-2")).waiting_for == "card_authorised"
    assert await client.cancel("o-2", reason="the customer changed their mind")
    assert (await engine.resume_saga("o-2")).status is SagaStatus.COMPENSATED
    assert shop.emails == [
        ("ada@example.com", "We have your order"),
        ("ada@example.com", "Your order is confirmed"),
        ("bob@example.com", "We have your order"),
        ("bob@example.com", "Your order is cancelled"),
    ]
    # --8<-- [end:story]
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
