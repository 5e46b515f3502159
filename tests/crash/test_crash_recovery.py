"""The crash suite: SIGKILL the order saga at every write-ahead point, restart, and audit.

For each scenario, a clean run of ``child.py`` first lists every kill point the protocol
passes (each durable commit, and each moment between a call returning and its outcome being
committed). Then, for every point, a fresh child is started on fresh files and SIGKILLs
itself there; a second child resumes from the files alone, as a restarted process would.
The evidence that recovery is right comes from the *services'* databases, not from the saga
log that is under test: each effect applied at most once per idempotency key, the effects a
clean run applies (no more, no fewer), and, for a compensated saga, every effect undone.

The kill points are counted and printed, and compared with a count made by hand from the
protocol, so a broken counter cannot make the suite pass by exercising nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from saga_logs import SagaLogs
from sagakit import Engine, SagaState, SagaStatus, idempotency_key, open_store
from sagakit.demo import OrderServices, open_services, order_input
from sagakit.demo._saga import SERVICES_ENV
from sagakit.log import RecordType

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
SUBPROCESS_TIMEOUT = 60.0
"""Generous: a child normally finishes in well under a second, but CI machines stall."""
POINTS = 1000
"""Loyalty points every customer starts with."""

FORWARD = (
    ("charge_payment", "payments"),
    ("debit_loyalty_points", "loyalty"),
    ("reserve_inventory", "inventory"),
    ("create_shipment", "shipping"),
    ("confirm_order", "orders"),
    ("send_confirmation_email", "email"),
)
"""The order saga's steps, in order, with the service each one calls."""
COMPENSATED_STEPS = ("charge_payment", "debit_loyalty_points", "reserve_inventory")
"""What the partial-stock order has to undo: everything before (and including) the reserve."""

Ledgers = dict[str, tuple[int, int]]
"""Idempotency key -> (calls, effects applied), across all six services."""
Point = dict[str, str]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One order, how it must end, and the kill points the protocol gives it by hand count."""

    name: str
    order: dict[str, Any]
    expect: SagaStatus
    email_fail_first: int
    commits: int
    """Hand count of commits: one per call's ``*_started`` (the outcome rides along with the
    next one), one for a failure before its back-off sleep, one for the terminal record."""
    calls: int
    verify: Callable[[OrderServices, dict[str, Any], str], None]

    @property
    def saga_id(self) -> str:
        return f"crash-{self.name}"


def verify_completed(services: OrderServices, order: dict[str, Any], saga_id: str) -> None:
    """Every forward effect exactly once, nothing compensated."""
    order_id = order["order_id"]
    for step, service in FORWARD:
        key = idempotency_key(saga_id, step)
        assert getattr(services, service).effects_applied(key) == 1, key
        compensation = idempotency_key(saga_id, step, "compensation")
        assert getattr(services, service).calls(compensation) == 0, compensation
    payments = services.payments.payments(order_id)
    assert len(payments) == 1
    assert services.payments.net_charged(order_id) == order["total_cents"]
    assert len(services.loyalty.debits(order_id)) == 1
    assert services.loyalty.points(order["customer_id"]) == POINTS - order["loyalty_points"]
    assert services.inventory.held(order_id) == {"LAMP": 1}
    assert [s["status"] for s in services.shipping.shipments(order_id)] == ["created"]
    assert services.orders.status(order_id) == "confirmed"
    assert len(services.email.sent(order_id)) == 1


def verify_compensated(services: OrderServices, order: dict[str, Any], saga_id: str) -> None:
    """Every effect applied once and undone once; nothing after the failed reserve ran."""
    order_id = order["order_id"]
    for step, service in FORWARD:
        action = idempotency_key(saga_id, step)
        compensation = idempotency_key(saga_id, step, "compensation")
        owner = getattr(services, service)
        if step in COMPENSATED_STEPS:
            assert owner.effects_applied(action) == 1, action
            assert owner.effects_applied(compensation) == 1, compensation
        else:
            assert owner.calls(action) == 0, action
    assert services.undone(order_id), services.outstanding(order_id)
    [payment] = services.payments.payments(order_id)
    assert payment["refund_id"] is not None
    assert services.payments.net_charged(order_id) == 0
    [debit] = services.loyalty.debits(order_id)
    assert debit["credited"]
    assert debit["restored"] == order["loyalty_points"]
    assert services.loyalty.points(order["customer_id"]) == POINTS
    assert services.inventory.held(order_id) == {}
    assert services.inventory.reserved("GLOBE") == 0
    assert services.inventory.available("GLOBE") == 2
    assert services.shipping.shipments(order_id) == []
    assert services.orders.status(order_id) is None
    assert services.email.sent(order_id) == []


SCENARIOS = (
    Scenario(
        "happy",
        order_input("C-1", "ada"),
        SagaStatus.COMPLETED,
        email_fail_first=1,
        commits=6 + 1 + 1 + 1,  # 6 steps' starts, the e-mail's failure, its retry, completed
        calls=6 + 1,  # 6 actions, one e-mail retry
        verify=verify_completed,
    ),
    Scenario(
        "partial-stock",
        order_input("C-2", "bob", items=[{"sku": "GLOBE", "qty": 3}]),
        SagaStatus.COMPENSATED,
        email_fail_first=0,
        commits=3 + 3 + 1,  # 3 actions' starts, 3 compensations' starts, compensated
        calls=3 + 3,
        verify=verify_compensated,
    ),
)


# -- the world around one run -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    """The files of one run: its saga log and its services' databases."""

    root: Path
    db: str
    """A fresh saga log (a SQLite file under ``root``, or a PostgreSQL schema)."""

    @property
    def services(self) -> Path:
        return self.root / "services"

    def seed(self) -> None:
        """Stock and points the scenarios need; 2 globes so that an order for 3 falls short."""
        with open_services(self.services) as services:
            services.inventory.add_stock("LAMP", 10)
            services.inventory.add_stock("GLOBE", 2)
            for customer in ("ada", "bob"):
                services.loyalty.grant(customer, POINTS, date.today() + timedelta(days=90))

    def child(
        self, scenario: Scenario, kill_at: int, *, resume: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = [
            sys.executable,
            str(CHILD),
            "--db",
            self.db,
            "--services",
            str(self.services),
            "--order-json",
            json.dumps(scenario.order),
            "--saga-id",
            scenario.saga_id,
            "--kill-at",
            str(kill_at),
            "--email-fail-first",
            str(scenario.email_fail_first),
        ]
        if resume:
            args.append("--resume")
        return subprocess.run(
            args, cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False
        )

    def state(self, saga_id: str) -> SagaState:
        """The instance as its log tells it, read by a process that took no part."""

        async def read() -> SagaState:
            store = await open_store(self.db)
            try:
                return await Engine(store).status(saga_id)
            finally:
                await store.close()

        return asyncio.run(read())

    def ledgers(self) -> Ledgers:
        with open_services(self.services) as services:
            return {
                key: (service.calls(key), service.effects_applied(key))
                for service in services.all()
                for key in service.ledger.keys()  # noqa: SIM118 - a Ledger, not a dict
            }

    def verify(self, scenario: Scenario) -> None:
        with open_services(self.services) as services:
            scenario.verify(services, scenario.order, scenario.saga_id)


def _last_json(process: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = process.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{process.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def _finished(process: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert process.returncode == 0, f"exit {process.returncode}; stderr:\n{process.stderr}"
    return _last_json(process)


def baseline(world: World, scenario: Scenario) -> tuple[list[Point], Ledgers]:
    """A run nobody kills: its kill points, and what the services saw (the reference)."""
    world.seed()
    out = _finished(world.child(scenario, 0))
    assert out["statuses"] == {scenario.saga_id: scenario.expect.value}
    assert world.state(scenario.saga_id).status is scenario.expect
    world.verify(scenario)
    return out["points"], world.ledgers()


def _calls_until(points: list[Point], number: int, key: str) -> int:
    """How many calls with ``key`` the clean run had made by kill point ``number`` (1-based)."""
    return sum(
        1 for p in points[:number] if p["kind"] == "call" and p["what"].rsplit("#", 1)[0] == key
    )


def check_ledgers(ledgers: Ledgers, reference: Ledgers, points: list[Point], number: int) -> bool:
    """The restarted run's effects match a clean run's; only the cut-short call was repeated.

    Returns whether the kill point was between a call and its commit (the call re-made).
    """
    for key, (_, effects) in ledgers.items():
        assert effects <= 1, f"{key}: effect applied {effects} times"
    assert {k: e for k, (_, e) in ledgers.items()} == {k: e for k, (_, e) in reference.items()}
    killed = points[number - 1]
    remade = killed["what"].rsplit("#", 1)[0] if killed["kind"] == "call" else None
    for key, (calls, _) in reference.items():
        got = ledgers.get(key, (0, 0))[0]
        if key != remade:
            assert got == calls, f"{key}: {got} calls after the restart, {calls} in a clean run"
            continue
        # The unrecorded call is made again with the same key. (One fewer may follow: if
        # the cut-short call failed transiently, its re-made twin may succeed at once.)
        at_least = _calls_until(points, number, key) + 1
        assert at_least <= got <= calls + 1, f"{key}: {got} calls, {calls} in a clean run"
    assert set(ledgers) == set(reference)
    return remade is not None


def check_log(state: SagaState) -> None:
    """No attempt was started twice: a resumed call belongs to the ``*_started`` it had."""
    starts = Counter(
        (r.type, r.step, r.attempt)
        for r in state.records
        if r.type in (RecordType.STEP_STARTED, RecordType.COMPENSATION_STARTED)
    )
    assert all(n == 1 for n in starts.values()), starts
    assert [r.seq for r in state.records] == list(range(len(state.records)))


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_kill_point_recovers(scenario: Scenario, tmp_path: Path, saga_logs: SagaLogs) -> None:
    started = time.monotonic()

    def world_for(name: str | int) -> World:
        root = tmp_path / (name if isinstance(name, str) else f"kill-{name:02d}")
        return World(root, saga_logs.new(root))

    points, reference = baseline(world_for("baseline"), scenario)
    commits = sum(p["kind"] == "commit" for p in points)
    calls = sum(p["kind"] == "call" for p in points)
    assert commits + calls == len(points)
    assert commits >= scenario.commits, points
    assert calls >= scenario.calls, points

    remade = 0
    for number, point in enumerate(points, 1):
        world = world_for(number)
        world.seed()
        killed = world.child(scenario, number)
        assert killed.returncode == -signal.SIGKILL, (
            f"kill point {number} ({point}): exit {killed.returncode}\n{killed.stderr}"
        )
        assert _last_json(killed) == {"killed_at": number, **point}

        restarted = _finished(world.child(scenario, 0, resume=True))
        state = world.state(scenario.saga_id)
        context = f"kill point {number} ({point['kind']}: {point['what']})"
        assert state.status is scenario.expect, f"{context}: ended {state.status}"
        assert restarted["statuses"] in ({}, {scenario.saga_id: scenario.expect.value}), context
        check_log(state)
        try:
            world.verify(scenario)
            remade += check_ledgers(world.ledgers(), reference, points, number)
        except AssertionError as error:
            raise AssertionError(f"{context}: {error}") from error

    assert remade == calls  # every kill between a call and its commit re-made that call
    print(
        f"\ncrash suite ({saga_logs.kind}): scenario {scenario.name} exercised "
        f"{len(points)} kill points ({commits} after commits, {calls} between call and "
        f"commit; {remade} calls re-made with the same key) in {time.monotonic() - started:.1f}s"
    )


def _sqlite_world(root: Path) -> World:
    return World(root, f"sqlite:///{root / 'saga.db'}")


def _sagakit_cli() -> Path:
    """The ``sagakit`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("sagakit")
    assert script.exists(), f"no sagakit script beside {sys.executable}"
    return script


@pytest.mark.timeout(300)
def test_the_cli_worker_is_a_valid_restart(tmp_path: Path) -> None:
    """``sagakit worker --once`` finishes a saga killed mid-call, from the files alone."""
    scenario = SCENARIOS[0]
    points, _ = baseline(_sqlite_world(tmp_path / "baseline"), scenario)
    shipment = idempotency_key(scenario.saga_id, "create_shipment")
    number = points.index({"kind": "call", "what": f"{shipment}#1"}) + 1

    world = _sqlite_world(tmp_path / "killed")
    world.seed()
    killed = world.child(scenario, number)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert world.state(scenario.saga_id).status is SagaStatus.RUNNING

    app = "sagakit.demo:from_environment"
    worker = subprocess.run(
        [str(_sagakit_cli()), "worker", "--once", "--app", app, "--db", world.db],
        cwd=REPO,
        env={**os.environ, SERVICES_ENV: str(world.services)},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert worker.returncode == 0, f"{worker.stdout}\n{worker.stderr}"
    assert "resumed 1 saga(s)" in worker.stdout, worker.stdout

    state = world.state(scenario.saga_id)
    assert state.status is SagaStatus.COMPLETED
    check_log(state)
    world.verify(scenario)
    ledgers = world.ledgers()
    assert all(effects <= 1 for _, effects in ledgers.values()), ledgers
    assert ledgers[shipment] == (2, 1)  # the cut-short call, re-made by the worker
