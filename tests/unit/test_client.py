"""Client and workers on one store: start, result, signals, cancel, retry and resolve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager

import pytest

from sagakit import (
    Client,
    CompensationContext,
    CompensationImpossible,
    MemoryStore,
    OperatorActionError,
    ResultTimeoutError,
    Retry,
    Saga,
    SagaIdConflictError,
    SagaStatus,
    StepContext,
    UnknownSagaError,
    Worker,
)
from sagakit.log import RecordType
from sagakit.store import (
    ANY_INSTANCE,
    ANY_MESSAGE,
    FirstCall,
    Store,
    StoredSaga,
    StoreWrapper,
    Watch,
)

FAST = Retry(attempts=3, backoff=0, jitter=0)


class Calls:
    """What the saga's steps did, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.refund_possible = True
        self.mail_down = False


def order_saga(calls: Calls, *, settle_timeout: float | None = None) -> Saga:
    """Charge, reserve (waits for stock to be confirmed), ship as the pivot, then e-mail."""
    saga = Saga("order", version=1)

    async def refund(ctx: CompensationContext) -> None:
        if not calls.refund_possible:
            raise CompensationImpossible("the card was closed")
        calls.log.append("refund")

    async def release(ctx: CompensationContext) -> None:
        calls.log.append("release")

    @saga.step(compensate=refund, compensation_retry=FAST)
    async def charge(ctx: StepContext) -> dict[str, str]:
        calls.log.append("charge")
        return {"payment": "p-1"}

    @saga.step(compensate=release)
    async def reserve(ctx: StepContext) -> object:
        calls.log.append("reserve")
        if ctx.input.get("wait_for_stock"):
            confirmation = await ctx.wait_for("stock_confirmed", timeout=settle_timeout)
            calls.log.append(f"confirmed {confirmation}")
            if not confirmation["ok"]:
                raise RuntimeError("no stock after all")
        return {"reservation": "r-1"}

    @saga.pivot()
    async def ship(ctx: StepContext) -> None:
        calls.log.append("ship")
        if ctx.input.get("ship_fails"):
            raise RuntimeError("courier refused")

    @saga.retriable(retry=Retry(attempts=2, backoff=0, jitter=0))
    async def email(ctx: StepContext) -> None:
        calls.log.append("email")
        if ctx.input.get("email_fails") or calls.mail_down:
            raise RuntimeError("mail server down")

    return saga


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def running_worker(store: MemoryStore) -> AsyncIterator[Calls]:
    """A worker on the store, polling often, stopped after the test."""
    calls = Calls()
    stop = asyncio.Event()
    worker = Worker(store, [order_saga(calls)], concurrency=4, poll=0.01)
    task = asyncio.ensure_future(worker.run(stop))
    yield calls
    stop.set()
    await task


async def test_start_returns_at_once_and_a_worker_completes_the_saga(
    store: MemoryStore, running_worker: Calls
) -> None:
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"order": 1})
    result = await client.result(saga_id, timeout=10)
    assert result.status is SagaStatus.COMPLETED
    assert running_worker.log == ["charge", "reserve", "ship", "email"]


async def test_start_is_idempotent_on_the_id(store: MemoryStore, running_worker: Calls) -> None:
    client = Client(store)
    saga = order_saga(Calls())
    assert await client.start(saga, {"order": 1}, saga_id="o-1") == "o-1"
    await client.result("o-1", timeout=10)
    assert await client.start(saga, {"order": 1}, saga_id="o-1") == "o-1"
    assert (await client.result("o-1", timeout=10)).status is SagaStatus.COMPLETED
    assert running_worker.log.count("charge") == 1
    with pytest.raises(SagaIdConflictError, match="with another input"):
        await client.start(saga, {"order": 2}, saga_id="o-1")


async def test_a_waiting_step_holds_no_worker_and_goes_on_when_signalled(
    store: MemoryStore, running_worker: Calls
) -> None:
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"wait_for_stock": True})
    await _until_logged(store, saga_id, RecordType.STEP_WAITING)
    stored = await store.load(saga_id)
    assert stored is not None
    assert stored.instance.lease_owner is None  # handed back: nobody holds it while it waits
    assert stored.instance.status is SagaStatus.RUNNING

    await client.signal(saga_id, "stock_confirmed", {"ok": True})
    result = await client.result(saga_id, timeout=10)

    assert result.status is SagaStatus.COMPLETED
    assert running_worker.log == [
        "charge",
        "reserve",
        "reserve",  # made again with the same key once the message came
        "confirmed {'ok': True}",
        "ship",
        "email",
    ]


async def test_a_wait_that_times_out_fails_the_step_and_compensates(store: MemoryStore) -> None:
    calls = Calls()
    stop = asyncio.Event()
    worker = Worker(store, [order_saga(calls, settle_timeout=0.2)], poll=0.01)
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"wait_for_stock": True})
    result = await client.result(saga_id, timeout=10)
    stop.set()
    await task
    assert result.status is SagaStatus.COMPENSATED
    assert result.reason is not None and "no 'stock_confirmed' message in time" in result.reason
    assert calls.log[-1] == "refund"


async def test_a_waiting_saga_can_be_cancelled(store: MemoryStore, running_worker: Calls) -> None:
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"wait_for_stock": True})
    await _until_logged(store, saga_id, RecordType.STEP_WAITING)

    await client.cancel(saga_id, reason="customer changed their mind", by="ops@example")
    result = await client.result(saga_id, timeout=10)

    assert result.status is SagaStatus.COMPENSATED
    assert result.reason == "cancelled by ops@example: customer changed their mind"
    assert running_worker.log == ["charge", "reserve", "refund"]
    state = await client.state(saga_id)
    assert state.cancel == {"by": "ops@example", "reason": "customer changed their mind"}


async def test_a_busy_saga_is_asked_to_cancel_through_its_inbox(store: MemoryStore) -> None:
    release_charge = asyncio.Event()
    saga = Saga("slow")

    async def undo(ctx: CompensationContext) -> None:
        return None

    async def charge(ctx: StepContext) -> None:
        await release_charge.wait()

    async def ship(ctx: StepContext) -> None:
        raise AssertionError("a cancelled saga must not go on")

    saga.add(charge, compensate=undo).add(ship, kind="pivot")
    stop = asyncio.Event()
    worker = Worker(store, [saga], poll=0.01)
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    saga_id = await client.start(saga)
    await _until_held(store, saga_id)

    await client.cancel(saga_id, by="ops")  # the worker holds it: the request waits in its inbox
    worker.engine.poke(saga_id)  # as its lease renewal would, a little later
    release_charge.set()
    result = await client.result(saga_id, timeout=10)
    stop.set()
    await task

    assert result.status is SagaStatus.COMPENSATED
    assert result.reason == "cancelled by ops"


async def test_cancel_is_refused_after_the_pivot(store: MemoryStore) -> None:
    calls = Calls()
    stop = asyncio.Event()
    worker = Worker(store, [order_saga(calls)], poll=0.01)
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"email_fails": True})
    result = await client.result(saga_id, timeout=10)
    stop.set()
    await task
    assert result.status is SagaStatus.NEEDS_ATTENTION
    with pytest.raises(OperatorActionError, match="needs_attention"):
        await client.cancel(saga_id)


async def test_retry_runs_the_failed_compensation_again(store: MemoryStore) -> None:
    calls = Calls()
    calls.refund_possible = False
    stop = asyncio.Event()
    worker = Worker(store, [order_saga(calls)], poll=0.01)
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"ship_fails": True})
    assert (await client.result(saga_id, timeout=10)).status is SagaStatus.NEEDS_ATTENTION

    calls.refund_possible = True  # the operator reopened the card
    await client.retry(saga_id, note="card reopened", by="ops")
    result = await client.result(saga_id, timeout=10)
    stop.set()
    await task

    assert result.status is SagaStatus.COMPENSATED
    assert calls.log == ["charge", "reserve", "ship", "release", "refund"]
    state = await client.state(saga_id)
    retries = [r for r in state.records if r.type is RecordType.OPERATOR_RETRY]
    assert len(retries) == 1 and '"by":"ops"' in (retries[0].data or "")


async def test_a_retried_compensation_that_fails_again_says_so_once(store: MemoryStore) -> None:
    calls = Calls()
    calls.refund_possible = False
    stop = asyncio.Event()
    worker = Worker(store, [order_saga(calls)], poll=0.01)
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"ship_fails": True})
    first = await client.result(saga_id, timeout=10)
    await client.retry(saga_id, note="try the refund again", by="ops")  # the card is still closed
    again = await client.result(saga_id, timeout=10)
    stop.set()
    await task

    assert again.status is SagaStatus.NEEDS_ATTENTION
    assert again.reason == first.reason
    assert again.reason is not None and again.reason.count("did not finish for") == 1


async def test_a_retried_saga_that_completes_keeps_no_stale_reason(store: MemoryStore) -> None:
    calls = Calls()
    calls.mail_down = True
    client = Client(store)
    saga_id = await client.start(order_saga(calls), {})
    stop = asyncio.Event()
    task = asyncio.ensure_future(Worker(store, [order_saga(calls)], poll=0.01).run(stop))
    stranded = await client.result(saga_id, timeout=10)
    assert stranded.status is SagaStatus.NEEDS_ATTENTION
    assert "mail server down" in str(stranded.reason)

    calls.mail_down = False
    await client.retry(saga_id, note="the mail server is back", by="ops")
    result = await client.result(saga_id, timeout=10)
    stop.set()
    await task
    assert result.status is SagaStatus.COMPLETED
    assert result.reason is None


async def _noop(ctx: object) -> None:
    return None


async def test_retry_gives_a_failed_retriable_step_a_fresh_budget(store: MemoryStore) -> None:
    calls = Calls()
    stop = asyncio.Event()
    worker = Worker(store, [order_saga(calls)], poll=0.01)
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"email_fails": True})
    assert (await client.result(saga_id, timeout=10)).status is SagaStatus.NEEDS_ATTENTION
    assert calls.log.count("email") == 2

    await client.retry(saga_id)
    result = await client.result(saga_id, timeout=10)
    stop.set()
    await task

    assert result.status is SagaStatus.NEEDS_ATTENTION  # the mail server is still down
    assert calls.log.count("email") == 4  # two more attempts, not zero


async def test_resolve_finishes_a_saga_by_hand(store: MemoryStore) -> None:
    calls = Calls()
    calls.refund_possible = False
    engine_worker = Worker(store, [order_saga(calls)], poll=0.01)
    stop = asyncio.Event()
    task = asyncio.ensure_future(engine_worker.run(stop))
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()), {"ship_fails": True})
    assert (await client.result(saga_id, timeout=10)).status is SagaStatus.NEEDS_ATTENTION
    stop.set()
    await task

    with pytest.raises(OperatorActionError, match="a note"):
        await client.resolve(saga_id, note=" ")
    await client.resolve(saga_id, note="refunded by bank transfer", by="ops")

    state = await client.state(saga_id)
    assert state.status is SagaStatus.COMPENSATED
    assert state.resolution == {"by": "ops", "note": "refunded by bank transfer"}
    with pytest.raises(OperatorActionError, match="compensated, not needs_attention"):
        await client.retry(saga_id)


async def test_result_times_out_with_a_clear_error(store: MemoryStore) -> None:
    client = Client(store)
    saga_id = await client.start(order_saga(Calls()))  # no worker runs it
    with pytest.raises(ResultTimeoutError, match=r"still pending after 0\.05s"):
        await client.result(saga_id, timeout=0.05)


async def test_unknown_ids_are_reported(store: MemoryStore) -> None:
    client = Client(store)
    with pytest.raises(UnknownSagaError):
        await client.result("nope", timeout=1)
    with pytest.raises(UnknownSagaError):
        await client.retry("nope")
    with pytest.raises(UnknownSagaError):
        await client.signal("nope", "x")


async def _has(store: MemoryStore, saga_id: str, kind: RecordType) -> bool:
    stored = await store.load(saga_id)
    return stored is not None and any(r.type is kind for r in stored.records)


async def _until_held(store: MemoryStore, saga_id: str) -> None:
    """Wait until a worker has claimed the instance and started its first step."""
    async with asyncio.timeout(10), store.watch(saga_id) as change:
        while not await _has(store, saga_id, RecordType.STEP_STARTED):
            await change.wait(1.0)


async def _until_logged(store: MemoryStore, saga_id: str, kind: RecordType) -> None:
    """Wait, woken by the store's change notices and with a deadline, until the log has a
    record of ``kind`` and nobody holds the instance (its driver has moved on)."""
    async with asyncio.timeout(10), store.watch(saga_id) as change:
        while True:
            stored = await store.load(saga_id)
            held = stored is None or stored.instance.lease_owner is not None
            if not held and await _has(store, saga_id, kind):
                return
            await change.wait(1.0)


async def test_an_idle_worker_hears_of_new_work_without_waiting_for_its_poll(
    store: MemoryStore,
) -> None:
    calls = Calls()
    stop = asyncio.Event()
    observed = _Idle(store)
    worker = Worker(observed, [order_saga(calls)], poll=3600)  # it would poll once an hour
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    async with asyncio.timeout(10):  # the worker listens, looks once and finds nothing
        await observed.found_nothing.wait()
    assert ANY_INSTANCE in observed.watching, "the idle worker listens for news of due work"
    assert ANY_MESSAGE in observed.watching, "and for messages to the sagas it drives"
    saga_id = await client.start(order_saga(Calls()), {})
    result = await client.result(saga_id, timeout=30)
    stop.set()
    await task
    assert result.status is SagaStatus.COMPLETED


class _Idle(StoreWrapper):
    """Tells what a worker watches, and when one of its claims came back empty."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.watching: list[str] = []
        self.found_nothing = asyncio.Event()

    def watch(self, saga_id: str) -> AbstractAsyncContextManager[Watch]:
        self.watching.append(saga_id)
        return super().watch(saga_id)

    async def claim(
        self,
        owner: str,
        limit: int,
        lease: float,
        *,
        due_only: bool = True,
        known: Collection[str] | None = None,
        first_calls: Mapping[str, FirstCall] | None = None,
    ) -> list[StoredSaga]:
        claimed = await super().claim(
            owner, limit, lease, due_only=due_only, known=known, first_calls=first_calls
        )
        if not claimed:
            self.found_nothing.set()
        return claimed
