"""How far the engine's driving is from the cost of its own data (``python -m
benchmarks.memory_floor``).

The memory store's target is a ratio to the hand-written orchestrator. This runs three
subjects interleaved in one process, each on the same order saga: the hand-written
orchestrator, ``Engine.run`` on a :class:`~sagakit.MemoryStore`, and a *straight line*: a
function that makes the very records, state, contexts, store writes and result the engine
makes for a saga that succeeds, in the engine's order, with none of the engine around them
(no driver, lease, error handling, retries or waits). The straight line is what any driver
of these data structures costs at least; the gap to ``Engine.run`` is all that driving
could ever win back. Each straight-line log is checked whole, as the suite checks the
engine's, so it cannot post a figure by skipping work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

from benchmarks.order import ORDER, Clients, build_order_saga
from benchmarks.subjects import HandWritten, OnEngine, whole_logs
from sagakit import MemoryStore, SagaStatus
from sagakit.log._codec import encode
from sagakit.log._fast import RecordTypes
from sagakit.orchestration._context import StepContext
from sagakit.orchestration._engine import SagaResult
from sagakit.orchestration._plan import Plan, new_saga_id

OWNER = "floor"
LEASE = 30.0


class StraightLine:
    """One succeeding saga's records, state, contexts and writes, made in a straight line."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.saga = build_order_saga(Clients.fake())
        self._plan = Plan(self.saga)
        self._started_by = encode({"holder": OWNER})

    async def run_one(self) -> bool:
        saga, store, started_by = self.saga, self.store, self._started_by
        saga_id = new_saga_id()
        journal = self._plan.begin(saga_id, ORDER)
        state = journal.state
        for position, step in enumerate(saga.steps):
            journal.add(RecordTypes.STEP_STARTED, step.name, 1, started_by)
            records = journal.take()
            if position == 0:
                instance = journal.new_instance(
                    lease_owner=OWNER, lease_expires=records[0].at + LEASE
                )
                await store.create(instance, records)
            else:
                await store.append(saga_id, records, state.status)
            key = f"{saga_id}:{step.name}:action"
            ctx = StepContext(
                saga_id, saga.name, step.name, 1, key, state.input_json, state.results
            )
            journal.add(RecordTypes.STEP_SUCCEEDED, step.name, 1, encode(await step.action(ctx)))
        journal.add(RecordTypes.SAGA_COMPLETED)
        await store.append(saga_id, journal.take(), state.status)
        return SagaResult.of(state).status is SagaStatus.COMPLETED


async def _rate(run_one: Callable[[], Awaitable[bool]], sagas: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(sagas):
        if not await run_one():
            raise SystemExit("a saga did not complete")
    rate = sagas / (time.perf_counter() - start)
    await asyncio.sleep(0)  # no saga suspends: let the loop run its timers between runs
    return rate


async def measure(sagas: int, rounds: int) -> dict[str, float]:
    """Median sagas/s of each subject, over ``rounds`` interleaved runs of ``sagas``."""
    subjects = {
        "hand-written orchestrator": HandWritten().run_one,
        "sagakit Engine.run on MemoryStore": OnEngine(MemoryStore()).run_one,
    }
    line = StraightLine()
    subjects["its data in a straight line (no engine)"] = line.run_one
    for run_one in subjects.values():
        await _rate(run_one, max(sagas // 10, 10))
    rates: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, run_one in subjects.items():
            runs = sagas * 20 if name.startswith("hand") else sagas
            rates[name].append(await _rate(run_one, runs))
    expected = max(sagas // 10, 10) + rounds * sagas
    whole = await whole_logs(line.store)
    if whole != expected or len(await line.store.instances()) != expected:
        raise SystemExit(f"the straight line left {whole:,} whole logs of {expected:,}")
    return {name: statistics.median(found) for name, found in rates.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_floor")
    parser.add_argument("--sagas", type=int, default=30_000, help="sagas a run (x20 hand-written)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    medians = asyncio.run(measure(args.sagas, args.rounds))
    hand = next(iter(medians.values()))
    for name, rate in medians.items():
        print(f"{name:42s} {rate:>11,.0f} sagas/s  {1e6 / rate:6.2f} us  {rate / hand:.4f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
