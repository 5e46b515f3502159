"""Write-ahead: a step's ``step_started`` is committed before its action is called.

The action itself opens the saga log through a second connection and finds its own
``step_started`` there, the last record: had the process died inside the call, that is
what any other process would read, and it would make the call again with the same key.
"""

import asyncio
from pathlib import Path

from sagakit import Engine, RecordType, Saga, SagaStatus, StepContext, open_store

LOG = "sqlite:///write_ahead.db"
seen: list[tuple[RecordType, str | None, int]] = []  # (type, step, attempt)

# --8<-- [start:saga]
notify = Saga("notify_customer", version=1)


@notify.pivot()
async def send_sms(ctx: StepContext) -> dict[str, str]:
    other = await open_store(LOG)  # another connection: it sees only what was committed
    try:
        stored = await other.load(ctx.saga_id)
        assert stored is not None
        seen.extend((r.type, r.step, r.attempt) for r in stored.records)
    finally:
        await other.close()
    return {"sent_with_key": ctx.idempotency_key}


# --8<-- [end:saga]


def fresh_log() -> None:
    """Each run starts from an empty saga log."""
    for stale in Path().glob("write_ahead.db*"):
        stale.unlink()


async def main() -> None:
    seen.clear()
    fresh_log()
    store = await open_store(LOG)
    result = await Engine(store, [notify]).run(notify, {"phone": "+44 20 7946 0000"}, saga_id="n-1")
    await store.close()
    assert result.status is SagaStatus.COMPLETED
    assert seen == [(RecordType.SAGA_STARTED, None, 0), (RecordType.STEP_STARTED, "send_sms", 1)]
    kind, step, attempt = seen[-1]
    print("inside the call, the log ends with:", kind.value, step, attempt)


if __name__ == "__main__":
    asyncio.run(main())
