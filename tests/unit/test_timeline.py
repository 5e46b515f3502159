"""The timeline view: everything an operator needs, within 100 columns."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from sagakit import CompensationImpossible, Engine, MemoryStore, Retry, Saga, SagaState
from sagakit._timeline import render_timeline
from sagakit.orchestration import CompensationContext, StepContext


def render(state: SagaState, width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(render_timeline(state))
    return console.export_text()


async def stuck_saga() -> SagaState:
    saga = Saga("ship", 2)
    tries: list[int] = []

    async def book(ctx: StepContext) -> dict[str, Any]:
        tries.append(ctx.attempt)
        if len(tries) == 1:
            raise ConnectionError("courier API timed out")
        return {"shipment_id": "shp_1"}

    async def cancel(ctx: CompensationContext) -> None:
        raise CompensationImpossible("parcel already picked up by the courier")

    async def confirm(ctx: StepContext) -> None:
        raise ValueError("order rejected: held for fraud review " + "x" * 150)

    saga.add(book, compensate=cancel, retry=Retry(attempts=2, backoff=0.001))
    saga.add(confirm, kind="pivot")
    engine = Engine(MemoryStore(), [saga])
    await engine.run(saga, {"order_id": "A-1", "note": "y" * 300}, saga_id="saga-1")
    return await engine.status("saga-1")


async def test_the_header_names_the_saga_its_status_and_why() -> None:
    text = render(await stuck_saga())

    assert "saga saga-1  ship@2  needs_attention" in text
    assert "reason: step 'confirm' failed: order rejected" in text
    assert "not undone: book" in text


async def test_steps_show_kind_status_tries_and_errors() -> None:
    text = render(await stuck_saga())

    book_row = next(line for line in text.splitlines() if line.lstrip().startswith("book"))
    assert book_row.split()[:5] == ["book", "compensatable", "compensation_failed", "2", "1"]
    assert "CompensationImpossible: parcel already picked up" in " ".join(text.split())


async def test_the_timeline_shows_each_event_with_relative_time_and_retry_due() -> None:
    state = await stuck_saga()
    text = render(state)

    events = [r.type.value for r in state.records]
    for event in set(events):
        assert event in text
    assert "ConnectionError: courier API timed out (retry in" in " ".join(text.split())
    first = next(line for line in text.splitlines() if "saga_started" in line)
    assert first.split()[0] == "0"


async def test_it_fits_in_100_columns_whatever_the_data() -> None:
    text = render(await stuck_saga(), width=100)

    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" in text  # the 300-character input is cut, not wrapped over many lines
