"""One process of the outbox crash suite: a PostgreSQL-backed service that SIGKILLs itself.

The parent test (``test_outbox_crash_postgres.py``) starts this script with a kill point,
lets it die there, and starts it again without one, as the restarted process would be.
Everything durable is in PostgreSQL (the service's own table, its inbox and outbox) and in
Redis (the streams and their consumer groups), so nothing but those links the two runs.

The service, ``payments``, handles ``OrderCreated`` from the incoming stream: it inserts a
row in its own ``payments`` table and emits ``PaymentCompleted`` to the outgoing stream. Kill
points (``--kill-at``), each announced on stdout before the SIGKILL (no ``finally``, no
flush):

* ``handler``: inside the handler, after its own insert, before the local commit;
* ``committed``: right after the local commit, before the delivery is acknowledged and
  before the relay could publish;
* ``published``: in the relay, after the broker took the event, before it is marked sent.

Without ``--kill-at`` the service runs until the order is paid, the outbox is empty and the
incoming delivery is acknowledged, then stops and prints what it did as JSON.

The URLs come from the environment (:data:`DB_ENV`, :data:`BROKER_ENV`), not argv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sagakit.bus import Event, open_broker
from sagakit.bus.redis_streams import RedisStreamsBroker, stream_key
from sagakit.choreography import (
    OutboxClaim,
    OutboxDeadLetter,
    OutboxTransaction,
    Pending,
    Service,
    Transaction,
)
from sagakit.choreography.postgres import PostgresDatabase

DB_ENV = "SAGAKIT_CRASH_DB"
BROKER_ENV = "SAGAKIT_CRASH_BROKER"
TABLES = """CREATE TABLE IF NOT EXISTS payments (
    order_id text NOT NULL, event_id text NOT NULL, charged_at timestamptz DEFAULT now());"""
POINTS = ("handler", "committed", "published")
REDELIVER_AFTER = 2.0
"""Seconds before the restarted consumer takes over what the killed one held."""
RUN_LIMIT = 60.0
"""A child that has not reached its kill point (or finished) by then gives up, loudly."""


def die(point: str) -> None:
    sys.stdout.write(json.dumps({"killed_at": point}) + "\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillingClaim:
    """A claim that dies when the relay, having published, comes to mark rows sent."""

    def __init__(self, inner: OutboxClaim, kill_at: str | None) -> None:
        self._inner = inner
        self._kill_at = kill_at

    @property
    def rows(self) -> Sequence[Pending]:
        return self._inner.rows

    async def sent(self, ids: Sequence[int]) -> None:
        if ids and self._kill_at == "published":
            die("published")
        await self._inner.sent(ids)

    async def refused(self, row_id: int, error: str, retry_at: float | None) -> None:
        await self._inner.refused(row_id, error, retry_at)


class KillingDatabase:
    """The service's :class:`PostgresDatabase`, with the ``committed`` and ``published``
    kill points where the protocol puts those moments."""

    def __init__(self, inner: PostgresDatabase, kill_at: str | None) -> None:
        self.inner = inner
        self._kill_at = kill_at

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[OutboxTransaction]:
        async with self.inner.transaction() as tx:
            yield tx
        if self._kill_at == "committed":
            die("committed")

    def transaction(self) -> AbstractAsyncContextManager[OutboxTransaction]:
        return self._transaction()

    @asynccontextmanager
    async def _claim(self, limit: int) -> AsyncIterator[OutboxClaim]:
        async with self.inner.claim(limit) as claim:
            yield KillingClaim(claim, self._kill_at)

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxClaim]:
        return self._claim(limit)

    def changes(self, wake: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        return self.inner.changes(wake)

    async def backlog(self) -> int:
        return await self.inner.backlog()

    async def dead_letters(self, limit: int = 100) -> list[OutboxDeadLetter]:
        return await self.inner.dead_letters(limit)

    async def resend(self, ids: Sequence[int]) -> int:
        return await self.inner.resend(ids)

    async def prune(self, sent_before: float) -> int:
        return await self.inner.prune(sent_before)

    async def close(self) -> None:
        await self.inner.close()


async def paid_and_settled(db: PostgresDatabase, broker: RedisStreamsBroker, stream: str) -> bool:
    """The order's payment committed, its event published and marked, the delivery acked."""
    async with db.transaction() as tx:
        paid = await tx.connection.fetchval("SELECT count(*) FROM payments")
    if paid == 0 or await db.backlog() != 0:
        return False
    pending = await broker.client.xpending(stream_key(stream), "payments")
    return int(pending["pending"]) == 0


async def run(in_stream: str, out_stream: str, kill_at: str | None) -> dict[str, int]:
    db = await PostgresDatabase.open(os.environ[DB_ENV], tables=TABLES)
    broker = await open_broker(os.environ[BROKER_ENV], redeliver_after=REDELIVER_AFTER)
    assert isinstance(broker, RedisStreamsBroker)
    service = Service("payments", KillingDatabase(db, kill_at), broker, stream=in_stream)

    @service.on("OrderCreated")
    async def charge(event: Event, tx: Transaction) -> None:
        order = event.data["order_id"]
        await tx.db.execute(
            "INSERT INTO payments (order_id, event_id) VALUES ($1, $2)", order, event.id
        )
        if kill_at == "handler":
            die("handler")
        tx.emit("PaymentCompleted", {"order_id": order}, stream=out_stream)

    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop, grace=5.0))
    try:
        async with asyncio.timeout(RUN_LIMIT):  # a kill point comes before, or a bug
            while True:
                if kill_at is None and await paid_and_settled(db, broker, in_stream):
                    break
                await asyncio.sleep(0.05)  # a look at the databases, not a wait for them
    finally:
        stop.set()
        await running
        await db.close()
        await broker.close()
    return {
        "handled": service.handled,
        "duplicates": service.duplicates,
        "published": service.relay.published,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in-stream", required=True)
    parser.add_argument("--out-stream", required=True)
    parser.add_argument("--kill-at", choices=POINTS)
    args = parser.parse_args(argv)
    outcome = asyncio.run(run(args.in_stream, args.out_stream, args.kill_at))
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
