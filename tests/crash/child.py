"""One process of the crash suite: runs (or resumes) the order saga and SIGKILLs itself.

The parent test (``test_crash_recovery.py``) starts this script, lets it die, and starts it
again with ``--resume`` as the restarted process would be. Everything durable lives in files
(the SQLite saga log and the services' SQLite databases), so nothing but the files links the
killed process and the restarted one, exactly as after a real crash.

A *kill point* is every moment the write-ahead protocol distinguishes:

* ``commit``: right after the store made records durable (``create``/``append`` returned);
* ``call``: right after an action or compensation returned or raised, before the engine has
  recorded the outcome.

The points are numbered as they happen; with ``--kill-at N`` the process announces point N on
stdout (so the parent can check it hit the point it meant) and sends itself SIGKILL there:
no ``finally``, no atexit, no flush of anything. With ``--kill-at 0`` it never dies and prints
every point it passed, which is how the parent learns how many points there are.

Usage::

    python tests/crash/child.py --db sqlite:////tmp/x/saga.db --services /tmp/x/services \
        --order-json '{...}' --saga-id S --kill-at 3 [--resume] [--email-fail-first 1]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sagakit import Engine, Retry, Saga, SagaResult, SagaStatus, Step, Store, open_store
from sagakit.demo import build_order_saga, open_services
from sagakit.log import Instance, Record
from sagakit.orchestration import CompensationContext, StepContext
from sagakit.store import StoreWrapper

EMAIL_RETRY = Retry(attempts=None, backoff=0.01, max_backoff=0.05, jitter=0.0)
"""Short, so the retried e-mail costs the suite milliseconds, yet still goes through a due time."""
COMPENSATION_RETRY = Retry(attempts=3, backoff=0.01, max_backoff=0.05, jitter=0.0)

Ctx = TypeVar("Ctx", StepContext, CompensationContext)
Point = dict[str, str]


class KillSwitch:
    """Numbers the kill points as they are passed and dies at the chosen one.

    Points can be passed from the event loop (commits) and from the worker thread a sync step
    runs in (calls); the lock keeps the numbering exact either way. SIGKILL from a worker
    thread kills the whole process, which is the point.
    """

    def __init__(self, kill_at: int) -> None:
        self.kill_at = kill_at
        self.points: list[Point] = []
        self._lock = threading.Lock()

    def point(self, kind: str, what: str) -> None:
        with self._lock:
            self.points.append({"kind": kind, "what": what})
            number = len(self.points)
            if number == self.kill_at:
                line = json.dumps({"killed_at": number, "kind": kind, "what": what})
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)


def _describe(records: Sequence[Record]) -> str:
    return ", ".join(f"{r.type.value}({r.step})" if r.step else r.type.value for r in records)


class KillingStore(StoreWrapper):
    """A :class:`sagakit.Store` that passes a ``commit`` kill point after every durable write.

    The point is taken after the real store returned, when (per the Store protocol) the
    records are durable: dying there leaves exactly what a crash right after a commit leaves.
    """

    def __init__(self, inner: Store, switch: KillSwitch) -> None:
        super().__init__(inner)
        self._switch = switch

    async def create(self, instance: Instance, records: Sequence[Record]) -> bool:
        created = await self.inner.create(instance, records)
        self._switch.point("commit", f"create: {_describe(records)}")
        return created

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        await self.inner.append(saga_id, records, status)
        self._switch.point("commit", f"append: {_describe(records)}")


def _wrap(fn: Callable[[Ctx], Any], is_async: bool, switch: KillSwitch) -> Callable[[Ctx], Any]:
    """``fn`` with a ``call`` kill point after it returns or raises, keeping it sync or async.

    The engine decides how to call a step by whether it is a coroutine function, so the
    wrapper must be one exactly when ``fn`` is.
    """

    def label(ctx: Ctx) -> str:
        return f"{ctx.idempotency_key}#{ctx.attempt}"

    if is_async:
        call_async: Callable[[Ctx], Awaitable[Any]] = fn

        async def wrapped_async(ctx: Ctx) -> Any:
            try:
                return await call_async(ctx)
            finally:
                switch.point("call", label(ctx))

        return wrapped_async

    def wrapped(ctx: Ctx) -> Any:
        try:
            return fn(ctx)
        finally:
            switch.point("call", label(ctx))

    return wrapped


def instrument(saga: Saga, switch: KillSwitch) -> Saga:
    """The same saga (name, version, kinds, policies) with every call followed by a point."""
    steps: list[Step] = []
    for step in saga.steps:
        compensation = step.compensation
        steps.append(
            dataclasses.replace(
                step,
                action=_wrap(step.action, step.action_is_async, switch),
                compensation=None
                if compensation is None
                else _wrap(compensation, step.compensation_is_async, switch),
            )
        )
    return Saga(saga.name, saga.version, steps=steps, deadline=saga.deadline)


LEASE = 2.0
"""A killed child's lease lapses this soon, so the restart can take its saga over. Long
enough that a child starved on a loaded machine (a 0.47 s stall was seen in CI) keeps its
lease and dies at its kill point, not after handing the saga back: each restart waits up to
this long, which the test pays once per kill point."""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    switch = KillSwitch(args.kill_at)
    store = KillingStore(await open_store(args.db), switch)
    try:
        with open_services(args.services, email_fail_first=args.email_fail_first) as services:
            saga = build_order_saga(
                services, email_retry=EMAIL_RETRY, compensation_retry=COMPENSATION_RETRY
            )
            instrumented = instrument(saga, switch)
            engine = Engine(store, [instrumented], lease=LEASE)
            results: list[SagaResult]
            if args.resume:
                results = await engine.resume(wait=2 * LEASE)
            else:
                order = json.loads(args.order_json)
                results = [await engine.run(instrumented, order, saga_id=args.saga_id)]
    finally:
        await store.close()
    return {
        "points": switch.points,
        "statuses": {r.saga_id: r.status.value for r in results},
    }


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", required=True, help="saga log URL, sqlite:////abs/path.db")
    parser.add_argument("--services", required=True, help="directory of the services' files")
    parser.add_argument("--order-json", default="null", help="the order (not read on --resume)")
    parser.add_argument("--saga-id", default=None)
    parser.add_argument("--kill-at", type=int, default=0, help="kill point to die at; 0: none")
    parser.add_argument("--resume", action="store_true", help="resume instead of starting")
    parser.add_argument("--email-fail-first", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    outcome = asyncio.run(run(parse(argv)))
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
