"""What a scenario runs: one order saga per call, plus a check of what the saga log kept.

``run_one`` answers whether that saga completed, and ``close`` counts the whole logs the
store holds afterwards, so an engine that skips work or loses records cannot post a fast
number unnoticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import sagakit
from benchmarks.order import (
    ORDER,
    RECORDS_PER_SAGA,
    Clients,
    Order,
    OrderSagaOrchestrator,
    build_order_saga,
)
from sagakit import Engine, MemoryStore, RecordType, SagaStatus, Store
from sagakit.log._codec import encode
from sagakit.log._fast import RecordTypes
from sagakit.orchestration._context import StepContext
from sagakit.orchestration._engine import SagaResult
from sagakit.orchestration._plan import Plan, new_saga_id
from sagakit.store import InstanceFilter


class Subject(Protocol):
    """One way of running the order saga."""

    async def run_one(self) -> bool:
        """Run one saga to its end; True if it completed."""
        ...

    async def close(self) -> int | None:
        """Release resources; how many completed sagas the log holds whole (None: no log)."""
        ...


class HandWritten:
    """The source document's orchestrator: no log, nothing to check afterwards."""

    def __init__(self) -> None:
        clients = Clients.fake()
        self._orchestrator = OrderSagaOrchestrator(
            clients.payment, clients.inventory, clients.shipping
        )
        self._order = Order.of(ORDER)

    async def run_one(self) -> bool:
        status: str = (await self._orchestrator.execute(self._order))["status"]
        return status == "completed"

    async def close(self) -> int | None:
        return None


class OnEngine:
    """``sagakit.Engine`` on a store; ``reopen`` re-reads a durable log from its file."""

    def __init__(self, store: Store, reopen: str | None = None) -> None:
        self._store = store
        self._reopen = reopen
        self._saga = build_order_saga(Clients.fake())
        self._engine = Engine(store, [self._saga])

    async def run_one(self) -> bool:
        result = await self._engine.run(self._saga, ORDER)
        return result.status is SagaStatus.COMPLETED

    async def close(self) -> int | None:
        if self._reopen is None:
            return await whole_logs(self._store)
        await self._store.close()
        reopened = await sagakit.open_store(self._reopen)
        try:
            return await whole_logs(reopened)
        finally:
            await reopened.close()


STRAIGHT_LINE_OWNER = "straight-line"
STRAIGHT_LINE_LEASE = 30.0


class StraightLine:
    """The engine's own data for a saga that succeeds, made with none of the engine around it.

    The very records, state, contexts, MemoryStore writes and result ``Engine.run`` makes,
    in its order, in a straight line: no driver, lease, error handling, retries or waits.
    It is what any driver of these data structures costs at least, so the gap to
    ``Engine.run`` on MemoryStore is all that driving could ever win back. Its logs are
    checked whole like the engine's, so it cannot post a figure by skipping work.
    """

    def __init__(self) -> None:
        self.store = MemoryStore()
        self._saga = build_order_saga(Clients.fake())
        self._plan = Plan(self._saga)
        self._started_by = encode({"holder": STRAIGHT_LINE_OWNER})

    async def run_one(self) -> bool:
        saga, store, started_by = self._saga, self.store, self._started_by
        saga_id = new_saga_id()
        journal = self._plan.begin(saga_id, ORDER)
        state = journal.state
        for position, step in enumerate(saga.steps):
            journal.add(RecordTypes.STEP_STARTED, step.name, 1, started_by)
            records = journal.take()
            if position == 0:
                expires = records[0].at + STRAIGHT_LINE_LEASE
                instance = journal.new_instance(
                    lease_owner=STRAIGHT_LINE_OWNER, lease_expires=expires
                )
                await store.create(instance, records)
            else:
                await store.append(saga_id, records, state.status)
            key = f"{saga_id}:{step.name}:action"
            ctx = StepContext(
                saga_id, saga.name, step.name, 1, key, state.input_json, state.results
            )
            journal.add(RecordTypes.STEP_SUCCEEDED, step.name, 1, encode(await step.action(ctx)))
        journal.add(RecordTypes.SAGA_COMPLETED)
        await store.append(saga_id, journal.take(), state.status)
        return SagaResult.of(state).status is SagaStatus.COMPLETED

    async def close(self) -> int | None:
        return await whole_logs(self.store)


async def whole_logs(store: Store) -> int:
    """Completed instances whose log has every record, ending in ``saga_completed``."""
    count = 0
    for instance in await store.instances(InstanceFilter(statuses={SagaStatus.COMPLETED})):
        stored = await store.load(instance.id)
        if stored is None:
            continue
        records = stored.records
        if len(records) == RECORDS_PER_SAGA and records[-1].type is RecordType.SAGA_COMPLETED:
            count += 1
    return count


async def hand_written(_: Path) -> Subject:
    return HandWritten()


async def on_memory(_: Path) -> Subject:
    return OnEngine(MemoryStore())


async def straight_line(_: Path) -> Subject:
    return StraightLine()


async def on_sqlite(workdir: Path) -> Subject:
    """A fresh SQLite file (WAL, synchronous=FULL, as the store opens it) in ``workdir``."""
    url = f"sqlite:///{workdir / 'bench.db'}"
    return OnEngine(await sagakit.open_store(url), reopen=url)
