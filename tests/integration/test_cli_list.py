"""``sagakit list`` as an operator uses it to find sagas: every filter, counts, pages and
the formats for scripts, on a real SQLite log the engine wrote, at 80 columns, piped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

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
from sagakit.log import SagaStatus

NARROW = {"COLUMNS": "80", "TERM": "dumb"}
ORDERS = 55
DECLINED = (7, 8)
"""Orders whose charge is declined and whose reservation cannot be released: needs_attention."""


def order_saga() -> Saga:
    saga = Saga("order", 1)

    @saga.step(compensate=release)
    async def reserve(ctx: StepContext) -> dict[str, str]:
        return {"reservation": f"r-{ctx.input['order_id']}"}

    @saga.pivot()
    async def charge(ctx: StepContext) -> None:
        if ctx.input["declined"]:
            raise RuntimeError("card declined")

    return saga


async def release(ctx: CompensationContext) -> None:
    raise CompensationImpossible("the warehouse already shipped it")


def approval_saga() -> Saga:
    saga = Saga("approval", 1)

    @saga.pivot()
    async def ask(ctx: StepContext) -> Any:
        return await ctx.wait_for("approved", timeout=3600)

    return saga


async def fill(url: str) -> None:
    store = await open_store(url)
    try:
        orders, approval = order_saga(), approval_saga()
        engine = Engine(store, [orders, approval], hand_back=True)
        for n in range(ORDERS):
            order = {"order_id": n, "declined": n in DECLINED}
            await engine.run(orders, order, saga_id=f"order-{n:03}")
        parked = await engine.run(approval, {}, saga_id="approval-1")
        assert parked.status is SagaStatus.RUNNING
    finally:
        await store.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('list') / 'sagas.db'}"
    asyncio.run(fill(url))
    return url


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=NARROW)


def listed(db: str, *args: str) -> Result:
    result = cli("list", "--db", db, *args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def ids(result: Result) -> list[str]:
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


def test_grep_counts_what_the_status_filter_finds(db: str) -> None:
    result = listed(db, "--status", "needs_attention", "--name", "order")
    lines = result.stdout.splitlines()
    assert sum("needs_attention" in line for line in lines) == len(DECLINED)
    assert sorted(ids(result)) == [f"order-{n:03}" for n in DECLINED]


def test_the_default_page_says_more_match_and_its_cursor_shows_the_rest(db: str) -> None:
    first = listed(db)
    assert len(ids(first)) == 50
    assert "--after" in first.stderr
    cursor = first.stderr.split("--after")[1].split()[0]
    rest = listed(db, "--after", cursor)
    assert "--after" not in rest.stderr
    everything = ids(first) + ids(rest)
    assert len(everything) == len(set(everything)) == ORDERS + 1


def test_input_and_result_fields_find_one_order(db: str) -> None:
    assert ids(listed(db, "--input", "order_id=12")) == ["order-012"]
    assert ids(listed(db, "--result", "reserve.reservation=r-12")) == ["order-012"]
    assert listed(db, "--input", "order_id=999").stdout.strip() == "no sagas match"


def test_a_waiting_saga_says_what_it_waits_for(db: str) -> None:
    result = listed(db, "--waiting")
    assert ids(result) == ["approval-1"]
    assert "waits for 'approved' until" in result.stdout
    assert ids(listed(db, "--waiting-for", "approved")) == ["approval-1"]
    assert listed(db, "--waiting-for", "paid").stdout.strip() == "no sagas match"


def test_failing_step_error_and_stuck(db: str) -> None:
    declined = [f"order-{n:03}" for n in reversed(DECLINED)]
    assert ids(listed(db, "--failing-step", "charge")) == declined
    assert ids(listed(db, "--error", "ALREADY SHIPPED")) == declined
    assert listed(db, "--stuck", "10m").stdout.strip() == "no sagas match"
    assert listed(db, "--created-before", "1d").stdout.strip() == "no sagas match"
    assert len(ids(listed(db, "--created-after", "1d", "--limit", "500"))) == ORDERS + 1


def test_counts_per_saga_and_status(db: str) -> None:
    lines = listed(db, "--count").stdout.splitlines()
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in lines}
    assert rows[("order@1", "completed")] == str(ORDERS - len(DECLINED))
    assert rows[("order@1", "needs_attention")] == str(len(DECLINED))
    assert rows[("approval@1", "running")] == "1"
    counted = json.loads(listed(db, "--count", "--json").stdout)
    assert {"name": "order", "version": 1, "status": "needs_attention", "total": 2} in counted


def test_jsonl_is_one_object_a_line_with_the_scheduling_facts(db: str) -> None:
    lines = listed(db, "--jsonl", "--limit", "5").stdout.splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert first["id"] == "approval-1" and first["waiting"]["signal"] == "approved"
    assert {"due_at", "lease_owner", "lease_expires", "progress_at"} <= first.keys()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stuck", "soon"], "invalid --stuck 'soon'"),
        (["--created-after", "yesterday"], "invalid --created-after 'yesterday'"),
        (["--input", "order_id"], "invalid --input 'order_id'"),
        (["--result", "reservation=r-1"], "name the step"),
        (["--status", "done"], "invalid --status 'done'"),
        (["--after", "junk"], "invalid cursor 'junk'"),
    ],
)
def test_a_bad_filter_is_one_line(db: str, args: list[str], message: str) -> None:
    result = cli("list", "--db", db, *args)
    assert result.exit_code in (1, 2)
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr
