"""What ``sagakit list`` and ``show`` print for the sagas an operator investigates: one
waiting for a message, one with times no calendar can show, one whose stored text carries
terminal control sequences. At 80 columns, not a terminal, never a traceback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sagakit import Engine, Saga, StepContext, open_store
from sagakit.cli import app
from sagakit.log import Instance, Record, RecordType, SagaStatus
from servers import POSTGRES

NARROW = {"COLUMNS": "80", "TERM": "dumb"}
HOSTILE = "\x1b[2J\x1b]0;pwned\x07boom"
"""Clears the screen and retitles the window if it reaches a terminal as it is."""


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=NARROW)


def shown_cleanly(result: Result) -> str:
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "Traceback" not in result.output
    return result.output


def waiting_saga() -> Saga:
    saga = Saga("approval", 1)

    async def ask(ctx: StepContext) -> object:
        return await ctx.wait_for("approved", timeout=3600)

    async def undo(ctx: object) -> None:
        return None

    return saga.add(ask, compensate=undo)


async def park(url: str) -> None:
    store = await open_store(url)
    try:
        saga = waiting_saga()
        result = await Engine(store, [saga], hand_back=True).run(saga, {}, saga_id="w-1")
        assert result.status is SagaStatus.RUNNING
    finally:
        await store.close()


def test_a_waiting_saga_lists_and_shows(tmp_path: object) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(park(db))
    listed = shown_cleanly(cli("list", "--db", db))
    assert "running" in listed and "w-1" in listed
    shown = shown_cleanly(cli("show", "w-1", "--db", db))
    assert "waiting" in shown and "step_waiting" in shown


async def foreign(url: str) -> None:
    """A log as a foreign producer's events could leave it: absurd times, hostile text."""
    store = await open_store(url)
    try:
        started = json.dumps(
            {"name": "foreign", "version": 1, "input": None, "deadline_at": None,
             "steps": [{"name": "pay", "kind": "compensatable"}]}
        )  # fmt: skip
        failure = json.dumps({"error": {"type": "Refused", "message": HOSTILE}, "retry_at": None})
        attention = json.dumps({"reason": HOSTILE, "failed": []})
        records = [
            Record(0, RecordType.SAGA_STARTED, 1e300, data=started),
            Record(1, RecordType.STEP_STARTED, -1e15, "pay", 1),
            Record(2, RecordType.STEP_FAILED, 1e300, "pay", 1, failure),
            Record(3, RecordType.SAGA_NEEDS_ATTENTION, 1e300, data=attention),
        ]
        row = Instance("f-1", "foreign", 1, SagaStatus.NEEDS_ATTENTION, 1e300, 1e300)
        assert await store.create(row, records)
    finally:
        await store.close()


def test_times_out_of_any_calendar_render_as_numbers(tmp_path: object) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(foreign(db))
    listed = shown_cleanly(cli("list", "--db", db))
    assert "needs_attention" in listed and "1e+300" in listed
    shown = shown_cleanly(cli("show", "f-1", "--db", db))
    assert "1e+300" in shown and "-1000000000000000.0" in shown


def test_control_characters_in_stored_text_are_shown_escaped(tmp_path: object) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(foreign(db))
    shown = shown_cleanly(cli("show", "f-1", "--db", db))
    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown


def test_the_version_is_one_line() -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.output.startswith("sagakit ") and result.output.count("\n") == 1


@pytest.mark.postgres
def test_migrate_never_prints_the_password() -> None:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = POSTGRES.replace("postgres@", "postgres:s3cretPW@", 1) + f"?schema={schema}"
    try:
        result = cli("migrate", "--db", url)
        assert result.exit_code == 0, result.output
        assert "s3cretPW" not in result.output and "***" in result.output
    finally:
        asyncio.run(_drop(schema))


async def _drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def crowd(url: str) -> None:
    """Sagas with long ids and names, half of them needing attention."""
    store = await open_store(url)
    try:
        for i in range(6):
            saga_id = f"order-{i:04d}-{uuid.uuid4().hex}"
            started = json.dumps(
                {"name": "a_rather_long_saga_name_for_80_columns", "version": 1, "input": None,
                 "deadline_at": None, "steps": [{"name": "pay", "kind": "compensatable"}]}
            )  # fmt: skip
            end = (RecordType.SAGA_NEEDS_ATTENTION, SagaStatus.NEEDS_ATTENTION)
            if i % 2:
                end = (RecordType.SAGA_COMPLETED, SagaStatus.COMPLETED)
            data = json.dumps({"reason": "refund failed", "failed": []}) if i % 2 == 0 else None
            records = [Record(0, RecordType.SAGA_STARTED, 1.0e9, data=started)]
            records.append(Record(1, end[0], 1.0e9, data=data))
            name = "a_rather_long_saga_name_for_80_columns"
            assert await store.create(Instance(saga_id, name, 1, end[1], 1.0e9, 1.0e9), records)
    finally:
        await store.close()


def test_a_piped_list_keeps_every_cell_whole_at_80_columns(tmp_path: object) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(crowd(db))
    listed = shown_cleanly(cli("list", "--db", db))
    lines = listed.splitlines()
    assert sum("needs_attention" in line for line in lines) == 3  # `| grep -c` counts right
    assert sum(" completed " in f"{line} " for line in lines) == 3
    assert all("…" not in line for line in lines)
    assert all(line.split()[0].startswith("order-00") for line in lines[1:])
    assert all(len(line.split()[0]) == len("order-0000-") + 32 for line in lines[1:])


@pytest.mark.parametrize("tables", ["CREATE TABLE orders (id INTEGER PRIMARY KEY)", None])
def test_reading_commands_leave_a_database_that_is_not_a_saga_log_as_it_was(
    tmp_path: Path, tables: str | None
) -> None:
    """An application's own SQLite file, or an empty one, is refused; not a byte changes."""
    path = tmp_path / "app.db"
    if tables is None:
        path.touch()
    else:
        with sqlite3.connect(path) as conn:
            conn.execute(tables)
    before = path.read_bytes()
    for command in (["list"], ["show", "x-1"], ["retry", "x-1"]):
        result = cli(*command, "--db", f"sqlite:///{path}")
        assert result.exit_code == 1, result.output
        assert "is not a sagakit saga log" in result.output
        assert "Traceback" not in result.output
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal, no -shm


def test_a_port_that_is_not_a_number_is_one_line() -> None:
    result = cli("list", "--db", "postgresql://me:s3cretPW@127.0.0.1:abc/db")
    assert result.exit_code == 1
    assert result.output.startswith("error: invalid port") and result.output.count("\n") == 1
    assert "s3cretPW" not in result.output


def test_show_tells_who_resolved_a_saga_by_hand_and_why(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(foreign(db))
    resolved = cli("resolve", "f-1", "--note", "refunded by phone", "--by", "ops", "--db", db)
    assert resolved.exit_code == 0, resolved.output
    shown = shown_cleanly(cli("show", "f-1", "--db", db))
    assert "resolved by an operator: ops: refunded by phone" in shown
    lines = shown.splitlines()
    at = next(i for i, line in enumerate(lines) if "operator_resolved" in line)
    wrapped = " ".join(" ".join(lines[at : at + 2]).split())  # the detail may wrap at 80
    assert "by ops: refunded by phone" in wrapped


def test_show_tells_what_a_waiting_step_waits_for(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(park(db))
    waiting_row = next(
        line for line in shown_cleanly(cli("show", "w-1", "--db", db)).splitlines()
        if "step_waiting" in line
    )  # fmt: skip
    assert "action waits for 'approved' until" in waiting_row


SECRET = "s3cretPW"
UNREACHABLE_PG = f"postgresql://postgres:{SECRET}@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "command",
    [
        ["list", "--db", UNREACHABLE_PG],
        ["show", "x-1", "--db", UNREACHABLE_PG],
        ["retry", "x-1", "--db", UNREACHABLE_PG],
        ["resolve", "x-1", "--note", "n", "--db", UNREACHABLE_PG],
        ["cancel", "x-1", "--db", UNREACHABLE_PG],
        ["migrate", "--db", UNREACHABLE_PG],
        ["list", "--count", "--stuck", "1h", "--db", UNREACHABLE_PG],
        ["show", "x-1", "--follow", "--db", UNREACHABLE_PG],
        ["skip", "x-1", "pay", "--result", "null", "--note", "n", "--db", UNREACHABLE_PG],
        ["signal", "x-1", "approved", "--db", UNREACHABLE_PG],
        ["retry", "--all", "--yes", "--db", UNREACHABLE_PG],
        ["resolve", "--all", "--note", "n", "--db", UNREACHABLE_PG],
        ["worker", "--once", "--app", "sagakit.demo:from_environment", "--db", UNREACHABLE_PG],
        ["list", "--db", f"mysql://root:{SECRET}@db/x"],
        ["list", "--db", f"postgresql://me:{SECRET}@127.0.0.1:abc/db"],
        ["demo", "--db", "memory://", "--flavor", "choreography", "--broker",
         f"redis://:{SECRET}@127.0.0.1:1/0"],
    ],
)  # fmt: skip
def test_no_error_path_prints_a_password(command: list[str]) -> None:
    result = cli(*command)
    assert result.exit_code != 0
    assert "error:" in result.output and "Traceback" not in result.output
    assert SECRET not in result.output


def test_list_marks_a_saga_an_operator_resolved(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(foreign(db))
    assert cli("resolve", "f-1", "--note", "refunded by phone", "--db", db).exit_code == 0
    listed = shown_cleanly(cli("list", "--db", db))
    row = next(line for line in listed.splitlines() if line.startswith("f-1"))
    assert "completed, resolved" in row


async def one_of_each_status(url: str) -> None:
    """A saga in every status, as its log would leave it (the row's status is the fold's)."""
    steps = [{"name": "pay", "kind": "compensatable"}, {"name": "ship", "kind": "pivot"}]
    started = json.dumps(
        {"name": "every", "version": 1, "input": {}, "deadline_at": None, "steps": steps}
    )
    failed = json.dumps({"error": {"type": "Refused", "message": "no"}, "retry_at": None})
    tails: dict[SagaStatus, list[tuple[RecordType, str | None, str | None]]] = {
        SagaStatus.PENDING: [],
        SagaStatus.RUNNING: [(RecordType.STEP_STARTED, "pay", None)],
        SagaStatus.COMPENSATING: [
            (RecordType.STEP_STARTED, "pay", None),
            (RecordType.STEP_SUCCEEDED, "pay", "1"),
            (RecordType.STEP_STARTED, "ship", None),
            (RecordType.STEP_FAILED, "ship", failed),
            (RecordType.SAGA_COMPENSATING, None, json.dumps({"reason": "ship failed"})),
        ],
        SagaStatus.COMPLETED: [
            (RecordType.STEP_STARTED, "pay", None),
            (RecordType.STEP_SUCCEEDED, "pay", "1"),
            (RecordType.STEP_STARTED, "ship", None),
            (RecordType.STEP_SUCCEEDED, "ship", "2"),
            (RecordType.SAGA_COMPLETED, None, None),
        ],
        SagaStatus.COMPENSATED: [
            (RecordType.STEP_STARTED, "pay", None),
            (RecordType.STEP_FAILED, "pay", failed),
            (RecordType.SAGA_COMPENSATING, None, json.dumps({"reason": "pay failed"})),
            (RecordType.SAGA_COMPENSATED, None, None),
        ],
        SagaStatus.NEEDS_ATTENTION: [
            (RecordType.STEP_STARTED, "pay", None),
            (RecordType.STEP_FAILED, "pay", failed),
            (RecordType.SAGA_NEEDS_ATTENTION, None, json.dumps({"reason": "no", "failed": []})),
        ],
    }
    store = await open_store(url)
    try:
        for n, (status, tail) in enumerate(tails.items()):
            at = 1_700_000_000.0 + n
            records = [Record(0, RecordType.SAGA_STARTED, at, data=started)]
            for kind, step, data in tail:
                attempt = 1 if step is not None else 0
                records.append(Record(len(records), kind, at, step, attempt, data))
            instance = Instance(f"s-{status.value}", "every", 1, status, at, at)
            assert await store.create(instance, records)
    finally:
        await store.close()


def test_every_status_lists_whole_and_shows_at_80_columns_piped(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/sagas.db"
    asyncio.run(one_of_each_status(db))
    listed = shown_cleanly(cli("list", "--db", db)).splitlines()
    for status in SagaStatus:
        row = next(line for line in listed if line.startswith(f"s-{status.value} "))
        assert f" {status.value} " in f"{row} "
        shown = shown_cleanly(cli("show", f"s-{status.value}", "--db", db))
        assert status.value in shown
    assert sum("needs_attention" in line for line in listed) == 1
