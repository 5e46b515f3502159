"""Countermeasure: commutative updates. Two ways to undo a debit of a customer's account:
restore the balance saved before it, or credit the amount back. Only the second commutes
with the other sagas that debited the account in between."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store

from interleaving_gate import Gate


@dataclass
class FakeAccounts:
    balance: dict[str, int] = field(default_factory=lambda: {"c-ada": 100})
    gates: dict[str, Gate] = field(default_factory=dict)  # order id -> hold it at reserve


def build_saga(accounts: FakeAccounts, *, commutative: bool) -> Saga:
    # --8<-- [start:undo]
    async def debit(ctx: StepContext) -> dict[str, Any]:
        customer, amount = ctx.input["customer"], ctx.input["amount"]
        before = accounts.balance[customer]
        accounts.balance[customer] = before - amount
        return {"amount": amount, "balance_before": before}

    async def restore_balance(ctx: CompensationContext) -> None:  # wrong: overwrites
        accounts.balance[ctx.input["customer"]] = ctx.result["balance_before"]

    async def credit_back(ctx: CompensationContext) -> None:  # right: commutes
        accounts.balance[ctx.input["customer"]] += ctx.result["amount"]

    # --8<-- [end:undo]

    async def reserve(ctx: StepContext) -> dict[str, Any]:
        if gate := accounts.gates.get(ctx.input["order_id"]):
            await gate.hold()
        if not ctx.input["in_stock"]:
            raise RuntimeError("out of stock")
        return {}

    name = "debit_credits_back" if commutative else "debit_restores_balance"
    order = Saga(name).add(debit, compensate=credit_back if commutative else restore_balance)
    return order.add(reserve, kind="pivot")


# --8<-- [start:story]
async def interleave(commutative: bool) -> int:
    """A-1 debits 70 and is held; A-2 debits 20 and completes; A-1 fails and is undone.
    Returns the balance at the end: 100 - 20 = 80 is right."""
    store = await open_store("memory://")
    accounts = FakeAccounts(gates={"A-1": Gate()})
    order = build_saga(accounts, commutative=commutative)
    engine = Engine(store, [order])
    lamp = {"order_id": "A-1", "customer": "c-ada", "amount": 70, "in_stock": False}
    first = asyncio.create_task(engine.run(order, lamp, saga_id="A-1"))
    await accounts.gates["A-1"].reached.wait()
    desk = {"order_id": "A-2", "customer": "c-ada", "amount": 20, "in_stock": True}
    assert (await engine.run(order, desk, saga_id="A-2")).status is SagaStatus.COMPLETED
    accounts.gates["A-1"].release.set()
    assert (await first).status is SagaStatus.COMPENSATED
    await store.close()
    return accounts.balance["c-ada"]


async def main() -> None:
    assert await interleave(commutative=False) == 100  # A-2's debit of 20 is lost
    assert await interleave(commutative=True) == 80  # both sagas' effects are kept


# --8<-- [end:story]


if __name__ == "__main__":
    asyncio.run(main())
