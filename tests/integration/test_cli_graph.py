"""``sagakit graph``: definitions from an app module, an instance from a SQLite log, and
mistakes as one ``error:`` line."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sagakit import CompensationContext, Engine, Saga, StepContext, open_store
from sagakit.cli import app

APP_MODULE = """
from sagakit import Choreography, ChoreographyStep, Saga

order = Saga("order", 1)


async def release(ctx):
    return None


@order.step(compensate=release)
async def reserve(ctx):
    return None


@order.pivot()
async def ship(ctx):
    return None


flow = Choreography(
    "flow",
    steps=[
        ChoreographyStep("pay", succeeded="Paid", compensated="Refunded"),
        ChoreographyStep("deliver", succeeded="Delivered", failed="Lost"),
    ],
    starts="Paid",
    completes="Delivered",
    compensated="Refunded",
)


def everything():
    return [order, flow]


nothing = 42
"""


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"SAGAKIT_DB": "foo://not-used"})


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"graph_app_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_saga_definition_is_printed_as_plain_mermaid(module: str) -> None:
    result = cli("graph", f"{module}:order")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "---",
        'title: "order@1"',
        "---",
        "flowchart TD",
        '    n0["reserve (compensatable)"]',
        '    n1{{"ship (pivot)"}}',
        '    n2("release (compensation)")',
        "    n0 --> n1",
        '    n0 -.->|"undo"| n2',
        "    class n1 pivot",
        "    class n2 compensation",
        "    classDef pivot stroke-width:4px",
        "    classDef compensation stroke-dasharray:5 5",
    ]
    assert "\x1b" not in result.stdout


def test_a_choreography_and_a_callable_yielding_both_are_drawn(module: str) -> None:
    flow = cli("graph", f"{module}:flow")
    both = cli("graph", f"{module}:everything")

    assert flow.exit_code == 0, flow.output
    assert '    n0 -->|"Paid"| n1' in flow.stdout.splitlines()
    assert '    n1 -.->|"Lost"| n0' in flow.stdout.splitlines()
    assert both.exit_code == 0, both.output
    assert both.stdout.startswith("flowchart TD\n")
    assert '    subgraph n0["order@1"]' in both.stdout
    assert '["flow@1"]' in both.stdout


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_at_all:saga", "cannot import module 'no_such_module_at_all'"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}:nothing", "is int, not a Saga or a Choreography"),
        ("json:dumps", "calling json:dumps failed: TypeError"),
        ("{module}", "must look like module:attribute"),
    ],
)
def test_a_bad_reference_is_one_line_and_exit_2(module: str, reference: str, message: str) -> None:
    result = cli("graph", reference.format(module=module))

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr


async def failed_saga(url: str) -> None:
    saga = Saga("order", 1)

    async def reserve(ctx: StepContext) -> None:
        return None

    async def release(ctx: CompensationContext) -> None:
        return None

    async def charge(ctx: StepContext) -> None:
        raise ValueError("card declined")

    saga.add(reserve, compensate=release).add(charge, kind="pivot")
    store = await open_store(url)
    try:
        await Engine(store, [saga]).run(saga, {}, saga_id="order-1")
    finally:
        await store.close()


def test_an_instance_is_drawn_from_its_sqlite_log_in_its_statuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    asyncio.run(failed_saga(url))

    result = cli("graph", "--db", url, "order-1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == 'title: "order@1 order-1 (compensated)"'
    assert '    n0["reserve (compensatable, compensated)"]' in lines
    assert '    n1{{"charge (pivot, failed)"}}' in lines
    assert "    class n0 compensated" in lines and "    class n1 failed" in lines


def test_an_unknown_id_or_a_bad_db_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    asyncio.run(failed_saga(url))

    unknown = cli("graph", "--db", url, "nope")
    missing = cli("graph", "--db", f"sqlite:///{tmp_path / 'typo' / 'x.db'}", "order-1")
    scheme = cli("graph", "--db", "foo://x", "order-1")

    assert unknown.exit_code == 1
    assert unknown.stderr == "error: no saga instance with id 'nope'\n"
    for result in (missing, scheme):
        assert result.exit_code == 1
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
        assert result.stdout == ""
    assert not (tmp_path / "typo").exists()
