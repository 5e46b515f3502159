"""A sync step's timeout fails the step, but cannot stop its thread: the call goes on, and
its late effect still happens after the saga has compensated."""

import asyncio
import threading

from sagakit import CompensationContext, Engine, Saga, SagaStatus, StepContext, open_store

late_effects: list[str] = []


# --8<-- [start:saga]
def export_saga(gate: threading.Event, finished: asyncio.Event) -> Saga:
    export = Saga("export_report", version=1)
    loop = asyncio.get_running_loop()

    def delete_draft(ctx: CompensationContext) -> None:
        pass

    @export.step(compensate=delete_draft)
    def create_draft(ctx: StepContext) -> None:
        pass

    @export.pivot(timeout=0.1)
    def upload(ctx: StepContext) -> None:
        gate.wait(timeout=5)  # a blocking call past its timeout: nothing can interrupt it
        late_effects.append(f"uploaded under {ctx.idempotency_key}")
        loop.call_soon_threadsafe(finished.set)

    return export


# --8<-- [end:saga]


async def main() -> None:
    late_effects.clear()
    gate, finished = threading.Event(), asyncio.Event()
    export = export_saga(gate, finished)
    store = await open_store("memory://")
    result = await Engine(store, [export]).run(export, {"report": "q3"}, saga_id="r-1")
    await store.close()
    assert result.status is SagaStatus.COMPENSATED
    assert result.reason == (
        "step 'upload' failed: saga 'export_report', step 'upload': timed out after 0.1s"
    )
    assert late_effects == []  # the saga is over, and the thread still runs
    gate.set()
    await finished.wait()
    assert late_effects == ["uploaded under r-1:upload:action"]  # the late effect landed
    print(result.status.value, "--", result.reason)
    print("then, late:", late_effects[0])


if __name__ == "__main__":
    asyncio.run(main())
