"""The ``sagakit`` command line, against real SQLite saga logs.

The worker and the demo run as separate processes through the installed entry point, as a
user would run them; the read-only commands run in-process through typer's runner.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest
from typer.testing import CliRunner, Result

from sagakit import CompensationContext, Engine, Saga, StepContext, open_store
from sagakit.cli import app

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))

APP_MODULE = """
from sagakit import Saga

saga = Saga("resumable", 1)


async def undo(ctx):
    return None


@saga.step(compensate=undo)
async def first(ctx):
    return "first done"


@saga.pivot()
async def second(ctx):
    return "second done"
"""


class Crash(BaseException):
    """The process dies mid-step: the engine cannot catch it."""


def crashing_saga() -> Saga:
    """The same definition as APP_MODULE's, but its first action kills the process."""
    saga = Saga("resumable", 1)

    async def undo(ctx: CompensationContext) -> None:
        return None

    async def first(ctx: StepContext) -> str:
        raise Crash

    async def second(ctx: StepContext) -> str:
        return "second done"

    return saga.add(first, compensate=undo).add(second, kind="pivot")


async def leave_running(url: str, saga_id: str) -> None:
    store = await open_store(url)
    try:
        saga = crashing_saga()
        with pytest.raises(Crash):
            await Engine(store, [saga]).run(saga, {"n": 1}, saga_id=saga_id)
    finally:
        await store.close()


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SAGAKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "resumable_app.py").write_text(APP_MODULE)
    return directory


def test_the_demo_succeeds_and_leaves_every_outcome_in_the_log(tmp_path: Path, db: str) -> None:
    done = run(["demo", "--db", db], cwd=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "every scenario ended as expected" in done.stdout
    statuses = [s["status"] for s in cli_json("list", "--db", db)]
    for status in ("completed", "compensated", "needs_attention"):
        assert status in statuses
    first = cli_json("list", "--db", db)[0]
    assert {"id", "name", "version", "status", "steps"} <= set(first)
    assert "events" not in first
    assert {"name", "kind", "status", "attempts"} <= set(first["steps"][0])


def test_list_filters_by_status_and_limits(db: str) -> None:
    assert cli("demo", "--db", db).exit_code == 0

    compensated = cli_json("list", "--db", db, "--status", "compensated")
    assert [s["status"] for s in compensated] == ["compensated", "compensated"]
    assert len(cli_json("list", "--db", db, "--limit", "1")) == 1
    table = cli("list", "--db", db)
    assert "needs_attention" in table.stdout and "place_order@1" in table.stdout


def test_show_prints_the_timeline_or_the_full_state_as_json(db: str) -> None:
    assert cli("demo", "--db", db).exit_code == 0
    (attention,) = cli_json("list", "--db", db, "--status", "needs_attention")

    state = cli_json("show", attention["id"], "--db", db)
    shown = cli("show", attention["id"], "--db", db)

    assert {"id", "name", "version", "status", "steps", "events"} <= set(state)
    assert state["status"] == "needs_attention"
    assert state["failed_compensations"] == ["create_shipment"]
    assert all({"type", "at"} <= set(event) for event in state["events"])
    assert state["events"][0]["type"] == "saga_started"
    assert shown.exit_code == 0
    assert "compensation_failed" in shown.stdout and "timeline" in shown.stdout


def test_the_db_defaults_to_the_environment(db: str) -> None:
    assert cli("demo", env={"SAGAKIT_DB": db}).exit_code == 0

    assert len(cli_json("list", "--db", db)) == 4


def test_an_unknown_id_is_one_line_on_stderr_and_exit_1(db: str) -> None:
    asyncio.run(_create_log(db))
    result = cli("show", "no-such-saga", "--db", db)

    assert result.exit_code == 1
    assert result.stderr == "error: no saga instance with id 'no-such-saga'\n"
    assert result.stdout == ""


async def _create_log(url: str) -> None:
    await (await open_store(url)).close()


def test_reading_a_missing_log_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "sagas.db"
    for command in (["list"], ["show", "some-id"]):
        result = cli(*command, "--db", f"sqlite:///{missing}")
        assert result.exit_code == 1
        assert result.stderr.startswith("error: no SQLite saga log at")
    assert not missing.parent.exists()


def test_an_unsupported_scheme_names_the_supported_ones(tmp_path: Path) -> None:
    done = run(["list", "--db", "foo://x"], cwd=tmp_path)

    assert done.returncode == 1
    assert done.stderr.startswith("error: unsupported database URL 'foo://x'")
    assert "sqlite://" in done.stderr and "memory://" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_a_newer_schema_is_refused_with_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sagakit_schema (version INTEGER, applied_at TEXT)")
        conn.execute("INSERT INTO sagakit_schema VALUES (999, 'later')")
    conn.close()

    result = cli("list", "--db", f"sqlite:///{path}")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "schema version 999" in result.stderr


def test_an_invalid_status_lists_the_valid_ones(db: str) -> None:
    result = cli("list", "--db", db, "--status", "done")

    assert result.exit_code == 2
    assert "invalid --status 'done'" in result.stderr
    assert "completed, compensated, needs_attention" in result.stderr


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_at_all:saga", "cannot import module 'no_such_module_at_all'"),
        ("sagakit:no_such_attribute", "module 'sagakit' has no attribute 'no_such_attribute'"),
        ("sagakit.orchestration._plan:CANCEL", "not a Saga"),
        ("json:dumps", "calling json:dumps failed: TypeError"),
        ("sagakit", "--app must look like module:attribute"),
    ],
)
def test_a_bad_app_exits_2_with_a_clear_message(db: str, reference: str, message: str) -> None:
    result = cli("worker", "--app", reference, "--db", db, "--once")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_worker_once_finishes_an_instance_a_crash_left_running(app_dir: Path, db: str) -> None:
    asyncio.run(leave_running(db, "left-running"))
    assert cli_json("show", "left-running", "--db", db)["status"] == "running"

    done = run(["worker", "--app", "resumable_app:saga", "--db", db, "--once"], cwd=app_dir)

    assert done.returncode == 0, done.stderr
    assert "left-running  resumable@1  completed" in done.stdout
    assert "resumed 1 saga(s)" in done.stdout
    state = cli_json("show", "left-running", "--db", db)
    assert state["status"] == "completed"
    assert [s["status"] for s in state["steps"]] == ["succeeded", "succeeded"]


def test_the_worker_logs_json_lines_with_the_saga_s_fields(app_dir: Path, db: str) -> None:
    asyncio.run(leave_running(db, "logged"))
    args = ["worker", "--app", "resumable_app:saga", "--db", db, "--once", "--log-format", "json"]
    done = run(args, cwd=app_dir)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    completed = [line for line in lines if line["message"] == "saga logged completed"]
    assert len(completed) == 1
    assert completed[0]["level"] == "info" and completed[0]["logger"] == "sagakit.orchestration"
    assert completed[0]["saga_id"] == "logged" and completed[0]["saga_name"] == "resumable"
    assert completed[0]["saga_version"] == 1


def test_worker_once_with_nothing_to_do(app_dir: Path, db: str) -> None:
    done = run(["worker", "--app", "resumable_app:saga", "--db", db, "--once"], cwd=app_dir)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "resumed 0 saga(s)"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_keeps_polling_and_stops_cleanly_on_a_signal(
    app_dir: Path, db: str, sig: signal.Signals
) -> None:
    asyncio.run(leave_running(db, "left-running"))
    args = ["worker", "--app", "resumable_app:saga", "--db", db, "--poll", "0.05"]
    args += ["--log-level", "debug"]  # a line per saga
    with subprocess.Popen(
        [SAGAKIT, *args], cwd=app_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as worker:
        try:
            assert worker.stdout is not None and worker.stderr is not None
            assert "started (resumable@1)" in worker.stdout.readline()
            finished = "sagakit.cli: left-running  resumable@1  completed"
            assert any(finished in line for line in _lines_until(worker.stderr, finished))
            os.kill(worker.pid, sig)
            out, err = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:  # a failed assertion must not leave a worker behind
                worker.kill()

    assert worker.returncode == 0, err
    assert out.strip() == "worker stopped"
    assert "Traceback" not in err


def _lines_until(stream: IO[str], wanted: str, most: int = 200) -> list[str]:
    """Lines of ``stream`` up to the first holding ``wanted`` (at most ``most``: a blocking
    read of another process's output, bounded by its end and by the test's timeout)."""
    lines: list[str] = []
    while len(lines) < most and (line := stream.readline()):
        lines.append(line)
        if wanted in line:
            break
    return lines


def test_an_operator_resolves_a_saga_that_needs_attention(tmp_path: Path, db: str) -> None:
    assert run(["demo", "--db", db], cwd=tmp_path).returncode == 0
    stuck = cli_json("list", "--db", db, "--status", "needs_attention")[0]["id"]
    done = cli_json("list", "--db", db, "--status", "completed")[0]["id"]

    resolved = cli(
        "resolve", stuck, "--note", "courier agreed to return it", "--by", "ops", "--db", db
    )
    refused = cli("retry", done, "--db", db)

    assert resolved.exit_code == 0, resolved.output
    state = cli_json("show", stuck, "--db", db)
    assert state["status"] == "compensated"
    assert state["resolution"] == {"by": "ops", "note": "courier agreed to return it"}
    assert state["events"][-1]["type"] == "operator_resolved"
    assert refused.exit_code == 1
    assert "cannot retry" in refused.stderr and "it is completed" in refused.stderr


def test_an_operator_cancels_a_running_saga(app_dir: Path, db: str) -> None:
    asyncio.run(leave_running(db, "to-cancel"))

    cancelled = cli("cancel", "to-cancel", "--reason", "duplicate order", "--by", "ops", "--db", db)
    finished = run(["worker", "--app", "resumable_app:saga", "--db", db, "--once"], cwd=app_dir)

    assert cancelled.exit_code == 0, cancelled.output
    assert "cancel sent to the worker driving it" in cancelled.stdout  # its call is unsettled
    assert finished.returncode == 0, finished.stderr
    state = cli_json("show", "to-cancel", "--db", db)
    assert state["status"] == "compensated"
    assert state["reason"] == "cancelled by ops: duplicate order"
    assert cli("cancel", "to-cancel", "--db", db).exit_code == 1


def test_help_names_every_saga_log_url_and_the_extra_it_needs() -> None:
    from sagakit.store import SCHEMES

    done = subprocess.run(
        [SAGAKIT, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=True,
    )
    for scheme in SCHEMES:
        assert f"{scheme}://" in done.stdout
    assert "sagakit[postgres]" in done.stdout
