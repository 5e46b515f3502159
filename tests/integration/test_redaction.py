"""Secret payload fields a saga names are masked wherever a payload is shown, and nowhere else.

A saga with ``redact=`` runs on a real SQLite log; ``sagakit show`` (text, ``--json``, ``--follow``
lines), ``list --json`` and the choreography tracker's records show ``***`` for those fields,
while the log keeps the raw values and the compensation still gets them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sagakit import (
    Choreography,
    ChoreographyStep,
    Client,
    CompensationContext,
    Engine,
    Event,
    MemoryBroker,
    Saga,
    SagaDefinitionError,
    SagaStatus,
    StepContext,
    Tracker,
    open_store,
)
from sagakit._timeline import event_line
from sagakit.cli import app
from sagakit.log import MASK, Redaction, SagaState
from sagakit.store import StoredSaga

CARD = "4111111111111111"
EMAIL = "ada@example.com"
ORDER = {
    "order_id": "o-1",
    "card_number": CARD,
    "customer": {"name": "Ada", "email": EMAIL},
    "items": [{"sku": "GLOBE", "card_number": CARD}],
}


def test_a_field_is_masked_at_any_depth_and_a_dotted_path_under_its_parent() -> None:
    mask = Redaction(["card_number", "customer.email"])
    assert mask(ORDER) == {
        "order_id": "o-1",
        "card_number": MASK,
        "customer": {"name": "Ada", "email": MASK},
        "items": [{"sku": "GLOBE", "card_number": MASK}],
    }
    assert mask({"email": EMAIL, "other": {"customer": {"email": EMAIL}}}) == {
        "email": EMAIL,
        "other": {"customer": {"email": MASK}},
    }
    assert ORDER["card_number"] == CARD  # masking copies
    assert Redaction()(ORDER) is ORDER


@pytest.mark.parametrize("bad", ["", "card.", ".card", "a..b", 7])
def test_a_malformed_path_is_refused_when_the_saga_is_declared(bad: Any) -> None:
    with pytest.raises(SagaDefinitionError, match="redacted field"):
        Saga("s", redact=[bad])


refunded: list[str] = []
order = Saga("pay", redact=["card_number", "customer.email"])


async def refund(ctx: CompensationContext) -> None:
    refunded.append(ctx.input["card_number"])


@order.step(compensate=refund)
async def charge(ctx: StepContext) -> dict[str, Any]:
    return {"charge_id": "ch-1", "card_number": ctx.input["card_number"]}


@order.step(compensate=refund)
async def reserve(ctx: StepContext) -> None:
    await ctx.wait_for("stock", timeout=60)
    raise RuntimeError("out of stock")


async def run_and_compensate(url: str) -> tuple[SagaStatus, StoredSaga | None]:
    store = await open_store(url)
    try:
        engine = Engine(store, [order], hand_back=True)
        await engine.run(order, ORDER, saga_id="o-1")
        await Client(store).signal("o-1", "stock", {"card_number": CARD, "left": 0})
        outcome = await engine.resume_saga("o-1")
        return outcome.status, await store.load("o-1")
    finally:
        await store.close()


def test_show_list_and_follow_mask_what_the_log_keeps_raw(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    status, stored = asyncio.run(run_and_compensate(url))
    assert status is SagaStatus.COMPENSATED
    assert refunded == [CARD]
    assert stored is not None
    assert CARD in "".join(r.data or "" for r in stored.records)  # the log keeps it raw

    runner = CliRunner()
    env = {"COLUMNS": "200", "TERM": "dumb"}
    shown = runner.invoke(app, ["show", "o-1", "--db", url], env=env)
    as_json = runner.invoke(app, ["show", "o-1", "--db", url, "--json"], env=env)
    listed = runner.invoke(app, ["list", "--db", url, "--json"], env=env)
    for result in (shown, as_json, listed):
        assert result.exit_code == 0, result.output
        assert CARD not in result.stdout and EMAIL not in result.stdout
    assert MASK in shown.stdout
    saga = json.loads(as_json.stdout)
    assert saga["input"]["customer"] == {"name": "Ada", "email": MASK}
    assert saga["steps"][0]["result"] == {"charge_id": "ch-1", "card_number": MASK}
    message = next(e for e in saga["events"] if e["type"] == "message_received")
    assert json.loads(message["data"]["payload"]) == {"card_number": MASK, "left": 0}
    assert json.loads(listed.stdout)[0]["input"]["card_number"] == MASK

    state = SagaState.from_records("o-1", stored.records)
    start = state.records[0].at
    lines = "\n".join(event_line(r, start, state.redaction).plain for r in state.records)
    assert CARD not in lines and EMAIL not in lines


async def test_a_choreography_masks_the_events_payload_fields(tmp_path: Path) -> None:
    tracked = Choreography(
        "checkout",
        steps=[
            ChoreographyStep("start", succeeded="CheckoutStarted"),
            ChoreographyStep("pay", succeeded="Paid", kind="pivot"),
        ],
        starts="CheckoutStarted",
        completes="Paid",
        redact=["card_number"],
    )
    store = await open_store(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        tracker = Tracker(store, MemoryBroker(), [tracked])
        for kind in ("CheckoutStarted", "Paid"):
            payload = {"card_number": CARD, "total": 5}
            await tracker.track(Event.new(kind, payload, source="shop", correlation_id="c-1"))
        stored = await store.load("c-1")
    finally:
        await store.close()
    assert stored is not None
    state = SagaState.from_records("c-1", stored.records)
    assert state.status is SagaStatus.COMPLETED
    assert CARD not in json.dumps(state.as_dict())
    assert state.as_dict()["input"] == {"card_number": MASK, "total": 5}
