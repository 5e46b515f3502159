"""What docs/operations.md and docs/demo.md claim, checked beyond "the scripts exit 0".

Each test runs a page's script as the generic harness does (``bash -eu`` in a copy of its
directory, the venv's ``bin`` first on PATH, no ``SAGAKIT_*`` variable set), then reads the
saga log it left, through the store and through the CLI, and the effects the shop wrote to
``effects.log``: who and why an operator action records, that a dry run changes nothing,
that a retried or skipped step has its effect once, and that the Python query API finds what
``sagakit list`` finds.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from doc_examples import EXAMPLES, load
from sagakit import Client, RecordType, SagaState, SagaStatus, open_store
from sagakit.demo import open_services
from sagakit.operations import count
from sagakit.store import Store

BIN = Path(sys.executable).parent
SAGAKIT = str(BIN / "sagakit")
OPERATOR = f"{getpass.getuser()}@{socket.gethostname()}"
"""Who an operator action is recorded as without ``--by``."""
MORNING = ["order-1", "order-2", "order-3", "order-4", "order-5", "order-6", "order-7", "refund-9"]
MAIL_ORDERS = ["order-4", "order-5", "order-6"]


# --------------------------------------------------------------------------- helpers


def copy_of(topic: str, tmp_path: Path) -> Path:
    """A fresh copy of ``docs/examples/<topic>``, as the harness makes it."""
    here = tmp_path / topic
    ignore = shutil.ignore_patterns("__pycache__", "*.db*", "effects.log")
    shutil.copytree(EXAMPLES / topic, here, ignore=ignore)
    return here


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SAGAKIT_")}
    return env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "100"}


def run(command: Sequence[str], cwd: Path, *, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(command), cwd=cwd, env=environment(), capture_output=True, text=True, timeout=110
    )
    if ok:
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr}"
    return done


def script(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a page's script; its stdout must be its ``.out``, where it has one."""
    done = run(["bash", "-eu", name], cwd)
    expected = (cwd / name).with_suffix(".out")
    if expected.exists():
        assert done.stdout == expected.read_text()
    return done


def section(name: str, part: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the lines of one section of a page's script (what the page shows), on the log
    in ``cwd``."""
    text = (cwd / name).read_text()
    body = text.split(f"# --8<-- [start:{part}]\n")[1].split(f"# --8<-- [end:{part}]")[0]
    return run(["bash", "-eu", "-c", f"export SAGAKIT_DB=sqlite:///shop.db\n{body}"], cwd)


def sagakit(cwd: Path, *args: str, db: str = "sqlite:///shop.db", ok: bool = True) -> str:
    return run([SAGAKIT, *args, "--db", db], cwd, ok=ok).stdout


def cli_json(cwd: Path, *args: str, db: str = "sqlite:///shop.db") -> Any:
    return json.loads(sagakit(cwd, *args, "--json", db=db))


def effects(cwd: Path) -> list[str]:
    return (cwd / "effects.log").read_text().splitlines()


async def opened(cwd: Path, name: str = "shop.db") -> Store:
    return await open_store(f"sqlite:///{cwd / name}", create=False)


async def states(cwd: Path, ids: Sequence[str] = MORNING) -> dict[str, SagaState]:
    store = await opened(cwd)
    try:
        client = Client(store)
        return {saga_id: await client.state(saga_id) for saga_id in ids}
    finally:
        await store.close()


def records_of(state: SagaState, kind: RecordType) -> list[dict[str, Any]]:
    """The payloads of the saga's records of one type, oldest first."""
    return [json.loads(r.data or "null") for r in state.records if r.type is kind]


def by_status(counts: list[dict[str, Any]]) -> dict[tuple[str, int, str], int]:
    return {(c["name"], c["version"], c["status"]): c["total"] for c in counts}


# --------------------------------------------------------------------------- the log


async def test_the_morning_leaves_the_log_the_page_describes(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    script("oncall_morning.sh", here)
    found = await states(here)
    assert {saga_id: state.status for saga_id, state in found.items()} == {
        "order-1": SagaStatus.COMPLETED,
        "order-2": SagaStatus.COMPENSATED,
        "order-3": SagaStatus.NEEDS_ATTENTION,
        "order-4": SagaStatus.NEEDS_ATTENTION,
        "order-5": SagaStatus.NEEDS_ATTENTION,
        "order-6": SagaStatus.NEEDS_ATTENTION,
        "order-7": SagaStatus.RUNNING,
        "refund-9": SagaStatus.RUNNING,
    }
    assert found["order-3"].failed_compensations == ["create_shipment"]
    for saga_id in MAIL_ORDERS:  # --max-attempts 3 capped the e-mail step that retries for ever
        assert found[saga_id].reason == (
            "step 'send_confirmation_email' failed 3 times after the pivot: "
            "mail server smtp.shop.example is unavailable"
        )
        assert found[saga_id].by_name["send_confirmation_email"].attempts == 3
    restocked = found["order-7"].by_name["reserve_stock"].waiting
    assert restocked is not None and restocked["signal"] == "restocked"
    assert restocked["until"] is not None and restocked["until"] > time.time() + 2.9 * 86400
    settled = found["refund-9"].by_name["record_settlement"].waiting
    assert settled is not None and settled["until"] is None
    lines = effects(here)
    assert len(lines) == len(set(lines))  # no effect twice
    assert "email order-1 via smtp key=order-1:send_confirmation_email:action" in lines
    assert not [line for line in lines if line.startswith(("email order-4", "email order-5"))]
    assert "cancel parcel-order-3" not in " ".join(lines)  # the courier had it


async def test_the_counts_are_the_cli_s_and_the_python_api_s(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    script("oncall_counts.sh", here)
    cli = by_status(cli_json(here, "list", "--count"))
    assert cli == {
        ("order", 1, "completed"): 1,
        ("order", 1, "compensated"): 1,
        ("order", 1, "needs_attention"): 4,
        ("order", 1, "running"): 1,
        ("refund", 1, "running"): 1,
    }
    store = await opened(here)
    try:
        python = await count(store)
    finally:
        await store.close()
    assert {(c.name, c.version, c.status.value): c.total for c in python} == cli
    # The .out is that table, with its total.
    out = (here / "oncall_counts.out").read_text().splitlines()
    assert out[-1].split() == ["total", "8"]


async def test_the_python_program_finds_what_sagakit_list_finds(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    script("oncall_morning.sh", here)
    program = load("operations/oncall_query.py")
    store = await opened(here)
    try:
        found = await program.on_call(store)
    finally:
        await store.close()
    listed = sagakit(here, "list", "--status", "needs_attention", "--name", "order", "--jsonl")
    cli_ids = [json.loads(line)["id"] for line in listed.splitlines()]
    assert program.ids(found.first) + program.ids(found.second) == cli_ids
    assert cli_ids == ["order-6", "order-5", "order-4", "order-3"]
    failing = cli_json(here, "list", "--count", "--failing-step", "send_confirmation_email")
    assert by_status(failing) == {
        (c.name, c.version, c.status.value): c.total for c in found.failing_mail
    }
    assert found.stuck == [] and cli_json(here, "list", "--count", "--stuck", "10m") == []
    waiting = sagakit(here, "list", "--waiting-for", "settled", "--jsonl").splitlines()
    assert [json.loads(line)["id"] for line in waiting] == program.ids(found.settling)


async def test_the_python_program_makes_the_log_the_cli_makes(
    tmp_path: Path, monkeypatch: Any
) -> None:
    by_cli = copy_of("operations", tmp_path / "cli")
    script("oncall_morning.sh", by_cli)
    by_python = copy_of("operations", tmp_path / "python")
    monkeypatch.chdir(by_python)
    monkeypatch.delenv("SAGAKIT_DB", raising=False)
    program = load("operations/oncall_query.py")
    await program.main()  # asserts what it shows
    await program.main()  # and again: placing and driving twice changes nothing
    assert cli_json(by_python, "list", "--count") == cli_json(by_cli, "list", "--count")
    assert sorted(effects(by_python)) == sorted(effects(by_cli))


# --------------------------------------------------------------------------- the fixes


async def test_retry_runs_the_failed_step_once_more_and_refuses_a_step_that_succeeded(
    tmp_path: Path,
) -> None:
    here = copy_of("operations", tmp_path)
    done = script("oncall_retry.sh", here)
    assert (
        done.stderr.count(
            "error: cannot retry saga 'order-6': step 'charge_payment' succeeded, and running "
            "again from it would repeat the pivot and what followed"
        )
        == 1
    )
    found = await states(here)
    assert records_of(found["order-4"], RecordType.OPERATOR_RETRY) == [
        {"by": OPERATOR, "note": "mail server is back"}
    ]
    [from_step] = [r for r in found["order-5"].records if r.type is RecordType.OPERATOR_RETRY]
    assert from_step.step == "send_confirmation_email"
    for saga_id in ("order-4", "order-5"):
        assert found[saga_id].status is SagaStatus.COMPLETED
        key = f"{saga_id}:send_confirmation_email:action"
        assert effects(here).count(f"email {saga_id} via smtp key={key}") == 1
        assert found[saga_id].by_name["send_confirmation_email"].attempts == 4
        assert effects(here).count(f"charge {saga_id} key={saga_id}:charge_payment:action") == 1
    assert found["order-6"].status is SagaStatus.NEEDS_ATTENTION  # refused: nothing recorded
    assert records_of(found["order-6"], RecordType.OPERATOR_RETRY) == []


async def test_skip_goes_on_with_the_result_the_operator_gave(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    script("oncall_skip.sh", here)
    state = (await states(here, ["order-6"]))["order-6"]
    assert state.status is SagaStatus.COMPLETED
    assert records_of(state, RecordType.OPERATOR_SKIPPED) == [
        {
            "by": OPERATOR,
            "note": "mailed the customer from the support desk",
            "result": {"sent_by": "support"},
        }
    ]
    assert state.results["send_confirmation_email"] == {"sent_by": "support"}
    assert not [line for line in effects(here) if line.startswith("email order-6")]


async def test_resolve_ends_the_saga_the_way_it_was_going_and_says_who_and_why(
    tmp_path: Path,
) -> None:
    here = copy_of("operations", tmp_path)
    script("oncall_morning.sh", here)
    before = (await states(here, ["order-3"]))["order-3"]
    assert before.status is SagaStatus.NEEDS_ATTENTION and before.resolution is None
    resolved = section("oncall_resolve.sh", "resolve", here)  # the command the page shows
    assert resolved.stdout == (here / "oncall_resolve.out").read_text()
    after = (await states(here, ["order-3"]))["order-3"]
    assert after.status is SagaStatus.COMPENSATED  # the way it was going: compensating
    note = {"by": OPERATOR, "note": "parcel recalled by phone, ticket 4411"}
    assert records_of(after, RecordType.OPERATOR_RESOLVED) == [note]
    assert after.records[:-1] == before.records  # one record more, and nothing else
    shown = cli_json(here, "show", "order-3")
    assert shown["resolution"] == note and shown["status"] == "compensated"
    listed = sagakit(here, "list", "--status", "compensated").splitlines()
    assert any(line.startswith("order-3 ") and "compensated, resolved" in line for line in listed)
    # The whole script, from a fresh copy, as the harness runs it.
    script("oncall_resolve.sh", copy_of("operations", tmp_path / "again"))


async def test_cancel_undoes_what_was_done_and_a_cancel_past_the_pivot_is_refused(
    tmp_path: Path,
) -> None:
    here = copy_of("operations", tmp_path)
    done = script("oncall_cancel.sh", here)
    assert "error: cannot cancel saga 'order-4': it has passed its pivot: only forward" in (
        done.stderr
    )
    found = await states(here, ["order-7", "order-4"])
    assert found["order-7"].status is SagaStatus.COMPENSATED
    assert records_of(found["order-7"], RecordType.CANCEL_REQUESTED) == [
        {"by": OPERATOR, "reason": "customer called to cancel"}
    ]
    assert found["order-7"].reason == f"cancelled by {OPERATOR}: customer called to cancel"
    assert effects(here).count("refund pay-order-7 key=order-7:charge_payment:compensation") == 1
    assert not [line for line in effects(here) if "res-order-7" in line or "ship order-7" in line]
    assert records_of(found["order-4"], RecordType.CANCEL_REQUESTED) == []


async def test_a_signal_wakes_the_step_that_waits_for_it(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    done = script("oncall_signal.sh", here)
    assert "error: cannot signal saga 'refund-9': it is completed" in done.stderr
    found = await states(here, ["refund-9", "order-7"])
    assert found["refund-9"].status is SagaStatus.COMPLETED
    assert found["refund-9"].results["record_settlement"] == {"settled_at": "2026-12-03"}
    assert found["order-7"].status is SagaStatus.COMPLETED
    assert [line for line in effects(here) if "order-7" in line and line.startswith("reserve")]


async def test_a_bulk_dry_run_changes_nothing_and_yes_acts_on_each(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    script("oncall_morning.sh", here)
    before = await states(here)
    dry = section("oncall_bulk.sh", "dry-run", here)  # the command the page shows
    assert dry.stdout.split() == ["order-6", "order-5", "order-4"]
    assert dry.stderr.strip().endswith(
        "would retry 3 saga(s); nothing done (dry run: add --yes to act)"
    )
    assert await states(here) == before  # not one record more
    # The page's script, from a fresh copy: the dry run, then --yes, then resolve --all.
    again = copy_of("operations", tmp_path / "again")
    done = script("oncall_bulk.sh", again)
    assert "retry: 3 of 3 saga(s) done, 0 refused" in done.stderr
    assert "resolve: 1 of 1 saga(s) done, 0 refused" in done.stderr
    found = await states(again)
    for saga_id in MAIL_ORDERS:
        assert found[saga_id].status is SagaStatus.COMPLETED
        assert records_of(found[saga_id], RecordType.OPERATOR_RETRY) == [
            {"by": OPERATOR, "note": "mail server is back"}
        ]
    assert found["order-3"].resolution == {"by": OPERATOR, "note": "parcels recalled by phone"}
    assert found["order-7"].status is SagaStatus.RUNNING  # --all looked at needs_attention only


# --------------------------------------------------------------------------- workers, deploys


async def test_max_attempts_sends_a_saga_back_to_attention_and_retry_grants_as_many_more(
    tmp_path: Path,
) -> None:
    here = copy_of("operations", tmp_path)
    done = script("oncall_workers.sh", here)
    assert done.stdout.splitlines()[-1] == (
        "order-4: saga order-4 needs attention: step 'send_confirmation_email' failed 6 times "
        "after the pivot: mail server smtp.shop.example is unavailable"
    )
    lines = [json.loads(line) for line in (here / "worker.jsonl").read_text().splitlines()]
    assert {line["level"] for line in lines} <= {"info", "warning", "error"}
    failed = [line for line in lines if line["level"] == "warning"]
    assert [line["attempt"] for line in failed] == [4, 5, 6]
    assert all(line["key"] == "order-4:send_confirmation_email:action" for line in failed)
    state = (await states(here, ["order-4"]))["order-4"]
    assert state.status is SagaStatus.NEEDS_ATTENTION
    assert state.by_name["send_confirmation_email"].attempts == 6


async def test_versions_and_moving_a_saga_to_a_newer_version(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    script("oncall_versions.sh", here)
    [v1, refund] = cli_json(here, "versions")
    assert (v1["name"], v1["version"], v1["in_flight"], v1["workers"]) == ("order", 1, 1, [])
    assert v1["statuses"]["needs_attention"] == 4  # not in flight, yet they need order@1
    assert (refund["name"], refund["in_flight"]) == ("refund", 1)
    upgraded = copy_of("operations", tmp_path / "upgrade")
    script("oncall_upgrade.sh", upgraded)
    state = (await states(upgraded, ["order-4"]))["order-4"]
    assert (state.version, state.status) == (2, SagaStatus.COMPLETED)
    [moved] = records_of(state, RecordType.OPERATOR_MIGRATED)
    assert moved["by"] == OPERATOR and moved["note"] == "order@1's mail relay is retired"
    assert (
        effects(upgraded).count("email order-4 via api key=order-4:send_confirmation_email:action")
        == 1
    )
    assert not [line for line in effects(upgraded) if line.startswith("email order-4 via smtp")]
    # A step done under order@1 is not made again under order@2.
    assert effects(upgraded).count("confirm order-4 key=order-4:confirm_order:action") == 1


def test_a_worker_gives_up_on_a_database_that_stays_away(tmp_path: Path) -> None:
    here = copy_of("operations", tmp_path)
    done = script("oncall_outage.sh", here)
    assert done.stdout.splitlines()[0] == "worker exited with status 1"
    schema = run(
        ["psql", "-At", "-h", "127.0.0.1", "-U", "postgres", "test", "-c",
         "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'docs_ops_%'"],
        here,
    )  # fmt: skip
    assert schema.stdout.strip() == "0"  # the script dropped its schema


# --------------------------------------------------------------------------- the demo


async def test_the_demo_leaves_one_saga_that_needs_attention(tmp_path: Path) -> None:
    here = copy_of("demo", tmp_path)
    run([SAGAKIT, "demo", "--db", "sqlite:///demo.db"], here)
    attention = cli_json(
        here, "list", "--count", "--status", "needs_attention", db="sqlite:///demo.db"
    )
    assert [(c["name"], c["total"]) for c in attention] == [("place_order", 1)]
    [saga] = cli_json(here, "list", "--input", "order_id=A-1003", db="sqlite:///demo.db")
    assert saga["failed_compensations"] == ["create_shipment"]
    # The page's script runs the demo twice more: fresh ids each time, no clash.
    script("demo_orchestrated.sh", here)
    counts = by_status(cli_json(here, "list", "--count", db="sqlite:///demo.db"))
    assert counts == {
        ("place_order", 1, "completed"): 3,
        ("place_order", 1, "compensated"): 6,
        ("place_order", 1, "needs_attention"): 3,
    }


async def test_a_worker_of_its_own_drives_the_orders_another_process_started(
    tmp_path: Path,
) -> None:
    here = copy_of("demo", tmp_path)
    done = script("demo_own_worker.sh", here)
    assert done.stdout.splitlines()[-1] == "resumed 2 saga(s): 2 completed"
    store = await opened(here, "orders.db")
    try:
        client = Client(store)
        finished = {saga_id: await client.state(saga_id) for saga_id in ("B-2001", "B-2002")}
    finally:
        await store.close()
    with open_services(here / "services") as services:  # the services' own records
        for saga_id, state in finished.items():
            assert state.status is SagaStatus.COMPLETED
            assert services.orders.status(saga_id) == "confirmed"
            assert services.payments.net_charged(saga_id) == 4990
            assert len(services.email.sent(saga_id)) == 1
            assert services.undone(saga_id) is False  # its effects stand: it completed
            assert services.payments.effects_applied(f"{saga_id}:charge_payment:action") == 1
            assert services.inventory.effects_applied(f"{saga_id}:reserve_inventory:action") == 1
            assert services.email.effects_applied(f"{saga_id}:send_confirmation_email:action") == 1


def test_the_choreography_runs_as_tasks_and_as_processes_over_redis(tmp_path: Path) -> None:
    here = copy_of("demo", tmp_path)
    script("demo_choreography.sh", here)
    counts = by_status(cli_json(here, "list", "--count", db="sqlite:///demo.db"))
    assert counts == {
        ("order_choreography", 1, "completed"): 2,
        ("order_choreography", 1, "compensated"): 4,
    }
    done = script("demo_service_process.sh", here)
    assert (here / "services" / "payments.db").is_file()
    [stream] = re.findall(r"payments: listening on (orders-docs-\d+-\d+)", done.stderr)
    assert "payments: stopped: handled 0 event(s)" in done.stderr  # SIGTERM: a clean stop
    left = run(["redis-cli", "-h", "127.0.0.1", "EXISTS", f"sagakit:{stream}"], here)
    assert left.stdout.strip() == "0"  # the script deleted its stream
