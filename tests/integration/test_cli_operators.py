"""``sagakit retry --from``, ``skip`` and ``signal`` against real saga logs.

The saga is an app module, as an operator's workers load it: the same file drives it in this
process and in ``sagakit worker --once``. Its services are "down" while a file named after
the step is in the directory its input names, so a test mends one by deleting a file.
"""

from __future__ import annotations

import asyncio
import importlib.util
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
from sagakit.log import Instance, Message, Record

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))

APP_MODULE = """
from pathlib import Path

from sagakit import CompensationImpossible, Retry, Saga

saga = Saga("shop", 1)
TWICE = Retry(attempts=2, backoff=0, jitter=0)


def is_down(ctx, service):
    return (Path(ctx.input["down"]) / service).exists()


async def refund(ctx):
    if is_down(ctx, "refund"):
        raise CompensationImpossible("the card was closed")


@saga.step(compensate=refund)
async def charge(ctx):
    return {"payment": "p-1"}


@saga.pivot()
async def ship(ctx):
    if is_down(ctx, "ship"):
        raise RuntimeError("the courier refused")
    return {"shipment": "s-1"}


@saga.retriable(retry=TWICE)
async def email(ctx):
    if is_down(ctx, "email"):
        raise RuntimeError("the mail server is down")
    return {"message": "m-1"}


@saga.retriable(retry=TWICE)
async def confirm(ctx):
    approval = await ctx.wait_for("approved") if ctx.input.get("approval") else None
    return {"email": ctx.results["email"], "approval": approval}
"""


@dataclass
class Shop:
    """The app on disk, its saga loaded here, and a saga log."""

    url: str
    directory: Path
    saga: Saga

    def down(self, saga_id: str, *services: str) -> Path:
        """The directory saga ``saga_id`` reads its services' state from, with ``services``
        down."""
        where = self.directory / "down" / saga_id
        where.mkdir(parents=True, exist_ok=True)
        for service in services:
            (where / service).touch()
        return where

    def start(self, saga_id: str, *down: str, **input: Any) -> SagaResult:
        """Start an instance and drive it as far as it goes, as a worker would."""
        return asyncio.run(self._start(saga_id, {"down": str(self.down(saga_id, *down)), **input}))

    async def _start(self, saga_id: str, input: Any) -> SagaResult:
        store = await open_store(self.url)
        try:
            await Client(store).start(self.saga, input, saga_id=saga_id)
            return await Engine(store, [self.saga], hand_back=True).resume_saga(saga_id)
        finally:
            await store.close()

    def drive(self, saga_id: str) -> SagaResult:
        return asyncio.run(self._drive(saga_id))

    async def _drive(self, saga_id: str) -> SagaResult:
        store = await open_store(self.url)
        try:
            return await Engine(store, [self.saga], hand_back=True).resume_saga(saga_id)
        finally:
            await store.close()

    def stored(self, *saga_ids: str) -> list[tuple[Instance, list[Record], list[Message]]]:
        """Each instance's row, log and inbox, as they are now."""
        return asyncio.run(self._stored(saga_ids))

    async def _stored(
        self, saga_ids: tuple[str, ...]
    ) -> list[tuple[Instance, list[Record], list[Message]]]:
        store = await open_store(self.url)
        try:
            found = []
            for saga_id in saga_ids:
                loaded = await store.load(saga_id)
                assert loaded is not None
                found.append((loaded.instance, loaded.records, await store.messages(saga_id)))
            return found
        finally:
            await store.close()


def make_shop(url: str, directory: Path) -> Shop:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "shop_app.py"
    path.write_text(APP_MODULE)
    spec = importlib.util.spec_from_file_location(f"shop_app_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saga: Saga = module.saga
    return Shop(url, directory, saga)


@pytest.fixture
def shop(saga_logs: SagaLogs, tmp_path: Path) -> Shop:
    """The shop on each durable store (SQLite, PostgreSQL)."""
    return make_shop(saga_logs.new(tmp_path / "log"), tmp_path / "app")


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def show(shop: Shop, saga_id: str) -> Any:
    shown = cli("show", saga_id, "--db", shop.url, "--json")
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)


def step_of(state: Any, name: str) -> Any:
    (step,) = [s for s in state["steps"] if s["name"] == name]
    return step


# --------------------------------------------------------------------------- what works


def test_retry_from_the_failed_step_completes_the_saga(shop: Shop) -> None:
    assert shop.start("o-1", "email").status.value == "needs_attention"
    (shop.down("o-1") / "email").unlink()  # the mail server is back

    done = cli("retry", "o-1", "--from", "email", "--note", "smtp back", "--by", "ops", *_db(shop))
    retried = show(shop, "o-1")
    result = shop.drive("o-1")

    assert done.exit_code == 0, done.output
    assert done.stdout == "o-1: retry from step 'email' recorded; a worker will carry it on\n"
    assert retried["status"] == "running"
    assert retried["events"][-1] | {"at": 0} == {
        "seq": len(retried["events"]) - 1,
        "type": "operator_retry",
        "at": 0,
        "step": "email",
        "attempt": 0,
        "data": {"by": "ops", "note": "smtp back"},
    }
    assert result.status.value == "completed"
    finished = show(shop, "o-1")
    assert finished["status"] == "completed" and finished["reason"] is None
    assert step_of(finished, "email")["attempts"] == 3


def test_skip_marks_the_failed_step_done_and_a_worker_goes_on_with_its_result(
    shop: Shop,
) -> None:
    assert shop.start("o-1", "email").status.value == "needs_attention"  # and stays down

    done = cli(
        *("skip", "o-1", "email", "--result", '{"message": "by-hand"}'),
        *("--note", "sent from Outlook", "--by", "ops", *_db(shop)),
    )
    skipped = show(shop, "o-1")
    worker = subprocess.run(
        [SAGAKIT, "worker", "--app", "shop_app:saga", "--once", *_db(shop)],
        cwd=shop.directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.exit_code == 0, done.output
    assert done.stdout == "o-1: step 'email' marked done; a worker carries the saga on\n"
    assert skipped["status"] == "running"
    assert skipped["events"][-1]["type"] == "operator_skipped"
    assert skipped["events"][-1]["data"] == {
        "by": "ops",
        "note": "sent from Outlook",
        "result": {"message": "by-hand"},
    }
    email = step_of(skipped, "email")
    assert email["status"] == "succeeded" and email["result"] == {"message": "by-hand"}
    assert email["skipped_by"] == {"by": "ops", "note": "sent from Outlook"}
    assert worker.returncode == 0, worker.stderr
    finished = show(shop, "o-1")
    assert finished["status"] == "completed"
    assert step_of(finished, "email")["attempts"] == 2  # never called again
    assert step_of(finished, "confirm")["result"] == {
        "email": {"message": "by-hand"},
        "approval": None,
    }


def test_signal_wakes_a_step_waiting_for_it(shop: Shop) -> None:
    assert shop.start("o-1", approval=True).status.value == "running"
    assert step_of(show(shop, "o-1"), "confirm")["status"] == "waiting"

    done = cli("signal", "o-1", "approved", "--payload", '{"ok": true}', *_db(shop))
    result = shop.drive("o-1")

    assert done.exit_code == 0, done.output
    assert done.stdout == "o-1: 'approved' sent\n"
    assert result.status.value == "completed"
    finished = show(shop, "o-1")
    received = [e for e in finished["events"] if e["type"] == "message_received"]
    assert [e["data"]["name"] for e in received] == ["approved"]
    assert step_of(finished, "confirm")["result"]["approval"] == {"ok": True}


# --------------------------------------------------------------------------- what is refused


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """Sagas in each state an operator may find (on SQLite): ``stuck`` needs attention going
    forward, ``undoing`` needs attention compensating, ``done`` completed, ``waiting`` waits
    for a message. Shared by the refusals below, which change nothing."""
    directory = tmp_path_factory.mktemp("refusing")
    shop = make_shop(f"sqlite:///{directory / 'sagas.db'}", directory / "app")
    assert shop.start("stuck", "email").status.value == "needs_attention"
    assert shop.start("undoing", "ship", "refund").status.value == "needs_attention"
    assert shop.start("done").status.value == "completed"
    assert shop.start("waiting", approval=True).status.value == "running"
    return shop


SAGAS = ("stuck", "undoing", "done", "waiting")


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (
            "retry stuck --from charge",
            "cannot retry saga 'stuck': step 'charge' succeeded, and running again from it "
            "would repeat the pivot and what followed",
        ),
        (
            "retry stuck --from ship",
            "cannot retry saga 'stuck': step 'ship' succeeded, and a pivot step never runs twice",
        ),
        (
            "retry stuck --from nope",
            "cannot retry saga 'stuck': step 'nope' is not one of its steps "
            "(charge, ship, email, confirm)",
        ),
        (
            "retry undoing --from ship",
            "cannot retry saga 'undoing': step 'ship' cannot be retried from: the saga was "
            "compensating (retry it without a step)",
        ),
        (
            "retry done --from email",
            "cannot retry saga 'done': it is completed, not needs_attention",
        ),
        ("retry nosuch --from email", "no saga instance with id 'nosuch'"),
        (
            "skip stuck charge",
            "cannot skip saga 'stuck': step 'charge' did not fail (it is succeeded)",
        ),
        (
            "skip undoing ship",
            "cannot skip saga 'undoing': step 'ship' cannot be skipped while the saga compensates: "
            "only steps going forward can",
        ),
        (
            "skip done email",
            "cannot skip saga 'done': step 'email' cannot be skipped: the saga is completed",
        ),
        (
            "skip waiting confirm",
            "cannot skip saga 'waiting': step 'confirm' did not fail (it is waiting)",
        ),
        ("skip nosuch email", "no saga instance with id 'nosuch'"),
        (
            "skip stuck email --result {bad",
            "--result is not JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (
            "skip stuck email --result NaN",
            "saga 'stuck', step 'email': the skipped step's result is not JSON-serialisable: "
            "Out of range float values are not JSON compliant",
        ),
        ("signal nosuch approved", "no saga instance with id 'nosuch'"),
        (
            "signal waiting approved --payload {bad",
            "--payload is not JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (
            "signal done approved",
            "cannot signal saga 'done': it is completed, so nothing would read the 'approved' "
            "message",
        ),
        (
            "signal stuck approved",
            "cannot signal saga 'stuck': it is needs_attention, so nothing would read the "
            "'approved' message",
        ),
    ],
)
def test_a_refused_action_is_one_line_exit_1_and_changes_nothing(
    refusing: Shop, command: str, error: str
) -> None:
    args = command.split()
    if args[0] == "skip" and "--result" not in args:
        args += ["--result", "null"]
    if args[0] == "skip":
        args += ["--note", "done by hand"]
    before = refusing.stored(*SAGAS)

    result = cli(*args, *_db(refusing))

    assert (result.exit_code, result.stdout) == (1, ""), result.output
    assert result.stderr == f"error: {error}\n"
    assert refusing.stored(*SAGAS) == before


def _db(shop: Shop) -> tuple[str, str]:
    return ("--db", shop.url)
