"""The straight-line subject of ``benchmarks.memory_floor`` makes every record the engine
makes for a succeeding saga (its logs are checked whole), so its figure is a floor for
driving these data structures and not a shortcut."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is beside src/

from benchmarks.memory_floor import StraightLine, measure
from benchmarks.order import RECORDS_PER_SAGA
from benchmarks.subjects import OnEngine

from sagakit import MemoryStore, RecordType


async def test_the_straight_line_logs_what_the_engine_logs() -> None:
    line, engine_store = StraightLine(), MemoryStore()
    engine = OnEngine(engine_store)

    assert await line.run_one()
    assert await engine.run_one()

    (ours,) = await line.store.instances()
    (theirs,) = await engine_store.instances()
    by_line = (await line.store.load(ours.id)), (await engine_store.load(theirs.id))
    kinds = [[(r.type, r.step, r.attempt) for r in stored.records] for stored in by_line if stored]
    assert len(kinds) == 2 and kinds[0] == kinds[1]
    assert len(kinds[0]) == RECORDS_PER_SAGA and kinds[0][-1][0] is RecordType.SAGA_COMPLETED


async def test_a_short_measurement_reports_all_three_subjects() -> None:
    medians = await measure(sagas=20, rounds=1)

    assert len(medians) == 3 and all(rate > 0 for rate in medians.values())
