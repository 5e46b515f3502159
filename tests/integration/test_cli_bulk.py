"""Bulk operator actions: ``sagakit retry --all`` and ``resolve --all`` with list's filters.

A dry run by default (it lists and records nothing), ``--yes`` to act, each saga's outcome
on its own line, and the log telling who did it and why.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sagakit import (
    CompensationContext,
    CompensationImpossible,
    Engine,
    Saga,
    StepContext,
    open_store,
)
from sagakit.cli import app
from sagakit.log import RecordType, SagaStatus
from sagakit.orchestration import resume_all

STUCK = ("order-1", "order-2", "order-3")
warehouse = {"reachable": False}
"""Whether releasing a reservation works: off at first, so the orders need attention."""


def order_saga() -> Saga:
    saga = Saga("order", 1)

    async def release(ctx: CompensationContext) -> None:
        if not warehouse["reachable"]:
            raise CompensationImpossible("the warehouse is unreachable")

    @saga.step(compensate=release)
    async def reserve(ctx: StepContext) -> str:
        return "reserved"

    @saga.pivot()
    async def charge(ctx: StepContext) -> None:
        if ctx.input["declined"]:
            raise RuntimeError("card declined")

    return saga


async def fill(url: str) -> None:
    store = await open_store(url)
    try:
        saga = order_saga()
        engine = Engine(store, [saga])
        for saga_id in STUCK:
            result = await engine.run(saga, {"declined": True}, saga_id=saga_id)
            assert result.status is SagaStatus.NEEDS_ATTENTION
        await engine.run(saga, {"declined": False}, saga_id="order-ok")
        await engine.run(saga, {"declined": True}, saga_id="trip-like")
    finally:
        await store.close()


async def log_of(url: str) -> dict[str, list[tuple[RecordType, str | None]]]:
    store = await open_store(url)
    try:
        logs = {}
        for instance in await store.instances():
            stored = await store.load(instance.id)
            assert stored is not None
            logs[instance.id] = [(r.type, r.data) for r in stored.records]
        return logs
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    warehouse["reachable"] = False
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    asyncio.run(fill(url))
    return url


def cli(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    assert "Traceback" not in result.output
    return result


def test_a_dry_run_lists_the_matches_and_records_nothing(db: str) -> None:
    before = asyncio.run(log_of(db))
    result = cli("resolve", "--all", "--input", "declined=true", "--note", "refunded", "--db", db)
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == sorted([*STUCK, "trip-like"])
    assert "would resolve 4 saga(s); nothing done" in result.stderr
    assert asyncio.run(log_of(db)) == before


def test_resolve_all_records_who_and_why_on_each_match(db: str) -> None:
    args = ["--all", "--created-after", "1h", "--error", "unreachable", "--yes"]
    result = cli("resolve", *args, "--note", "released by hand", "--by", "ops", "--db", db)
    assert result.exit_code == 0, result.output
    assert "resolve: 4 of 4 saga(s) done, 0 refused" in result.stderr
    logs = asyncio.run(log_of(db))
    for saga_id in (*STUCK, "trip-like"):
        kind, data = logs[saga_id][-1]
        assert kind is RecordType.OPERATOR_RESOLVED
        assert data is not None and json.loads(data) == {"by": "ops", "note": "released by hand"}
    assert logs["order-ok"][-1][0] is RecordType.SAGA_COMPLETED


def test_retry_all_then_a_worker_finishes_the_compensations(db: str) -> None:
    warehouse["reachable"] = True
    result = cli(
        "retry", "--all", "--name", "order", "--note", "warehouse back", "--yes", "--db", db
    )
    assert result.exit_code == 0, result.output
    assert "retry: 4 of 4 saga(s) done" in result.stderr

    async def drive() -> dict[str, SagaStatus]:
        store = await open_store(db)
        try:
            await resume_all(store, [order_saga()], lease=5.0, report=lambda outcome: None)
            return {i.id: i.status for i in await store.instances()}
        finally:
            await store.close()

    statuses = asyncio.run(drive())
    assert statuses == {
        **dict.fromkeys([*STUCK, "trip-like"], SagaStatus.COMPENSATED),
        "order-ok": SagaStatus.COMPLETED,
    }
    retried = [t for t, _ in asyncio.run(log_of(db))["order-1"] if t is RecordType.OPERATOR_RETRY]
    assert len(retried) == 1


def test_sagas_the_action_refuses_are_named_and_the_rest_go_ahead(db: str) -> None:
    before = asyncio.run(log_of(db))
    result = cli("retry", "--all", "--status", "completed", "--yes", "--db", db)
    assert result.exit_code == 1
    assert "order-ok: refused: " in result.stdout
    assert "retry: 0 of 1 saga(s) done, 1 refused" in result.stderr
    assert asyncio.run(log_of(db)) == before


@pytest.mark.parametrize(
    "args",
    [
        ["retry"],
        ["retry", "order-1", "--all"],
        ["retry", "order-1", "--name", "order"],
        ["resolve", "order-1", "--note", "x", "--yes"],
    ],
)
def test_one_saga_or_all_never_both_nor_neither(db: str, args: list[str]) -> None:
    result = cli(*args, "--db", db)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
