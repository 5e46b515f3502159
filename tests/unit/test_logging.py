"""The engine logs what an operator must hear of, with the saga's facts as fields."""

from __future__ import annotations

import json
import logging

import pytest

from sagakit import Engine, MemoryStore, Saga, SagaStatus, StepContext, idempotency_key
from sagakit.cli._logs import JsonLines


def failing_saga() -> Saga:
    saga = Saga("order", 1)

    async def charge(ctx: StepContext) -> str:
        return "p-1"

    async def ship(ctx: StepContext) -> None:
        raise RuntimeError("courier refused")

    async def undo(ctx: object) -> None:
        return None

    return saga.add(charge, compensate=undo).add(ship, compensate=undo)


async def test_a_compensated_saga_leaves_structured_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sagakit")
    saga = failing_saga()
    result = await Engine(MemoryStore(), [saga]).run(saga, {}, saga_id="o-1")
    assert result.status is SagaStatus.COMPENSATED

    ours = [r for r in caplog.records if r.name == "sagakit.orchestration"]
    failed = next(r for r in ours if "attempt 1 failed" in r.getMessage())
    assert failed.levelno == logging.WARNING
    fields = vars(failed)
    assert (fields["saga_id"], fields["saga_name"], fields["saga_version"]) == ("o-1", "order", 1)
    assert (fields["step"], fields["attempt"]) == ("ship", 1)
    assert fields["key"] == idempotency_key("o-1", "ship")
    assert "RuntimeError" in failed.getMessage() and "courier refused" in failed.getMessage()
    assert "(for good; the saga compensates)" in failed.getMessage()
    assert not any(r.getMessage().startswith("saga o-1 compensates") for r in ours), (
        "the failure's line says the saga compensates: a second line would repeat it"
    )
    done = [r for r in ours if r.getMessage() == "saga o-1 compensated"]
    assert len(done) == 1 and done[0].levelno == logging.INFO


def test_a_json_line_keeps_the_fields_of_a_lease_wait() -> None:
    record = logging.LogRecord(
        "sagakit.orchestration", logging.INFO, __file__, 1, "waiting %d s", (23,), None
    )
    record.__dict__.update(lease_owner="host:42:ab", sagas=10, seconds=23)
    line = json.loads(JsonLines().format(record))
    assert line["message"] == "waiting 23 s"
    assert (line["lease_owner"], line["sagas"], line["seconds"]) == ("host:42:ab", 10, 23)
