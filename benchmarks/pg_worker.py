"""A benchmark worker process: ``python -m benchmarks.pg_worker --db URL --concurrency N``.

It is :class:`sagakit.Worker`, as ``sagakit worker`` builds it, around the benchmark's order
saga. It exists instead of ``sagakit worker --app ...`` for two reasons: ``sagakit worker``
prints a line per finished saga, which at thousands of sagas per second would measure the
terminal, and the benchmark needs to know when the worker is ready and what it saw. So this
prints ``ready`` once the store is open, and on SIGTERM or SIGINT stops, closes the store
and prints one JSON line: how many sagas it drove to each status, and its errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sagakit
from benchmarks.order import ORDER, Clients, FakeShippingClient, Receipt, build_order_saga
from sagakit import DriveReport, Saga, Worker

REFUSED_ID = "o-refused"
"""An order id the shipping service refuses, so the saga compensates its first two steps."""

SUCCESS_ORDER: dict[str, Any] = ORDER
COMPENSATION_ORDER: dict[str, Any] = {**ORDER, "id": REFUSED_ID}


class RefusingShippingClient(FakeShippingClient):
    """The no-op shipping service, except that it refuses one order id (without suspending)."""

    async def create(self, order_id: str, address: str) -> Receipt:
        if order_id == REFUSED_ID:
            raise RuntimeError("courier refused the parcel")
        return await super().create(order_id, address)


def build_saga() -> Saga:
    """:func:`benchmarks.order.build_order_saga` itself, so the PostgreSQL scenarios run the
    same saga as the others; only the shipping client can say no."""
    fake = Clients.fake()
    return build_order_saga(Clients(fake.payment, fake.inventory, RefusingShippingClient()))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_worker")
    parser.add_argument("--db", required=True, help="the saga log's postgresql:// URL")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--lease", type=float, default=30.0)
    return parser.parse_args(argv)


async def serve(url: str, concurrency: int, poll: float, lease: float) -> dict[str, Any]:
    """Run a worker until a signal; what it did, for the benchmark to check."""
    counts: Counter[str] = Counter()
    errors: list[str] = []

    def report(outcome: DriveReport) -> None:
        if outcome.error is not None:
            errors.append(f"{outcome.saga_id}: {type(outcome.error).__name__}: {outcome.error}")
        elif outcome.result is not None:
            counts[outcome.result.status.value] += 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await sagakit.open_store(url)
    try:
        worker = Worker(
            store, [build_saga()], concurrency=concurrency, poll=poll, lease=lease, report=report
        )
        print("ready", flush=True)
        started = time.process_time()
        await worker.run(stop)
        cpu = time.process_time() - started
    finally:
        await store.close()
    return {"statuses": dict(counts), "errors": errors[:10], "error_count": len(errors), "cpu": cpu}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    summary = asyncio.run(serve(args.db, args.concurrency, args.poll, args.lease))
    with contextlib.suppress(BrokenPipeError):  # the benchmark may have given up on us
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
