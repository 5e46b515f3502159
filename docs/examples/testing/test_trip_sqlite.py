"""The trip saga on a real SQLite saga log: what a run leaves in the file, and a resume by
another store that opens the same file after a crash, as a restarted process would."""

from __future__ import annotations

from pathlib import Path

import pytest
from sagakit import Engine, RecordType, SagaState, SagaStatus, open_store

from trip_saga import TRIP, TripServices, build_trip_saga


class Crash(BaseException):
    """The process dies here."""


# --8<-- [start:sqlite]
@pytest.mark.asyncio
async def test_the_log_in_the_file_tells_the_whole_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trips.db'}"
    store = await open_store(url)
    saga = build_trip_saga(TripServices())
    await Engine(store).run(saga, TRIP, saga_id="t-20")
    await store.close()

    reopened = await open_store(url, create=False)  # a reader: a typo creates nothing
    stored = await reopened.load("t-20")
    await reopened.close()
    assert stored is not None and stored.instance.status is SagaStatus.COMPLETED
    state = SagaState.from_records("t-20", stored.records)
    assert state.input == TRIP
    assert state.results["charge_card"] == {"charge": "ch-t-20-84000"}
    types = [r.type for r in stored.records]
    assert types[0] is RecordType.SAGA_STARTED and types[-1] is RecordType.SAGA_COMPLETED
    # write-ahead: every call's started record, then its outcome, step by step
    assert types.count(RecordType.STEP_STARTED) == types.count(RecordType.STEP_SUCCEEDED) == 5


@pytest.mark.asyncio
async def test_a_crashed_run_is_finished_from_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'trips.db'}"
    services = TripServices()  # they outlive the crash, as real services do
    saga = build_trip_saga(services)
    services.hotel.fail("book", Crash(), after_effect=True)
    first = await open_store(url)
    with pytest.raises(Crash):
        await Engine(first, [saga]).run(saga, TRIP, saga_id="t-21")
    await first.close()  # nothing of the first process is left but the file

    second = await open_store(url)
    [result] = await Engine(second, [saga]).resume()
    await second.close()
    assert result.status is SagaStatus.COMPLETED
    assert services.hotel.applied("book") == ["H-t-21"]
    assert len(services.hotel.calls) == 2


# --8<-- [end:sqlite]

if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
