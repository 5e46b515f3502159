"""Waiting for a signal: a step parks in ``ctx.wait_for`` until another task sends the
message with ``Client.signal``; then the step is called again, with the same key, and
``wait_for`` returns the message's payload."""

import asyncio

from sagakit import (
    Client,
    CompensationContext,
    Engine,
    RecordType,
    Saga,
    SagaStatus,
    StepContext,
    open_store,
)

calls: list[tuple[int, str]] = []  # (attempt, key) of every call of the waiting step
asked = asyncio.Event()  # set once the bank has been asked: time to signal

# --8<-- [start:saga]
transfer = Saga("bank_transfer", version=1)


async def recall_transfer(ctx: CompensationContext) -> None:
    pass


@transfer.step(compensate=recall_transfer)
async def await_clearing(ctx: StepContext) -> dict[str, object]:
    calls.append((ctx.attempt, ctx.idempotency_key))  # code before wait_for runs again
    asked.set()
    cleared = await ctx.wait_for("transfer_cleared", timeout=3600)
    return {"reference": cleared["reference"]}


@transfer.pivot()
async def release_goods(ctx: StepContext) -> None:
    pass


# --8<-- [end:saga]


# --8<-- [start:signal]
async def bank_callback(client: Client, saga_id: str) -> None:
    await asyncio.wait_for(asked.wait(), timeout=10)
    await client.signal(saga_id, "transfer_cleared", {"reference": "BANK-42"})


# --8<-- [end:signal]


async def main() -> None:
    calls.clear()
    asked.clear()
    store = await open_store("memory://")
    running = Engine(store, [transfer]).run(transfer, {"amount": 250}, saga_id="tx-1")
    result, _ = await asyncio.gather(running, bank_callback(Client(store), "tx-1"))
    assert result.status is SagaStatus.COMPLETED
    assert result.results["await_clearing"] == {"reference": "BANK-42"}
    assert calls == [(1, "tx-1:await_clearing:action")] * 2  # same attempt, same key
    stored = await store.load("tx-1")
    assert stored is not None
    types = [r.type for r in stored.records]
    assert RecordType.STEP_WAITING in types and RecordType.MESSAGE_RECEIVED in types
    await store.close()
    print("tx-1", result.status.value, "with", result.results["await_clearing"])


if __name__ == "__main__":
    asyncio.run(main())
