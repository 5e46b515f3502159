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


async def on_sqlite(workdir: Path) -> Subject:
    """A fresh SQLite file (WAL, synchronous=FULL, as the store opens it) in ``workdir``."""
    url = f"sqlite:///{workdir / 'bench.db'}"
    return OnEngine(await sagakit.open_store(url), reopen=url)
