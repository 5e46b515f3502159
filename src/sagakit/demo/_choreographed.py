"""``sagakit demo --flavor choreography``: three orders through four services and a broker.

1. completes: paid, reserved, shipped;
2. asks for 3 globes with 2 in stock: ``StockReservationFailed``, so the payment service
   refunds the card and the order service cancels the order (the compensation chain);
3. is paid with a declined card: ``PaymentDeclined``, so the order is cancelled.

On ``memory://`` the services run as tasks of this process, each with its own broker
connection and database file, as separate processes would; with a real broker URL each runs
as a separate process (:mod:`.processes`). A :class:`~sagakit.choreography.Tracker` in this
process rebuilds each order's timeline into the saga log at ``--db``, so ``sagakit list``
and ``sagakit show`` show the choreographed orders like orchestrated ones. Each timeline is
printed, then the services' own databases are asked whether what should have happened did.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sagakit._timeline import render_timeline, status_text
from sagakit.bus import Broker, MemoryBroker, open_broker
from sagakit.choreography import Service, SqliteDatabase, Tracker
from sagakit.choreography._tracker import TRACKER_GROUP
from sagakit.demo._choreography import (
    ORDER_CHOREOGRAPHY,
    ORDERS_SCHEMA,
    SERVICES,
    Audit,
    add_stock,
    audit,
    build_service,
    create_databases,
    database_path,
    decline_cards,
    free_stock,
    place_orders,
)
from sagakit.demo._service_process import ServiceProcess, ServiceProcessError
from sagakit.log import SagaState, SagaStatus
from sagakit.store import Store, open_store

WAIT = 60.0
"""Seconds the demo waits for every order to end before it gives up."""
STOLEN_CARD = "tok_stolen"

Check = tuple[str, bool]


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    order: dict[str, Any]
    expect: SagaStatus
    verify: Callable[[Audit, Path, str], list[Check]]


def _order(order_id: str, customer: str, **extra: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "order_id": order_id,
        "customer_id": customer,
        "card": "tok_visa",
        "total_cents": 4990,
        "items": [{"sku": "LAMP", "qty": 1}],
        "address": "1 Loop Rd, Springfield",
    }
    order.update(extra)
    return order


def _verify_completed(found: Audit, directory: Path, order_id: str) -> list[Check]:
    return [
        ("order completed", found.orders.get(order_id) == "completed"),
        ("card charged once", found.charges[order_id] == 1 and found.refunds[order_id] == 0),
        ("stock reserved once", found.reservations[order_id] == 1),
        ("one shipment", found.shipments[order_id] == 1),
    ]


def _verify_refunded(found: Audit, directory: Path, order_id: str) -> list[Check]:
    return [
        ("order cancelled", found.orders.get(order_id) == "cancelled"),
        ("charged once, refunded once", found.charges[order_id] == 1 == found.refunds[order_id]),
        ("nothing left charged", found.net_charged[order_id] == 0),
        ("nothing reserved", not found.reservations[order_id]),
        ("no shipment", found.shipments[order_id] == 0),
        ("2 GLOBE still free", free_stock(directory, "GLOBE") == 2),
    ]


def _verify_declined(found: Audit, directory: Path, order_id: str) -> list[Check]:
    return [
        ("order cancelled", found.orders.get(order_id) == "cancelled"),
        ("nothing charged", found.charges[order_id] == 0),
        ("no later service acted", not found.reservations[order_id] + found.shipments[order_id]),
    ]


def scenarios(run: str) -> list[Scenario]:
    """The demo's orders; ``run`` makes their ids (their saga ids) unique per run."""
    return [
        Scenario(
            "completes: OrderCreated -> PaymentCompleted -> StockReserved -> ShipmentCreated",
            _order(f"C-1001-{run}", "ada"),
            SagaStatus.COMPLETED,
            _verify_completed,
        ),
        Scenario(
            "3 globes wanted, 2 in stock: StockReservationFailed -> PaymentRefunded -> cancelled",
            _order(f"C-1002-{run}", "bob", items=[{"sku": "GLOBE", "qty": 3}]),
            SagaStatus.COMPENSATED,
            _verify_refunded,
        ),
        Scenario(
            "card declined: PaymentDeclined -> OrderCancelled",
            _order(f"C-1003-{run}", "cy", card=STOLEN_CARD),
            SagaStatus.COMPENSATED,
            _verify_declined,
        ),
    ]


def seed(directory: Path) -> None:
    """The world the scenarios need: the databases, stock, and a stolen card."""
    create_databases(directory)
    add_stock(directory, {"LAMP": 10, "GLOBE": 2})
    decline_cards(directory, STOLEN_CARD)


async def run_choreography_demo(db_url: str, broker_url: str, console: Console) -> int:
    """Run every scenario over ``broker_url``, tracked into ``db_url``; 0 if all went right."""
    run = uuid.uuid4().hex[:6]
    stream = f"orders-{run}"  # a fresh stream: nothing left by an earlier run is replayed
    store = await open_store(db_url)
    try:
        with tempfile.TemporaryDirectory(prefix="sagakit-choreography-") as scratch:
            directory = Path(scratch)
            seed(directory)
            broker = await open_broker(broker_url)
            console.print(f"[bold]choreography over {broker.url}[/], stream {stream!r}")
            try:
                services = _services(broker, broker_url, directory, stream)
                tracking = _tracking(store, broker, stream)
                return await _run(scenarios(run), store, tracking, services, directory, console)
            except ServiceProcessError as error:  # as the CLI shows sagakit's errors
                print(f"error: {error}", file=sys.stderr)
                return 1
            finally:
                if not isinstance(broker, MemoryBroker):  # a memory hub ends with its broker
                    with contextlib.suppress(Exception):
                        await broker.delete_stream(stream, (*SERVICES, TRACKER_GROUP))
                await broker.close()
    finally:
        await store.close()


async def _run(
    plan: list[Scenario],
    store: Store,
    tracking: AbstractAsyncContextManager[Tracker],
    services: AbstractAsyncContextManager[Intake],
    directory: Path,
    console: Console,
) -> int:
    async with tracking, services as place:
        await place([s.order for s in plan])
        states = await _wait_until_ended(store, [s.order["order_id"] for s in plan])
        found = await _settled(plan, directory)
    outcomes = []
    for number, (scenario, state) in enumerate(zip(plan, states, strict=True), 1):
        console.rule(f"[bold]{number}. {scenario.title}")
        console.print(render_timeline(state))
        checks = scenario.verify(found, directory, scenario.order["order_id"])
        checks.append(("no effect applied twice", not found.twice()))
        _print_checks(console, checks)
        outcomes.append((scenario, state, checks))
    return _summary(console, outcomes)


@asynccontextmanager
async def _tracking(store: Store, broker: Broker, stream: str) -> AsyncIterator[Tracker]:
    """A tracker subscribed to ``stream`` for the life of the block."""
    own = broker.sibling() if isinstance(broker, MemoryBroker) else broker
    tracker = Tracker(store, own, [ORDER_CHOREOGRAPHY], streams=[stream])
    async with _running(tracker.run, tracker.ready, "the tracker"):
        yield tracker


Intake = Callable[[list[dict[str, Any]]], Awaitable[object]]
"""Places orders with the order service, as its HTTP endpoint would."""


@asynccontextmanager
async def _services(
    broker: Broker, url: str, directory: Path, stream: str
) -> AsyncIterator[Intake]:
    """The four services, subscribed, for the life of the block; yields their order intake.

    ``url`` is the broker's, password included, for the service processes to connect with;
    they get it in their environment, where ``ps`` does not show it.
    """
    if isinstance(broker, MemoryBroker):
        async with _in_process(broker, directory, stream) as place:
            yield place
        return
    processes = [ServiceProcess(name, directory, url, stream=stream) for name in SERVICES]
    intake = SqliteDatabase(database_path(directory, "orders"), ORDERS_SCHEMA)
    try:
        await asyncio.gather(*(p.start() for p in processes))
        # Written to the order service's database; its relay finds them at its next poll.
        yield lambda orders: place_orders(intake, orders, stream=stream)
    finally:
        await asyncio.gather(*(p.stop() for p in processes))
        await intake.close()


@asynccontextmanager
async def _in_process(broker: MemoryBroker, directory: Path, stream: str) -> AsyncIterator[Intake]:
    services: list[Service] = [
        build_service(name, directory, broker.sibling(), stream=stream) for name in SERVICES
    ]
    orders = services[0]

    async def place(placed: list[dict[str, Any]]) -> None:
        await place_orders(orders.db, placed, stream=stream)
        orders.relay.wake()

    try:
        async with contextlib.AsyncExitStack() as stack:
            for service in services:
                await stack.enter_async_context(_running(service.run, service.ready, service.name))
            yield place
    finally:
        for service in services:
            await service.close()


@asynccontextmanager
async def _running(
    run: Callable[[asyncio.Event], Any], ready: asyncio.Event, what: str
) -> AsyncIterator[None]:
    """Run ``run(stop)`` as a task until the block ends; enter once ``ready`` is set."""
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(run(stop), name=what)
    try:
        waiting = asyncio.ensure_future(ready.wait())
        await asyncio.wait({task, waiting}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not ready.is_set():
            raise RuntimeError(f"{what} did not subscribe within {WAIT:g}s")
        yield
    finally:
        stop.set()
        await task


async def _wait_until_ended(store: Store, saga_ids: list[str]) -> list[SagaState]:
    """Each saga's state once it is terminal (or as it stands when :data:`WAIT` runs out)."""
    deadline = time.monotonic() + WAIT
    states = []
    for saga_id in saga_ids:
        async with store.watch(saga_id) as change:
            while True:
                stored = await store.load(saga_id)
                state = SagaState.from_records(saga_id, stored.records if stored else [])
                left = deadline - time.monotonic()
                if state.status.is_terminal or left <= 0:
                    break
                await change.wait(min(left, 1.0))
        states.append(state)
    return states


async def _settled(plan: list[Scenario], directory: Path) -> Audit:
    """The services' records once every scenario's checks pass (or :data:`WAIT` runs out).

    A saga the tracker saw end may still have an event on its way to a service: the orders
    service marks an order completed on the same ``ShipmentCreated`` that ends the saga. The
    services' databases belong to other processes, which announce nothing, so they are read
    again, briefly apart, until they agree or the deadline passes; the services keep running
    meanwhile, since stopping one would hand its unhandled events back to the broker.
    """
    deadline = time.monotonic() + WAIT
    while True:
        found = audit(directory)
        checks = [c for s in plan for c in s.verify(found, directory, s.order["order_id"])]
        if all(ok for _, ok in checks) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def _print_checks(console: Console, checks: list[Check]) -> None:
    for text, ok in checks:
        console.print(f"  {'[green]ok[/]  ' if ok else '[bold red]FAIL[/]'} {text}")
    console.print()


def _summary(console: Console, outcomes: list[tuple[Scenario, SagaState, list[Check]]]) -> int:
    table = Table(title="summary", title_justify="left")
    for column in ("saga", "expected", "got", "checks"):
        table.add_column(column, justify="right" if column == "checks" else "left")
    failures = 0
    for scenario, state, checks in outcomes:
        passed = sum(ok for _, ok in checks)
        failures += not (state.status is scenario.expect and passed == len(checks))
        table.add_row(
            state.id,
            status_text(scenario.expect),
            status_text(state.status),
            f"{passed}/{len(checks)}",
        )
    console.print(table)
    if failures:
        console.print(f"[bold red]{failures} order(s) did not end as expected[/]")
        return 1
    console.print("[bold green]every order ended as expected[/]")
    return 0
