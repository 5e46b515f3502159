"""A worker's claim records a fresh saga's first call, and only where its driver would.

The driver would write that ``step_started`` first unless something else comes first: a
message in the inbox (a cancel compensates before any call), a deadline already passed, or
a registered definition other than the one the saga was started with. In each of those the
claim must leave the log alone, so the saga goes exactly as it did without the fold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sagakit import Client, CompensationContext, Saga, SagaStatus, StepContext, Worker
from sagakit.log import Record, RecordType
from sagakit.log._codec import encode
from sagakit.orchestration._plan import CANCEL
from sagakit.store import MemoryStore, Store, StoreWrapper


class Appends(StoreWrapper):
    """Counts the appends a store is asked for."""

    appends = 0

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        self.appends += 1
        await super().append(saga_id, records, status)


def two_steps(calls: list[str], first: str = "charge", deadline: float | None = None) -> Saga:
    saga = Saga("pair", 1, deadline=deadline)

    async def act(ctx: StepContext) -> str:
        calls.append(f"{ctx.step} action")
        return ctx.step

    async def undo(ctx: CompensationContext) -> None:
        calls.append(f"{ctx.step} compensation")

    return saga.add(act, name=first, compensate=undo).add(act, name="ship", compensate=undo)


async def run_worker_until_done(
    store: Store, saga: Saga, saga_id: str, owner: str = "w"
) -> SagaStatus:
    stop = asyncio.Event()
    worker = Worker(store, [saga], poll=0.01, owner=owner)
    task = asyncio.ensure_future(worker.run(stop))
    try:
        result = await Client(store).result(saga_id, timeout=10)  # a safety net
    finally:
        stop.set()
        await task
    return result.status


async def types(store: Store, saga_id: str) -> list[RecordType]:
    stored = await store.load(saga_id)
    assert stored is not None
    return [record.type for record in stored.records]


async def test_the_claim_records_the_first_call_and_the_driver_makes_it_once() -> None:
    store, calls = Appends(MemoryStore()), list[str]()
    saga = two_steps(calls)
    saga_id = await Client(store).start(saga)
    assert await run_worker_until_done(store, saga, saga_id, "host:1:w") is SagaStatus.COMPLETED
    assert calls == ["charge action", "ship action"]
    assert store.appends == 2  # of three without the fold: its first call came with the claim
    assert await types(store, saga_id) == [
        RecordType.SAGA_STARTED,
        RecordType.STEP_STARTED,
        RecordType.STEP_SUCCEEDED,
        RecordType.STEP_STARTED,
        RecordType.STEP_SUCCEEDED,
        RecordType.SAGA_COMPLETED,
    ]
    stored = await store.load(saga_id)
    assert stored is not None
    first = stored.records[1]
    assert (first.step, first.attempt, first.data) == ("charge", 1, '{"holder":"host:1:w"}')


async def test_a_message_waiting_in_the_inbox_comes_before_any_call() -> None:
    """A cancel that reached the inbox before any worker claimed the saga compensates it
    with no call made: the claim must not record one, which would then be settled first."""
    store, calls = MemoryStore(), list[str]()
    saga = two_steps(calls)
    saga_id = await Client(store).start(saga)
    await store.send(saga_id, CANCEL, encode({"by": "ops", "reason": "changed my mind"}))
    assert await run_worker_until_done(store, saga, saga_id) is SagaStatus.COMPENSATED
    assert calls == []
    assert RecordType.STEP_STARTED not in await types(store, saga_id)


async def test_a_deadline_passed_before_the_claim_comes_before_any_call() -> None:
    store, calls = MemoryStore(), list[str]()
    saga = two_steps(calls, deadline=1e-9)  # passed by the time any worker looks
    saga_id = await Client(store).start(saga)
    assert await run_worker_until_done(store, saga, saga_id) is SagaStatus.COMPENSATED
    assert calls == []
    assert RecordType.STEP_STARTED not in await types(store, saga_id)


async def test_another_definition_of_the_same_version_is_never_called() -> None:
    store, calls = MemoryStore(), list[str]()
    started_as = two_steps(calls)
    saga_id = await Client(store).start(started_as)
    changed = two_steps(calls, first="bill")  # same name and version, other first step
    assert await run_worker_until_done(store, changed, saga_id) is SagaStatus.NEEDS_ATTENTION
    assert calls == []
    assert await types(store, saga_id) == [
        RecordType.SAGA_STARTED,
        RecordType.SAGA_NEEDS_ATTENTION,
    ]
