"""An application module: its saga definition, which ``sagakit worker --app
billing_app:invoice`` imports, and a ``main`` that records three invoices for workers to
run (a web request handler would do the same, one at a time)."""

import asyncio

from sagakit import Client, CompensationContext, Saga, SagaStatus, StepContext, open_store

LOG = "sqlite:///billing.db"

# --8<-- [start:app]
invoice = Saga("send_invoice", version=1)  # what the worker's --app names


async def void_invoice(ctx: CompensationContext) -> None:
    pass


@invoice.step(compensate=void_invoice)
async def create_invoice(ctx: StepContext) -> dict[str, str]:
    return {"number": f"INV-{ctx.input['customer']}"}


@invoice.pivot()
async def email_invoice(ctx: StepContext) -> None:
    pass


async def main() -> None:
    store = await open_store(LOG)
    client = Client(store)
    for customer in ("acme", "globex", "initech"):
        await client.start(invoice, {"customer": customer}, saga_id=f"inv-{customer}")
    await store.close()


# --8<-- [end:app]


async def check() -> None:
    store = await open_store(LOG)
    for customer in ("acme", "globex", "initech"):
        stored = await store.load(f"inv-{customer}")
        assert stored is not None and stored.instance.status is SagaStatus.PENDING
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
    asyncio.run(check())  # recorded and pending: nobody has run them yet
