"""A foreign service in the loop: the order choreography with its shipping service in Node.js.

``tests/foreign/shipping/shipping.js`` is the shipping service written in plain Node.js with
npm's ``redis`` client and no sagakit code, from docs/wire-format.md alone: it reads the
CloudEvents that sagakit's services publish to a Redis stream, de-duplicates them by id in
an inbox of its own (a JSON file), books a parcel for each ``StockReserved`` and publishes
``ShipmentCreated``. Here it takes the place of the Python shipping service: orders,
payments and inventory run in this process (each with its own Redis connection and SQLite
file, as separate processes would), on the machine's Redis, on a stream of this run's own;
a :class:`~sagakit.choreography.Tracker` follows the stream into a SQLite saga log.

Two orders: one that ships, and one short of stock, whose ``StockReservationFailed`` makes
payments refund the card and orders cancel the order (the compensation chain, in which the
Node service only has to let the other events pass). Both sagas must be whole in the
tracker's log, record by record; the shipment must be the Node service's (its ``source``,
its state file); the orders service must have accepted its event; nothing may be in the
stream's dead letters.

``make test`` installs the service's npm packages from its lock file first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Protocol

import jsonschema
import pytest
from redis.asyncio import Redis

from sagakit import SagaState, SagaStatus, open_store
from sagakit.bus import Broker, event_schema, open_broker
from sagakit.choreography import Tracker
from sagakit.choreography._tracker import TRACKER_GROUP
from sagakit.demo._choreography import (
    ORDER_CHOREOGRAPHY,
    SERVICES,
    add_stock,
    audit,
    build_service,
    create_databases,
    place_orders,
)
from sagakit.log._codec import decode
from sagakit.store import Store
from servers import REDIS

pytestmark = pytest.mark.redis

SHIPPING = Path(__file__).resolve().parents[1] / "foreign" / "shipping"
SCRIPT = SHIPPING / "shipping.js"
NODE_SOURCE = "urn:sagakit-tests:node-shipping"
"""The ``source`` the Node service puts on its events (CloudEvents: a URI-reference)."""
PYTHON_SERVICES = [name for name in SERVICES if name != "shipping"]
WAIT = 60.0
"""Seconds any one condition may take; every wait below is bounded by it."""

Timeline = list[tuple[str, str | None, str | None, str | None]]
"""A saga's records as (record type, step, event, event's source)."""

SHIPPED: Timeline = [
    ("saga_started", None, None, None),
    ("step_started", "create_order", None, None),
    ("step_succeeded", "create_order", "OrderCreated", "orders"),
    ("step_started", "charge_payment", None, None),
    ("step_succeeded", "charge_payment", "PaymentCompleted", "payments"),
    ("step_started", "reserve_stock", None, None),
    ("step_succeeded", "reserve_stock", "StockReserved", "inventory"),
    ("step_started", "create_shipment", None, None),
    ("step_succeeded", "create_shipment", "ShipmentCreated", NODE_SOURCE),
    ("saga_completed", None, None, None),
]
REFUNDED: Timeline = [
    ("saga_started", None, None, None),
    ("step_started", "create_order", None, None),
    ("step_succeeded", "create_order", "OrderCreated", "orders"),
    ("step_started", "charge_payment", None, None),
    ("step_succeeded", "charge_payment", "PaymentCompleted", "payments"),
    ("step_started", "reserve_stock", None, None),
    ("step_failed", "reserve_stock", "StockReservationFailed", "inventory"),
    ("saga_compensating", None, None, None),
    ("compensation_started", "charge_payment", None, None),
    ("compensation_succeeded", "charge_payment", "PaymentRefunded", "payments"),
    ("compensation_started", "create_order", None, None),
    ("compensation_succeeded", "create_order", "OrderCancelled", "orders"),
    ("saga_compensated", None, None, None),
]


class Runnable(Protocol):
    """A service or a tracker: runs until told to stop, says when it is subscribed."""

    ready: asyncio.Event

    async def run(self, stop: asyncio.Event) -> None: ...


def order(order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "ada",
        "card": "tok_visa",
        "total_cents": 4990,
        "items": items,
        "address": f"1 Loop Rd, Springfield ({order_id})",
    }


async def until(what: str, check: Callable[[], bool]) -> None:
    """Poll ``check`` (a service's database, which announces nothing) until true; fail
    after :data:`WAIT` s."""
    deadline = time.monotonic() + WAIT
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT:g}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(what: str, runnable: Runnable) -> AsyncIterator[None]:
    """Run ``runnable`` as a task for the block, entered once it is subscribed."""
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(runnable.run(stop), name=what)
    try:
        ready = asyncio.ensure_future(runnable.ready.wait())
        await asyncio.wait({task, ready}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()  # its error, if it raised one
        assert runnable.ready.is_set(), f"{what} did not subscribe within {WAIT:g}s"
        yield
    finally:
        stop.set()
        async with asyncio.timeout(WAIT):
            await task


class NodeShipping:
    """``node shipping.js`` as a child process; its log goes to ``log_path``."""

    def __init__(self, directory: Path, stream: str) -> None:
        self.state_path = directory / "node-shipping.json"
        self.log_path = directory / "node-shipping.log"
        self.env = {
            **os.environ,
            "SHIPPING_REDIS_URL": REDIS,
            "SHIPPING_STREAM": stream,
            "SHIPPING_GROUP": "shipping",
            "SHIPPING_SOURCE": NODE_SOURCE,
            "SHIPPING_STATE": str(self.state_path),
        }
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        """Start the process; return once it says its consumer group is in place."""
        node = shutil.which("node")
        assert node is not None, "node is not installed (.ci/run installs it)"
        modules = SHIPPING / "node_modules" / "redis"
        assert modules.is_dir(), f"no {modules}: run `make test`, which runs npm ci there"
        self._log = self.log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            env=self.env,
            cwd=SHIPPING,
        )
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(WAIT):
                line = await self._process.stdout.readline()
        except TimeoutError:
            raise AssertionError(f"shipping.js not ready in {WAIT:g}s:\n{self.tail()}") from None
        assert line.startswith(b"ready"), f"shipping.js did not start:\n{self.tail()}"

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not ended within :data:`WAIT`; its exit code
        (None if it had to be killed or never started)."""
        process, self._process = self._process, None
        if process is None:
            return None
        code: int | None = None
        if process.returncode is None:
            process.terminate()
        try:
            async with asyncio.timeout(WAIT):
                code = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def state(self) -> dict[str, Any]:
        """The service's own state file, as it last wrote it (empty before its first)."""
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        return state

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def tracked(store: Store, saga_id: str) -> SagaState:
    """The saga as the tracker has it, once terminal (or as it stands after :data:`WAIT`)."""
    deadline = time.monotonic() + WAIT
    async with store.watch(saga_id) as change:
        while True:
            stored = await store.load(saga_id)
            state = SagaState.from_records(saga_id, stored.records if stored else [])
            left = deadline - time.monotonic()
            if state.status.is_terminal or left <= 0:
                return state
            await change.wait(min(left, 1.0))


def timeline(state: SagaState) -> Timeline:
    rows: Timeline = []
    for record in state.records:
        data = decode(record.data) if record.data else None
        facts = data if isinstance(data, dict) else {}
        rows.append((record.type.value, record.step, facts.get("event"), facts.get("source")))
    return rows


def facts(state: SagaState, event: str) -> dict[str, Any]:
    """The data of the record that ``event`` made a step succeed with."""
    for record in state.records:
        data = decode(record.data) if record.data else None
        if isinstance(data, dict) and data.get("event") == event:
            return data
    raise AssertionError(f"no record of {event} in {state.id}")


@contextlib.asynccontextmanager
async def python_services(
    directory: Path, store: Store, stream: str
) -> AsyncIterator[Callable[[list[dict[str, Any]]], Awaitable[None]]]:
    """The tracker and every order service but shipping, subscribed to ``stream`` for the
    block, each on a Redis connection of its own; yields the order service's intake."""
    async with contextlib.AsyncExitStack() as stack:
        brokers: list[Broker] = []
        for _ in range(len(PYTHON_SERVICES) + 1):
            brokers.append(await open_broker(REDIS))
            stack.push_async_callback(brokers[-1].close)
        tracker = Tracker(store, brokers[0], [ORDER_CHOREOGRAPHY], streams=[stream])
        services = []
        for name, broker in zip(PYTHON_SERVICES, brokers[1:], strict=True):
            service = build_service(name, directory, broker, stream=stream, relay_poll=0.1)
            stack.push_async_callback(service.close)
            services.append(service)
        await stack.enter_async_context(running("the tracker", tracker))
        for service in services:
            await stack.enter_async_context(running(service.name, service))
        orders = services[0]

        async def place(placed: list[dict[str, Any]]) -> None:
            await place_orders(orders.db, placed, stream=stream)
            orders.relay.wake()

        yield place


async def published(stream: str) -> list[dict[str, Any]]:
    """Every event on ``stream``, as JSON, read from Redis where docs/wire-format.md says."""
    client = Redis.from_url(REDIS)
    try:
        entries: Any = await client.xrange(f"sagakit:{stream}")
    finally:
        await client.aclose()
    events: list[dict[str, Any]] = [json.loads(fields[b"event"]) for _, fields in entries]
    return events


async def test_a_node_shipping_service_completes_one_order_and_lets_a_refund_pass(
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:10]
    stream = f"orders-foreign-{run}"
    shipped, refunded = f"FS-SHIP-{run}", f"FS-SHORT-{run}"
    directory = tmp_path / "services"
    create_databases(directory)
    add_stock(directory, {"LAMP": 10, "GLOBE": 2})
    store = await open_store(f"sqlite:///{tmp_path / 'sagas.db'}")
    admin = await open_broker(REDIS)
    node = NodeShipping(tmp_path, stream)
    try:
        async with python_services(directory, store, stream) as place:
            try:
                await node.start()
                await place(
                    [
                        order(shipped, [{"sku": "LAMP", "qty": 1}]),
                        order(refunded, [{"sku": "GLOBE", "qty": 3}]),
                    ]
                )
                completed = await tracked(store, shipped)
                compensated = await tracked(store, refunded)
                ended = {shipped: "completed", refunded: "cancelled"}
                await until(
                    "the orders service to end both orders",
                    lambda: audit(directory).orders == ended,
                )
            finally:
                exit_code = await node.stop()
        dead = await admin.dead_letters(stream)
        events = await published(stream)
    finally:
        with contextlib.suppress(Exception):
            await admin.delete_stream(stream, (*SERVICES, TRACKER_GROUP))
        await admin.close()
        await store.close()
        print(node.tail(), file=sys.stderr)  # pytest shows it when the test fails

    assert (completed.status, timeline(completed)) == (SagaStatus.COMPLETED, SHIPPED)
    assert (compensated.status, timeline(compensated)) == (SagaStatus.COMPENSATED, REFUNDED)
    assert {s.name: s.status.value for s in completed.steps} == dict.fromkeys(
        ("create_order", "charge_payment", "reserve_stock", "create_shipment"), "succeeded"
    )
    assert {s.name: s.status.value for s in compensated.steps} == {
        "create_order": "compensated",
        "charge_payment": "compensated",
        "reserve_stock": "failed",
        "create_shipment": "skipped",
    }
    reserved, shipment = facts(completed, "StockReserved"), facts(completed, "ShipmentCreated")
    assert shipment["causation_id"] == reserved["event_id"]
    shipments = node.state()["shipments"]
    assert [s["order_id"] for s in shipments.values()] == [shipped]
    assert shipment["payload"] == {"order_id": shipped, "shipment_id": next(iter(shipments))}
    assert audit(directory).shipments[shipped] == 0  # the Python shipping service never ran
    foreign = [e for e in events if e["source"] == NODE_SOURCE]
    assert [(e["type"], e["correlationid"]) for e in foreign] == [("ShipmentCreated", shipped)]
    schema = jsonschema.Draft202012Validator(
        event_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for event in foreign:
        schema.validate(event)
    assert dead == []
    assert exit_code == 0, "shipping.js did not exit cleanly on SIGTERM"
