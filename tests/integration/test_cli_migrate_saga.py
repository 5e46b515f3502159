"""``sagakit upgrade-saga`` against real saga logs (SQLite and PostgreSQL).

The app module registers ``flow@1`` and ``flow@2`` side by side, as an app does during a
deploy. A v1 saga stops after ``a`` (``b``'s service is gone, retried hourly); the command
moves it to v2, and ``sagakit worker --once`` with only v2 finishes it, running ``b2`` and
``c``, not ``a`` again.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from saga_logs import SagaLogs
from sagakit import Client, Engine, Saga, SagaResult, open_store
from sagakit.cli import app

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))

APP_MODULE = """
from pathlib import Path

from sagakit import Retry, Saga

LATER = Retry(attempts=None, backoff=3600, jitter=0)
v1, v2 = Saga("flow", 1), Saga("flow", 2)


def called(ctx):
    with open(Path(ctx.input["calls"]), "a") as calls:
        calls.write(ctx.step + "\\n")


async def undo(ctx):
    called(ctx)


@v1.step(compensate=undo)
async def a(ctx):
    called(ctx)
    return {"hold": "h-1"}


@v1.pivot(retry=LATER)
async def b(ctx):
    called(ctx)
    raise RuntimeError("b's service is gone")


@v1.retriable()
async def c(ctx):
    called(ctx)


v2.add(a, compensate=undo)


@v2.pivot()
async def b2(ctx):
    called(ctx)
    return ctx.results["a"]["hold"]


@v2.retriable(name="c")
async def c2(ctx):
    called(ctx)
    return ctx.results["b2"]


both = [v1, v2]
only_v2 = [v2]
"""


@dataclass
class Flow:
    url: str
    directory: Path
    module: str
    sagas: list[Saga]

    def start(self, saga_id: str) -> SagaResult:
        return asyncio.run(self._start(saga_id))

    async def _start(self, saga_id: str) -> SagaResult:
        store = await open_store(self.url)
        try:
            input = {"calls": str(self.directory / f"{saga_id}.calls")}
            await Client(store).start(self.sagas[0], input, saga_id=saga_id)
            return await Engine(store, self.sagas[:1], hand_back=True).resume_saga(saga_id)
        finally:
            await store.close()

    def calls(self, saga_id: str) -> list[str]:
        return (self.directory / f"{saga_id}.calls").read_text().split()

    def upgrade(self, *args: str) -> Result:
        return CliRunner().invoke(
            app, ["upgrade-saga", *args, "--app", f"{self.module}:both", "--db", self.url]
        )

    def show(self, saga_id: str) -> Any:
        shown = CliRunner().invoke(app, ["show", saga_id, "--db", self.url, "--json"])
        assert shown.exit_code == 0, shown.output
        return json.loads(shown.stdout)


@pytest.fixture
def flow(saga_logs: SagaLogs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flow:
    directory = tmp_path / "app"
    directory.mkdir()
    module = f"flow_app_{uuid.uuid4().hex}"
    (directory / f"{module}.py").write_text(APP_MODULE)
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(directory))
    loaded = importlib.import_module(module)
    return Flow(saga_logs.new(tmp_path / "log"), directory, module, list(loaded.both))


def test_a_moved_saga_is_finished_by_a_worker_of_the_new_version(flow: Flow) -> None:
    assert flow.start("f-1").retrying == "b"

    done = flow.upgrade("f-1", "--to-version", "2", "--note", "b is retired", "--by", "ann")
    worker = subprocess.run(
        [SAGAKIT, "worker", "--once", "--app", f"{flow.module}:only_v2", "--db", flow.url],
        cwd=flow.directory,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.exit_code == 0, done.output
    assert done.stdout == (
        "f-1: moved from flow@1 to flow@2; a worker of that version carries it on\n"
    )
    assert worker.returncode == 0, worker.stderr
    assert flow.calls("f-1") == ["a", "b", "b2", "c"]
    shown = flow.show("f-1")
    assert (shown["status"], shown["version"]) == ("completed", 2)
    assert [s["result"] for s in shown["steps"]] == [{"hold": "h-1"}, "h-1", "h-1"]
    (moved,) = [e for e in shown["events"] if e["type"] == "operator_migrated"]
    assert moved["data"] | {"steps": None} == {
        "by": "ann",
        "note": "b is retired",
        "from_version": 1,
        "to_version": 2,
        "steps": None,
        "renamed": {"a": "a"},
    }
    text = CliRunner().invoke(app, ["show", "f-1", "--db", flow.url], env={"COLUMNS": "200"})
    assert text.exit_code == 0 and "operator_migrated" in text.stdout
    assert "v1 -> v2 by ann: b is retired" in text.stdout


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (
            ["--to-version", "3", "--note", "x"],
            2,
            "error: {module}:both has no flow@3 (it has flow@1, flow@2)\n",
        ),
        (
            ["--to-version", "1", "--note", "x"],
            1,
            "error: cannot migrate saga 'f-1': it is on version 1: it moves only to a newer"
            " one, not flow@1\n",
        ),
        (
            ["--to-version", "2", "--note", "x", "--map", "a=b2"],
            1,
            "error: cannot migrate saga 'f-1': step 'a' is done and maps to 'b2', but step 1"
            " of flow@2 is 'a': the steps done must map, in order, onto its first steps\n",
        ),
        (["--to-version", "2", "--note", "x", "--map", "a"], 2, "error: --map must look like"),
    ],
)
def test_refusals_are_one_line_and_record_nothing(
    flow: Flow, args: list[str], code: int, error: str
) -> None:
    flow.start("f-1")
    before = flow.show("f-1")["events"]

    refused = flow.upgrade("f-1", *args)

    assert (refused.exit_code, refused.stdout) == (code, ""), refused.output
    assert refused.stderr.startswith(error.format(module=flow.module))
    assert refused.stderr.count("\n") == 1
    after = flow.show("f-1")
    assert (after["events"], after["version"]) == (before, 1)


def test_an_unknown_saga_is_one_line(flow: Flow) -> None:
    flow.start("f-1")
    refused = flow.upgrade("nope", "--to-version", "2", "--note", "x")
    assert (refused.exit_code, refused.stderr) == (1, "error: no saga instance with id 'nope'\n")
