"""Recovery: a child process dies (``os._exit``) inside ``book_courier``; the parent finds
its ``step_started`` last in the log and resumes: the call is made again, same key."""

import asyncio
import json
import os
import sys
from pathlib import Path

from sagakit import Engine, RecordType, Saga, SagaStatus, StepContext, open_store

LOG = "sqlite:///crash_and_resume.db"
CALLS = Path("courier_calls.jsonl")  # what the courier service saw, one line per call
delivery = Saga("deliver_parcel", version=1)


def courier_called(key: str) -> None:
    with CALLS.open("a") as calls:
        calls.write(json.dumps({"key": key, "pid": os.getpid()}) + "\n")


def courier_calls() -> list[dict[str, object]]:
    return [json.loads(line) for line in CALLS.read_text().splitlines()]


def fresh_files() -> None:
    for stale in [*Path().glob("crash_and_resume.db*"), CALLS]:
        stale.unlink(missing_ok=True)


@delivery.pivot()
async def book_courier(ctx: StepContext) -> dict[str, str]:
    courier_called(ctx.idempotency_key)
    if sys.argv[1:] == ["crash"]:
        os._exit(9)  # dies mid-call: the outcome is never recorded
    return {"courier": "DHL", "booked_with": ctx.idempotency_key}


async def crash() -> None:
    store = await open_store(LOG)
    # a short lease, so that the survivor need not wait 30 s for the dead one's to lapse
    await Engine(store, [delivery], lease=0.5).run(delivery, {"parcel": "P-1"}, saga_id="p-1")


# --8<-- [start:resume]
async def main() -> None:
    fresh_files()
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "crash")
    assert await child.wait() == 9

    store = await open_store(LOG)
    stored = await store.load("p-1")
    assert stored is not None and stored.records[-1].type is RecordType.STEP_STARTED
    results = await Engine(store, [delivery]).resume(wait=5)  # waits for the dead lease
    # --8<-- [end:resume]
    after = await store.load("p-1")
    await store.close()
    assert after is not None
    assert [(r.type.value, r.attempt) for r in after.records[1:]] == [
        ("step_started", 1),  # by the child, which died
        ("call_taken_over", 1),  # the same call, attempt 1 still: a crash is not an attempt
        ("step_succeeded", 1),
        ("saga_completed", 0),
    ]

    [result] = results
    assert result.status is SagaStatus.COMPLETED
    calls = courier_calls()
    assert [call["key"] for call in calls] == ["p-1:book_courier:action"] * 2
    assert calls[0]["pid"] == child.pid and calls[1]["pid"] == os.getpid()
    assert result.results["book_courier"]["booked_with"] == "p-1:book_courier:action"
    print("the dead process called with", calls[0]["key"])
    print("the survivor called with   ", calls[1]["key"], "->", result.status.value)


if __name__ == "__main__":
    asyncio.run(crash() if sys.argv[1:] == ["crash"] else main())
