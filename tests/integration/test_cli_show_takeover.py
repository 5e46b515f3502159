"""A takeover is visible: the new holder's ``call_taken_over`` record names the previous
holder and the call made again, ``sagakit show`` renders it, and the engine's warning says
"took over N sagas from host:pid (lease lapsed)". Against an SQLite file, at 80 columns."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sagakit import Engine, Saga, SagaResult, SagaStatus, StepContext, open_store
from sagakit.cli import app
from sagakit.log import RecordType, SagaState
from sagakit.log._codec import encode
from sagakit.orchestration._plan import Plan

DEAD = "deadhost:111:abcdef"


def trip() -> Saga:
    saga = Saga("trip", 1)

    async def charge(ctx: StepContext) -> str:
        return "paid"

    async def undo(ctx: object) -> None:
        return None

    saga.add(charge, compensate=undo)
    return saga


async def take_over(url: str, saga: Saga) -> tuple[SagaResult, SagaState]:
    """A log as a holder that died mid-call left it, carried on by another engine."""
    store = await open_store(url)
    try:
        journal = Plan(saga).begin("t-1", {})
        journal.add(RecordType.STEP_STARTED, "charge", 1, encode({"holder": DEAD}))
        row = journal.new_instance(lease_owner=DEAD, lease_expires=time.time() - 1)
        assert await store.create(row, journal.take())
        engine = Engine(store, [saga], owner="newhost:222:fedcba")
        [result] = await engine.resume()
        return result, await engine.status("t-1")
    finally:
        await store.close()


def test_a_takeover_is_recorded_rendered_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    with caplog.at_level(logging.INFO, "sagakit.orchestration"):
        result, state = asyncio.run(take_over(url, trip()))

    assert result.status is SagaStatus.COMPLETED
    taken = [r for r in state.records if r.type is RecordType.CALL_TAKEN_OVER]
    assert [(r.step, r.attempt) for r in taken] == [("charge", 1)]
    assert "took over 1 saga from deadhost:111 (lease lapsed)" in caplog.text

    shown = CliRunner().invoke(app, ["show", "t-1", "--db", url], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "call_taken_over charge 1 from deadhost:111:abcdef (lease lapsed)" in text
    assert "action made again by newhost:222:fedcba, key t-1:charge:action" in text
