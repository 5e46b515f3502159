"""``sagakit demo --flavor choreography`` on every broker, then ``list`` and ``show`` of it.

The demo runs through the installed entry point, as a user would run it; on a real broker
its four services are separate processes. The brokers are the machine's (the URLs of the
broker contract tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sagakit.cli import app

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
BROKERS = {
    "memory": "memory://",
    "redis": os.environ.get("SAGAKIT_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "nats": os.environ.get("SAGAKIT_NATS_URL", "nats://127.0.0.1:4222"),
    "rabbitmq": os.environ.get("SAGAKIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def demo(db: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SAGAKIT, "demo", "--flavor", "choreography", "--db", db, *options],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "COLUMNS": "140"},
    )


@pytest.mark.parametrize(
    "broker",
    [
        "memory",
        *(
            pytest.param(name, marks=getattr(pytest.mark, name))
            for name in BROKERS
            if name != "memory"
        ),
    ],
)
def test_the_demo_ends_every_order_as_expected(tmp_path: Path, broker: str) -> None:
    db = f"sqlite:///{tmp_path / 'sagas.db'}"

    done = demo(db, "--broker", BROKERS[broker])

    assert done.returncode == 0, done.stdout + done.stderr
    assert "every order ended as expected" in done.stdout
    sagas = cli_json("list", "--db", db)
    assert sorted(s["status"] for s in sagas) == ["compensated", "compensated", "completed"]
    assert {s["name"] for s in sagas} == {"order_choreography"}


def test_show_prints_the_rebuilt_timeline_of_a_compensated_order(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'sagas.db'}"
    assert demo(db).returncode == 0
    refunded = next(
        s
        for s in cli_json("list", "--db", db, "--status", "compensated")
        if s["id"].startswith("C-1002-")
    )

    state = cli_json("show", refunded["id"], "--db", db)
    shown = CliRunner().invoke(app, ["show", refunded["id"], "--db", db], env={"COLUMNS": "140"})

    events = [(e["type"], (e["data"] or {}).get("event")) for e in state["events"]]
    assert ("step_failed", "StockReservationFailed") in events
    assert ("compensation_succeeded", "PaymentRefunded") in events
    assert ("compensation_succeeded", "OrderCancelled") in events
    assert events[-1] == ("saga_compensated", None)
    assert {s["name"]: s["status"] for s in state["steps"]} == {
        "create_order": "compensated",
        "charge_payment": "compensated",
        "reserve_stock": "failed",
        "create_shipment": "skipped",
    }
    assert state["input"]["items"] == [{"sku": "GLOBE", "qty": 3}]
    assert shown.exit_code == 0
    assert "order_choreography@1" in shown.stdout and "compensated" in shown.stdout
    assert "PaymentRefunded from payments" in shown.stdout
    assert "StockReservationFailed: short of 1 GLOBE" in shown.stdout


def test_broker_is_refused_for_the_orchestrated_demo(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'sagas.db'}"
    result = CliRunner().invoke(app, ["demo", "--db", db, "--broker", BROKERS["redis"]])
    assert result.exit_code == 2
    assert "--broker is for --flavor choreography" in result.output


def test_an_unreachable_broker_is_one_error_line_naming_it_without_the_password(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'sagas.db'}"
    done = demo(db, "--broker", "redis://:secret@127.0.0.1:1/0")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the broker at redis://:***@127.0.0.1:1/0")
    assert "secret" not in done.stderr and "Traceback" not in done.stderr


def test_a_service_process_that_cannot_open_its_database_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    command = [sys.executable, "-W", "error", "-m", "sagakit.demo.processes", "payments"]
    done = subprocess.run(
        [*command, "--dir", str(blocker / "services"), "--broker", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
