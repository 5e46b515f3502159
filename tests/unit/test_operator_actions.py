"""Step-level operator actions on a memory store: retry from a step, skip a step, and the
refusals; each leaves who and why in the log, and the log replays to the state it drove."""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from rich.console import Console

from sagakit import (
    Client,
    CompensationContext,
    CompensationImpossible,
    Engine,
    MemoryStore,
    OperatorActionError,
    Retry,
    Saga,
    SagaResult,
    SagaState,
    SagaStatus,
    SerializationError,
    StepContext,
    StepStatus,
)
from sagakit._timeline import render_timeline
from sagakit.errors import StepActionError
from sagakit.log import Record, RecordType
from sagakit.orchestration._plan import SKIP

FOR_GOOD = Retry(attempts=2, backoff=0, jitter=0)
"""A retriable step that gives up after two attempts: the saga needs attention."""
LONG_BACKOFF = Retry(attempts=None, backoff=3600, jitter=0)
"""A retriable step retried for ever, an hour apart: the saga stays running."""


@dataclass
class Shop:
    """What the saga's services did, and which of them are down."""

    down: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    seen: dict[str, Any] = field(default_factory=dict)
    """``ctx.results`` as the last step saw them."""
    refund_possible: bool = True

    def call(self, ctx: StepContext) -> None:
        self.calls.append(ctx.step)
        self.keys.append(ctx.idempotency_key)
        if ctx.step in self.down:
            raise RuntimeError(f"{ctx.step} service down")


def shop_saga(shop: Shop, email_retry: Retry = FOR_GOOD) -> Saga:
    """charge (compensatable), ship (pivot), email and confirm (retriable)."""
    saga = Saga("shop", 1)

    async def refund(ctx: CompensationContext) -> None:
        if not shop.refund_possible:
            raise CompensationImpossible("the card was closed")

    @saga.step(compensate=refund)
    async def charge(ctx: StepContext) -> dict[str, str]:
        shop.call(ctx)
        return {"payment": "p-1"}

    @saga.pivot()
    async def ship(ctx: StepContext) -> dict[str, str]:
        shop.call(ctx)
        return {"shipment": "s-1"}

    @saga.retriable(retry=email_retry)
    async def email(ctx: StepContext) -> dict[str, str]:
        shop.call(ctx)
        if "wait" in ctx.input:
            await ctx.wait_for(ctx.input["wait"])
        return {"message": "m-1"}

    @saga.retriable(retry=FOR_GOOD)
    async def confirm(ctx: StepContext) -> str:
        shop.call(ctx)
        shop.seen = dict(ctx.results)
        return "confirmed"

    return saga


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def shop() -> Shop:
    return Shop()


async def records(store: MemoryStore, saga_id: str) -> list[Record]:
    stored = await store.load(saga_id)
    assert stored is not None
    return stored.records


async def stuck(store: MemoryStore, shop: Shop, *down: str, input: Any = None) -> str:
    """A saga whose steps in ``down`` fail for good: it needs attention."""
    shop.down = set(down)
    result = await start(store, shop, "s", input or {})
    assert result.status is SagaStatus.NEEDS_ATTENTION
    return result.saga_id


async def start(
    store: MemoryStore, shop: Shop, saga_id: str, input: Any = None, hand_back: bool = False
) -> SagaResult:
    """Run a new shop saga as far as it goes (to a wait, handing waits back)."""
    saga = shop_saga(shop)
    return await Engine(store, [saga], hand_back=hand_back).run(saga, input or {}, saga_id=saga_id)


async def assert_replays(store: MemoryStore, result: SagaResult) -> SagaState:
    """The stored log folds to the outcome the driver reached (recovery sees the same),
    however much of it was folded before the rest was applied."""
    log = await records(store, result.saga_id)
    replayed = SagaState.from_records(result.saga_id, log)
    assert (replayed.status, replayed.reason) == (result.status, result.reason)
    assert dict(replayed.results) == dict(result.results)
    for cut in range(len(log)):
        resumed = SagaState.from_records(result.saga_id, log[:cut])
        for record in log[cut:]:
            resumed.apply(record)
        assert resumed.as_dict() == replayed.as_dict()
    return replayed


# --------------------------------------------------------------------------- retry --from


async def test_retry_from_the_failed_step_runs_it_again_and_the_saga_completes(
    store: MemoryStore, shop: Shop
) -> None:
    saga_id = await stuck(store, shop, "email")
    shop.down.clear()  # the mail server is back

    await Client(store).retry(saga_id, from_step="email", note="smtp is back", by="ops")
    state = await Client(store).state(saga_id)
    result = await Engine(store, [shop_saga(shop)]).resume_saga(saga_id)

    last = state.records[-1]
    assert (last.type, last.step, last.data) == (
        RecordType.OPERATOR_RETRY,
        "email",
        '{"by":"ops","note":"smtp is back"}',
    )
    assert state.status is SagaStatus.RUNNING and state.reason is None
    assert state.by_name["email"].retry_base == 2  # a fresh budget: the policy counts anew
    assert result.status is SagaStatus.COMPLETED
    assert shop.calls == ["charge", "ship", "email", "email", "email", "confirm"]
    assert set(shop.keys[2:5]) == {f"{saga_id}:email:action"}  # a retry keeps its key
    await assert_replays(store, result)


async def test_retry_from_a_step_waiting_out_a_back_off_runs_it_now_with_a_fresh_budget(
    store: MemoryStore, shop: Shop
) -> None:
    shop.down = {"email"}
    slow = shop_saga(shop, LONG_BACKOFF)
    running = await Engine(store, [slow], hand_back=True).run(slow, {}, saga_id="s")
    assert running.status is SagaStatus.RUNNING  # handed back for an hour
    changed = Saga("shop", 1).add(_noop, compensate=_noop)  # shop@1 redefined in place
    await Engine(store, [changed]).resume_saga("s")
    assert (await Client(store).state("s")).status is SagaStatus.NEEDS_ATTENTION
    shop.down.clear()

    await Client(store).retry("s", from_step="email", note="deployed shop", by="ops")
    result = await Engine(store, [slow], hand_back=True).resume_saga("s")

    assert result.status is SagaStatus.COMPLETED  # not handed back for the rest of the hour
    assert shop.calls == ["charge", "ship", "email", "email", "confirm"]
    await assert_replays(store, result)


async def _noop(ctx: object) -> None:
    return None


@pytest.mark.parametrize(
    ("down", "step", "why"),
    [
        (
            "email",
            "charge",
            "step 'charge' succeeded, and running again from it would repeat the pivot and "
            "what followed",
        ),
        ("email", "ship", "step 'ship' succeeded, and a pivot step never runs twice"),
        ("confirm", "email", "step 'email' succeeded, and a retriable step never runs twice"),
        ("email", "confirm", "step 'confirm' has not run: the saga stopped at 'email'"),
        ("email", "refund", "step 'refund' is not one of its steps (charge, ship, email, confirm)"),
    ],
)
async def test_retry_from_any_other_step_is_refused_and_records_nothing(
    store: MemoryStore, shop: Shop, down: str, step: str, why: str
) -> None:
    saga_id = await stuck(store, shop, down)
    before = await records(store, saga_id)

    with pytest.raises(StepActionError) as refused:
        await Client(store).retry(saga_id, from_step=step, note="try", by="ops")

    assert str(refused.value) == f"cannot retry saga {saga_id!r}: {why}"
    assert (refused.value.saga_id, refused.value.step) == (saga_id, step)
    assert await records(store, saga_id) == before


async def test_retry_from_a_step_of_a_saga_that_was_compensating_is_refused(
    store: MemoryStore, shop: Shop
) -> None:
    shop.refund_possible = False
    saga_id = await stuck(store, shop, "ship")  # the pivot failed, the refund cannot be done
    before = await records(store, saga_id)

    with pytest.raises(StepActionError, match="the saga was compensating"):
        await Client(store).retry(saga_id, from_step="ship")
    with pytest.raises(StepActionError, match="the saga compensates"):
        await Client(store).skip(saga_id, "ship", result=None, note="shipped by hand")

    assert await records(store, saga_id) == before


async def test_retry_from_a_saga_that_does_not_need_attention_is_refused(
    store: MemoryStore, shop: Shop
) -> None:
    result = await start(store, shop, "done")
    before = await records(store, "done")

    with pytest.raises(OperatorActionError, match="it is completed, not needs_attention"):
        await Client(store).retry(result.saga_id, from_step="email")

    assert await records(store, "done") == before


# --------------------------------------------------------------------------- skip


async def test_skip_of_a_step_failed_for_good_goes_on_with_the_supplied_result(
    store: MemoryStore, shop: Shop
) -> None:
    saga_id = await stuck(store, shop, "email")

    await Client(store).skip(
        saga_id, "email", result={"message": "by-hand"}, note="sent from Outlook", by="ops"
    )
    state = await Client(store).state(saga_id)
    result = await Engine(store, [shop_saga(shop)]).resume_saga(saga_id)

    email = state.by_name["email"]
    assert state.status is SagaStatus.RUNNING and state.reason is None
    assert email.status is StepStatus.SUCCEEDED and email.error is None
    assert email.skipped_by == {"by": "ops", "note": "sent from Outlook"}
    assert state.as_dict()["events"][-1] == {
        "seq": len(state.records) - 1,
        "type": "operator_skipped",
        "at": state.records[-1].at,
        "step": "email",
        "attempt": 0,
        "data": {"by": "ops", "note": "sent from Outlook", "result": {"message": "by-hand"}},
    }
    assert result.status is SagaStatus.COMPLETED
    assert shop.calls == ["charge", "ship", "email", "email", "confirm"]  # no third e-mail
    assert shop.seen["email"] == {"message": "by-hand"}
    replayed = await assert_replays(store, result)
    assert replayed.by_name["email"].skipped_by == {"by": "ops", "note": "sent from Outlook"}


async def test_skip_of_a_step_a_handed_back_saga_keeps_retrying_goes_through_its_inbox(
    store: MemoryStore, shop: Shop
) -> None:
    shop.down = {"email"}  # down for the whole test: only the skip moves the saga on
    slow = shop_saga(shop, LONG_BACKOFF)
    engine = Engine(store, [slow], hand_back=True)
    running = await engine.run(slow, {}, saga_id="s")
    assert running.status is SagaStatus.RUNNING and running.due_at is not None
    before = await records(store, "s")

    await Client(store).skip("s", "email", result=None, note="sent by hand", by="ops")
    stored = await store.load("s")
    assert stored is not None
    assert stored.records == before  # the driver, not the client, writes a running saga's log
    assert stored.instance.due_at is not None and stored.instance.due_at < running.due_at

    result = await engine.resume_saga("s")

    assert result.status is SagaStatus.COMPLETED
    assert shop.calls == ["charge", "ship", "email", "confirm"]
    assert "email" in shop.seen and shop.seen["email"] is None
    kinds = [r.type for r in (await records(store, "s"))[len(before) :]]
    assert kinds[:2] == [RecordType.MESSAGE_RECEIVED, RecordType.OPERATOR_SKIPPED]
    await assert_replays(store, result)


async def test_skip_reaches_a_driver_waiting_out_a_back_off_in_its_process(
    store: MemoryStore, shop: Shop
) -> None:
    shop.down = {"email"}
    slow = shop_saga(shop, LONG_BACKOFF)
    driving = asyncio.ensure_future(Engine(store, [slow]).run(slow, {}, saga_id="s"))
    await until_failed(store, "s")

    await Client(store).skip("s", "email", result="by-hand", note="sent by hand", by="ops")
    async with asyncio.timeout(10):
        result = await driving

    assert result.status is SagaStatus.COMPLETED
    assert shop.calls == ["charge", "ship", "email", "confirm"]  # the skipped step not again
    assert shop.seen["email"] == "by-hand"
    await assert_replays(store, result)


async def until_failed(store: MemoryStore, saga_id: str) -> None:
    """Wait, woken by the store and with a deadline, until the saga's last record is a
    failure (its driver now waits out the back-off)."""
    async with asyncio.timeout(10), store.watch(saga_id) as change:
        while True:
            stored = await store.load(saga_id)
            if stored is not None and stored.records[-1].type is RecordType.STEP_FAILED:
                return
            await change.wait(1.0)


@pytest.mark.parametrize(
    ("step", "why"),
    [
        ("ship", "step 'ship' did not fail (it is succeeded)"),
        ("confirm", "step 'confirm' did not fail (it is skipped)"),
        ("refund", "step 'refund' is not one of its steps (charge, ship, email, confirm)"),
    ],
)
async def test_skip_of_a_step_that_did_not_fail_is_refused(
    store: MemoryStore, shop: Shop, step: str, why: str
) -> None:
    saga_id = await stuck(store, shop, "email")
    before = await records(store, saga_id)

    with pytest.raises(StepActionError) as refused:
        await Client(store).skip(saga_id, step, result=None, note="done by hand")

    assert str(refused.value) == f"cannot skip saga {saga_id!r}: {why}"
    assert await records(store, saga_id) == before


async def test_skip_is_refused_without_a_note_or_a_json_result_or_when_the_saga_ended(
    store: MemoryStore, shop: Shop
) -> None:
    saga_id = await stuck(store, shop, "email")
    shop.down.clear()
    done = await start(store, shop, "done")
    before = [await records(store, saga_id), await records(store, done.saga_id)]
    client = Client(store)

    with pytest.raises(OperatorActionError, match="say what was done instead"):
        await client.skip(saga_id, "email", result=None, note=" ")
    with pytest.raises(SerializationError, match="step 'email': the skipped step's result"):
        await client.skip(saga_id, "email", result=float("nan"), note="sent")
    with pytest.raises(StepActionError, match="cannot be skipped: the saga is completed"):
        await client.skip(done.saga_id, "email", result=None, note="sent")

    assert [await records(store, saga_id), await records(store, done.saga_id)] == before
    assert await store.messages(saga_id) == await store.messages(done.saga_id) == []


async def test_skip_of_a_step_waiting_for_a_message_is_refused(
    store: MemoryStore, shop: Shop
) -> None:
    waiting = await start(store, shop, "w", {"wait": "delivered"}, hand_back=True)
    assert waiting.status is SagaStatus.RUNNING

    with pytest.raises(StepActionError, match="'email' did not fail \\(it is waiting\\)"):
        await Client(store).skip("w", "email", result=None, note="sent")

    assert await store.messages("w") == []


async def test_a_driver_drops_a_skip_whose_step_no_longer_failed(
    store: MemoryStore, shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    shop.down = {"email"}
    slow = shop_saga(shop, LONG_BACKOFF)
    engine = Engine(store, [slow], hand_back=True)
    await engine.run(slow, {}, saga_id="s")
    # a skip of a step that has not failed (as if it succeeded after the operator looked)
    await store.send("s", SKIP, '{"step":"ship","by":"ops","note":"late","result":null}')

    with caplog.at_level(logging.WARNING, logger="sagakit.orchestration"):
        result = await engine.resume_saga("s")

    assert result.status is SagaStatus.RUNNING  # email still waits out its back-off
    log = await records(store, "s")
    assert RecordType.OPERATOR_SKIPPED not in [r.type for r in log]
    assert "an operator's skip is not applied: step 'ship' did not fail" in caplog.text


# --------------------------------------------------------------------------- signal, show


async def test_a_signal_to_a_saga_that_ended_is_refused(store: MemoryStore, shop: Shop) -> None:
    saga_id = await stuck(store, shop, "email")

    with pytest.raises(OperatorActionError, match="it is needs_attention, so nothing would read"):
        await Client(store).signal(saga_id, "delivered", {"ok": True})

    assert await store.messages(saga_id) == []


async def test_the_timeline_shows_operators_step_actions(store: MemoryStore, shop: Shop) -> None:
    saga_id = await stuck(store, shop, "email")
    client = Client(store)
    await client.retry(saga_id, from_step="email", note="again", by="ops")
    await Engine(store, [shop_saga(shop)]).resume_saga(saga_id)
    await client.skip(saga_id, "email", result={"message": "x"}, note="by hand", by="ops")
    out = io.StringIO()

    Console(file=out, width=80).print(render_timeline(await client.state(saga_id)))

    shown = out.getvalue()
    assert "operator_retry" in shown and "operator_skipped" in shown
    assert "by ops: by hand" in shown
