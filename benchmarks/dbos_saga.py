"""The order saga written with DBOS, in a process of its own: ``python -m benchmarks.dbos_saga``.

The same three no-op services as every other scenario (:mod:`benchmarks.order`), each call a
``@DBOS.step``, inside one ``@DBOS.workflow`` that undoes what it did in an ``except`` block:
the way DBOS's documentation writes a saga. DBOS keeps one global instance per process,
with threads of its own, so each database gets a fresh process; the parent
(:mod:`benchmarks.dbos_baseline`) reads the one JSON line it prints.

Offline by construction: no Conductor key or URL, OTLP off (the default), and the parent
removes every ``DBOS__*`` variable (``DBOS__CLOUD`` would start Conductor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import version
from typing import Any

from dbos import DBOS, DBOSConfig

from benchmarks.measure import Mode, Run, sized, timed
from benchmarks.order import ORDER, Clients

_clients = Clients.fake()


@DBOS.step()
async def charge_payment(customer_id: str, total: int) -> str:
    return (await _clients.payment.charge(customer_id, total)).id


@DBOS.step()
async def refund_payment(payment_id: str) -> None:
    await _clients.payment.refund(payment_id)


@DBOS.step()
async def reserve_inventory(items: list[dict[str, Any]]) -> str:
    return (await _clients.inventory.reserve(items)).id


@DBOS.step()
async def release_inventory(reservation_id: str) -> None:
    await _clients.inventory.release(reservation_id)


@DBOS.step()
async def create_shipment(order_id: str, address: str) -> str:
    return (await _clients.shipping.create(order_id, address)).id


@DBOS.step()
async def cancel_shipment(shipment_id: str) -> None:
    await _clients.shipping.cancel(shipment_id)


@DBOS.workflow()
async def order_saga(order: dict[str, Any]) -> dict[str, Any]:
    """Charge, reserve, ship; on an error, undo the done steps in reverse order."""
    compensations: list[Callable[[], Awaitable[None]]] = []
    try:
        payment_id = await charge_payment(order["customer_id"], order["total"])
        compensations.append(lambda: refund_payment(payment_id))
        reservation_id = await reserve_inventory(order["items"])
        compensations.append(lambda: release_inventory(reservation_id))
        shipment_id = await create_shipment(order["id"], order["address"])
        compensations.append(lambda: cancel_shipment(shipment_id))
        return {"status": "completed", "shipment_id": shipment_id}
    except Exception as error:
        for compensate in reversed(compensations):
            await compensate()
        return {"status": "failed", "error": str(error)}


async def run_one() -> bool:
    """One workflow, called directly (it runs on this event loop); True if it completed."""
    result = await order_saga(ORDER)
    return bool(result["status"] == "completed")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dbos_saga")
    parser.add_argument("--db", required=True, help="DBOS system database URL")
    parser.add_argument("--width", type=int, default=50, help="workflows in flight, concurrent")
    parser.add_argument("--target", type=float, default=2.0, help="seconds per timed run")
    parser.add_argument("--repetitions", type=int, default=3)
    return parser.parse_args(argv)


async def measure(width: int, target: float, repetitions: int) -> dict[str, Any]:
    """Sequential, then ``width`` concurrent: warm-up, sized timed runs, and the count of
    workflows DBOS itself recorded as succeeded for each mode."""
    modes: dict[str, Any] = {}
    recorded = 0
    for mode, warm in ((Mode.SEQUENTIAL, 20), (Mode.CONCURRENT, 5 * width)):
        warmup = await timed(run_one, mode, warm, width)
        count = sized(warmup, target, floor=10 if mode is Mode.SEQUENTIAL else 2 * width)
        runs: list[Run] = []
        cpu: list[float] = []
        for _ in range(repetitions):
            before = time.process_time()
            runs.append(await timed(run_one, mode, count, width))
            cpu.append(time.process_time() - before)
        succeeded = await DBOS.list_workflows_async(
            status="SUCCESS", load_input=False, load_output=False
        )
        modes[mode.value] = {
            "warmup": _run(warmup),
            "runs": [_run(run) for run in runs],
            "cpu": cpu,
            "logged": len(succeeded) - recorded,
        }
        recorded = len(succeeded)
    return {"dbos_version": version("dbos"), "modes": modes}


def _run(run: Run) -> list[float]:
    return [run.sagas, run.completed, run.seconds, run.peak]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    config: DBOSConfig = {
        "name": "sagakit-bench",
        "system_database_url": args.db,
        "application_version": "bench",  # else DBOS hashes the source, and warns it cannot
        "log_level": "WARNING",
        "enable_otlp": False,
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        return await measure(args.width, args.target, args.repetitions)
    finally:
        DBOS.destroy()


def main(argv: Sequence[str] | None = None) -> int:
    summary = asyncio.run(main_async(parse(argv)))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
