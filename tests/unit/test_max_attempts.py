"""``max_attempts``: a retriable step after the pivot that keeps failing ends in
``needs_attention``, where an operator sees it, instead of leaving its saga running for ever.

The pivot has succeeded, so nothing is compensated; an operator's retry grants the step as
many attempts again. A step's own finite ``Retry`` takes the same path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sagakit import (
    Client,
    Engine,
    InvalidArgumentError,
    MemoryStore,
    Retry,
    Saga,
    SagaStatus,
    StepContext,
    StepStatus,
    Worker,
)
from sagakit.log import RecordType

UNLIMITED = Retry(attempts=None, backoff=0, jitter=0)


class Mail:
    """A mail server that is down for the first ``down_for`` calls (for ever by default)."""

    def __init__(self, down_for: int | None = None) -> None:
        self.down_for = down_for
        self.calls = 0

    async def send(self, ctx: StepContext) -> str:
        self.calls += 1
        if self.down_for is None or self.calls <= self.down_for:
            raise ConnectionError("smtp down")
        return "sent"


async def charge(ctx: StepContext) -> str:
    return "charged"


def order(
    mail: Mail,
    email_retry: Retry | None = UNLIMITED,
    send: Callable[[StepContext], Awaitable[str]] | None = None,
) -> Saga:
    """Charge (the pivot), then e-mail the confirmation (retriable) with ``mail``."""
    return (
        Saga("order", 1)
        .add(charge, kind="pivot")
        .add(send or mail.send, name="send_email", kind="retriable", retry=email_retry)
    )


async def test_a_capped_step_needs_attention_after_exactly_its_attempts() -> None:
    store, mail = MemoryStore(), Mail()
    saga = order(mail)

    result = await Engine(store, [saga], max_attempts=3).run(saga, saga_id="o-1")

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert mail.calls == 3
    assert result.reason == "step 'send_email' failed 3 times after the pivot: smtp down"
    state = await Client(store).state("o-1")
    assert [s.status for s in state.steps] == [StepStatus.SUCCEEDED, StepStatus.FAILED]
    kinds = {r.type for r in state.records}
    assert RecordType.SAGA_COMPENSATING not in kinds  # past the pivot: never undone
    assert RecordType.COMPENSATION_STARTED not in kinds


async def test_an_operators_retry_gives_the_step_as_many_attempts_again() -> None:
    store, mail = MemoryStore(), Mail()
    saga = order(mail)
    engine = Engine(store, [saga], max_attempts=3)
    await engine.run(saga, saga_id="o-1")

    await Client(store).retry("o-1", note="smtp is back", by="ops")
    [result] = await engine.resume()

    assert result.status is SagaStatus.NEEDS_ATTENTION  # still down
    assert mail.calls == 6
    assert result.reason == "step 'send_email' failed 6 times after the pivot: smtp down"


async def test_after_a_retry_the_step_may_succeed() -> None:
    store, mail = MemoryStore(), Mail(down_for=3)
    saga = order(mail)
    engine = Engine(store, [saga], max_attempts=3)
    await engine.run(saga, saga_id="o-1")

    await Client(store).retry("o-1")
    [result] = await engine.resume()

    assert result.status is SagaStatus.COMPLETED
    assert mail.calls == 4
    assert result.results["send_email"] == "sent"


@pytest.mark.parametrize(
    ("cap", "own", "attempts"),
    [
        (None, Retry(attempts=3, backoff=0, jitter=0), 3),
        (3, Retry(attempts=5, backoff=0, jitter=0), 5),  # a finite policy is the step's own
        (None, Retry(attempts=1), 1),
    ],
)
async def test_a_finite_own_retry_takes_the_same_path(
    cap: int | None, own: Retry, attempts: int
) -> None:
    store, mail = MemoryStore(), Mail()
    saga = order(mail, own)

    result = await Engine(store, [saga], max_attempts=cap).run(saga)

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert mail.calls == attempts
    times = "once" if attempts == 1 else f"{attempts} times"
    assert result.reason == f"step 'send_email' failed {times} after the pivot: smtp down"


async def test_a_failure_no_retry_mends_says_so_without_a_count() -> None:
    store, mail = MemoryStore(), Mail()
    saga = order(mail, Retry(attempts=None, backoff=0, jitter=0, retry_on=(TimeoutError,)))

    result = await Engine(store, [saga], max_attempts=3).run(saga)

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert mail.calls == 1
    assert result.reason == "step 'send_email' failed after the pivot: smtp down"


async def test_without_a_cap_an_unlimited_step_keeps_its_saga_running() -> None:
    store, mail = MemoryStore(), Mail(down_for=9)
    seen: list[SagaStatus] = []

    async def watch_then_send(ctx: StepContext) -> str:
        stored = await store.load(ctx.saga_id)
        assert stored is not None
        seen.append(stored.instance.status)
        return await mail.send(ctx)

    saga = order(mail, send=watch_then_send)
    result = await Engine(store, [saga]).run(saga)

    assert mail.calls == 10  # far past any cap: nine failures, then it went through
    assert seen == [SagaStatus.RUNNING] * 10
    assert result.status is SagaStatus.COMPLETED


async def test_the_cap_is_for_retriable_steps_only() -> None:
    store, mail = MemoryStore(), Mail(down_for=2)
    saga = Saga("order", 1).add(mail.send, name="charge", kind="pivot", retry=UNLIMITED)

    result = await Engine(store, [saga], max_attempts=1).run(saga)

    assert result.status is SagaStatus.COMPLETED
    assert mail.calls == 3


async def test_a_worker_applies_the_cap() -> None:
    store, mail = MemoryStore(), Mail()
    saga = order(mail)
    stop = asyncio.Event()
    worker = Worker(store, [saga], poll=0.01, max_attempts=2)
    task = asyncio.ensure_future(worker.run(stop))
    client = Client(store)
    try:
        saga_id = await client.start(saga)
        result = await client.result(saga_id, timeout=10)  # a safety net, not a measurement
    finally:
        stop.set()
        await task

    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert mail.calls == 2
    assert result.reason == "step 'send_email' failed 2 times after the pivot: smtp down"


@pytest.mark.parametrize("cap", [0, -1])
def test_a_cap_below_one_is_refused(cap: int) -> None:
    with pytest.raises(InvalidArgumentError, match="max_attempts must be at least 1"):
        Engine(MemoryStore(), max_attempts=cap)
