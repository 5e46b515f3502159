"""The benchmark's straight line (``benchmarks.subjects.StraightLine``) makes every record
the engine makes for a succeeding saga, and its logs are counted whole, so its figure is a
floor for driving these data structures and not a shortcut."""

from __future__ import annotations

from benchmarks.order import RECORDS_PER_SAGA
from benchmarks.subjects import OnEngine, StraightLine

from sagakit import MemoryStore, RecordType, Store


async def _only_log(store: Store) -> list[tuple[RecordType, str | None, int]]:
    (instance,) = await store.instances()
    stored = await store.load(instance.id)
    assert stored is not None
    return [(record.type, record.step, record.attempt) for record in stored.records]


async def test_the_straight_line_logs_what_the_engine_logs() -> None:
    line, store = StraightLine(), MemoryStore()
    engine = OnEngine(store)

    assert await line.run_one()
    assert await engine.run_one()

    ours = await _only_log(line.store)
    assert ours == await _only_log(store)
    assert len(ours) == RECORDS_PER_SAGA and ours[-1][0] is RecordType.SAGA_COMPLETED
    assert await line.close() == 1
