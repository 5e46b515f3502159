"""A plain ``def`` step runs in a thread, so blocking code (a sync HTTP or database client)
does not stop the event loop, nor the other sagas on it, nor lease renewals."""

import asyncio
import threading

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store


# --8<-- [start:saga]
def invoice_saga(gate: threading.Event, entered: asyncio.Event) -> Saga:
    invoice = Saga("send_invoice", version=1)
    loop = asyncio.get_running_loop()

    def void_invoice(ctx: CompensationContext) -> None:  # sync compensations run in threads too
        pass

    @invoice.step(compensate=void_invoice)
    def render_pdf(ctx: StepContext) -> dict[str, object]:
        loop.call_soon_threadsafe(entered.set)
        opened = gate.wait(timeout=5)  # blocks this thread only: the loop goes on
        return {"thread": threading.current_thread().name, "gate_opened": opened}

    @invoice.pivot()
    async def email_invoice(ctx: StepContext) -> None:
        pass

    return invoice


# --8<-- [end:saga]


async def main() -> None:
    gate, entered = threading.Event(), asyncio.Event()
    invoice = invoice_saga(gate, entered)
    store = await open_store("memory://")
    run = asyncio.create_task(Engine(store, [invoice]).run(invoice, {"invoice": 17}))
    await entered.wait()  # the loop runs this while render_pdf blocks in its thread
    gate.set()
    result = await run
    await store.close()
    assert result.status is SagaStatus.COMPLETED
    rendered = result.results["render_pdf"]
    assert rendered["gate_opened"] is True
    assert rendered["thread"] != threading.main_thread().name
    print(result.status.value, "-- render_pdf ran off the event loop's thread")


if __name__ == "__main__":
    asyncio.run(main())
