"""OpenTelemetry metrics of sagas: after the demo's four orders (``sagakit demo``, run here
in-process on a SQLite log), and after a call a dead worker started is taken over, what the
counters say is what the saga log says."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from rich.console import Console

from sagakit import Client, Engine, Saga, SagaState, SagaStatus, open_store, telemetry
from sagakit.demo import run_demo
from sagakit.log import Journal, RecordType
from sagakit.log._codec import encode
from sagakit.store import InstanceFilter

DEMO = "place_order"


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """sagakit records to a meter provider of this test's own, read in memory."""
    found = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[found])
    telemetry.configure(meter_provider=provider)
    try:
        yield found
    finally:
        telemetry.configure()
        provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Every data point recorded so far, by metric name."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == telemetry.INSTRUMENTATION
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def total(found: dict[str, list[Any]], name: str, **attributes: Any) -> int:
    """The sum of a counter's points whose attributes include ``attributes``."""
    return sum(
        p.value
        for p in found.get(name, [])
        if all(p.attributes.get(k) == v for k, v in attributes.items())
    )


async def test_the_demos_counts_by_status_match_the_saga_log(
    reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert await run_demo(url, Console(file=io.StringIO(), width=120)) == 0

    store = await open_store(url)
    try:
        rows = await store.instances(InstanceFilter())
        states = []
        for row in rows:
            stored = await store.load(row.id)
            assert stored is not None
            states.append(SagaState.from_records(row.id, stored.records))
    finally:
        await store.close()
    by_status = Counter(state.status for state in states)
    assert by_status == {
        SagaStatus.COMPLETED: 1,
        SagaStatus.COMPENSATED: 2,
        SagaStatus.NEEDS_ATTENTION: 1,
    }

    found = points(reader)
    assert set(found) <= set(telemetry.METRICS)
    version = states[0].version
    ours = {"saga.name": DEMO, "saga.version": version}
    assert total(found, "sagakit.sagas.started", **ours) == len(states)
    for status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.NEEDS_ATTENTION):
        assert total(found, f"sagakit.sagas.{status.value}", **ours) == by_status[status]
    assert total(found, "sagakit.drives.active", **ours) == 0  # every drive ended

    # a duration per call, a retry per call made again: as many as the log's started records
    started = Counter[tuple[str, str]]()
    retried = Counter[tuple[str, str]]()
    for state in states:
        for record in state.records:
            role = {
                RecordType.STEP_STARTED: "action",
                RecordType.COMPENSATION_STARTED: "compensation",
            }.get(record.type)
            if role is not None:
                assert record.step is not None
                started[(role, record.step)] += 1
                retried[(role, record.step)] += record.attempt > 1
    durations = Counter[tuple[str, str]]()
    histograms = {
        "action": "sagakit.step.duration",
        "compensation": "sagakit.compensation.duration",
    }
    for role, name in histograms.items():
        for point in found[name]:
            assert point.attributes["saga.name"] == DEMO
            assert point.attributes["saga.outcome"] in ("succeeded", "failed", "timed_out")
            assert point.sum >= 0
            durations[(role, point.attributes["saga.step"])] += point.count
    assert durations == started
    assert sum(retried.values()) > 0  # the e-mail is retried after the pivot
    for (role, step), count in retried.items():
        assert total(found, "sagakit.retries", **{"saga.step": step, "saga.role": role}) == count


async def test_a_call_another_holder_started_counts_as_a_takeover(
    reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    saga = Saga("takeover", 1)

    @saga.pivot()
    async def book(ctx: Any) -> str:
        return "booked"

    store = await open_store(f"sqlite:///{tmp_path / 'sagas.db'}")
    try:
        saga_id = await Client(store).start(saga)
        # a worker that claimed it, started the call and died: its record, then its lease gone
        assert await store.acquire("dead-host:1:abc", saga_id, 30.0)
        stored = await store.load(saga_id)
        assert stored is not None
        journal = Journal(SagaState.from_records(saga_id, stored.records))
        journal.add(RecordType.STEP_STARTED, "book", 1, encode({"holder": "dead-host:1:abc"}))
        await store.append(saga_id, journal.take(), SagaStatus.RUNNING)
        await store.release("dead-host:1:abc", saga_id, None)

        result = await Engine(store, [saga]).resume_saga(saga_id)
        assert result.status is SagaStatus.COMPLETED
        state = SagaState.from_records(saga_id, (await store.load(saga_id) or stored).records)
    finally:
        await store.close()
    taken = [r for r in state.records if r.type is RecordType.CALL_TAKEN_OVER]
    assert len(taken) == 1

    found = points(reader)
    ours = {"saga.name": "takeover", "saga.version": 1}
    assert total(found, "sagakit.lease.takeovers", **ours) == len(taken)
    assert total(found, "sagakit.sagas.started", **ours) == 1
    assert total(found, "sagakit.sagas.completed", **ours) == 1
