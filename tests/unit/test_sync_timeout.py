"""A sync step that times out keeps running in its thread: its undo must not overtake it.

With ``compensate_on_failure`` the compensation of a timed-out plain ``def`` action waits for
the action's thread to finish, so the late effect is undone after it happened; an action
still running past that wait is not undone, and the saga needs attention, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

from sagakit import (
    Client,
    CompensationContext,
    Engine,
    MemoryStore,
    Saga,
    SagaStatus,
    StepContext,
    StepStatus,
)
from sagakit.orchestration import _driver

TIMEOUT = 0.05
BOUNDED = 10.0
"""Seconds a test thread waits at most for what the test will tell it (a safety net)."""


class _TimedOut(logging.Handler):
    """Sets ``event`` once the engine logs that a call timed out: the moment its thread is
    late, which nothing else in the engine announces."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "StepTimeoutError" in record.getMessage():
            self.event.set()


@pytest.fixture
def timed_out() -> Iterator[threading.Event]:
    event = threading.Event()
    handler = _TimedOut(event)
    logger = logging.getLogger("sagakit.orchestration")
    logger.addHandler(handler)
    try:
        yield event
    finally:
        logger.removeHandler(handler)


class Effects:
    """What the step's service did, in order, from whichever thread did it."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.finished = threading.Event()
        self._lock = threading.Lock()

    def add(self, effect: str) -> None:
        with self._lock:
            self.done.append(effect)


def slow_saga(effects: Effects, go_on: threading.Event) -> Saga:
    """``reserve`` then ``slow``, a plain def that goes on past its timeout until ``go_on``."""

    async def reserve(ctx: StepContext) -> str:
        effects.add("do:reserve")
        return "r-1"

    async def release(ctx: CompensationContext) -> None:
        effects.add("undo:reserve")

    def slow(ctx: StepContext) -> str:
        go_on.wait(BOUNDED)
        effects.add("do:slow(late)")
        effects.finished.set()
        return "late"

    def undo_slow(ctx: CompensationContext) -> None:
        effects.add("undo:slow")

    return (
        Saga("slow")
        .add(reserve, compensate=release)
        .add(slow, compensate=undo_slow, timeout=TIMEOUT, compensate_on_failure=True)
    )


async def test_the_late_effect_is_undone_after_it_happened(timed_out: threading.Event) -> None:
    effects = Effects()
    engine = Engine(MemoryStore())

    result = await engine.run(slow_saga(effects, go_on=timed_out), saga_id="s")

    assert result.status is SagaStatus.COMPENSATED
    assert effects.done == ["do:reserve", "do:slow(late)", "undo:slow", "undo:reserve"]
    state = await engine.status("s")
    error = state.by_name["slow"].error
    assert error is not None and "StepTimeoutError" in error["type"]
    assert state.by_name["slow"].status is StepStatus.COMPENSATED


async def test_an_action_still_running_is_not_undone_and_the_saga_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_driver, "LATE_ACTION_WAIT", 0.1)  # a test need not wait a second
    effects, go_on = Effects(), threading.Event()
    store = MemoryStore()
    engine = Engine(store)
    try:
        result = await engine.run(slow_saga(effects, go_on), saga_id="s")
        assert effects.done == ["do:reserve", "undo:reserve"]  # the other step is undone
    finally:
        go_on.set()
    assert result.status is SagaStatus.NEEDS_ATTENTION
    assert result.failed_compensations == ("slow",)
    assert result.reason is not None
    assert "compensation did not finish for slow (its action may still be running)" in (
        result.reason
    )
    slow = (await engine.status("s")).by_name["slow"]
    assert slow.status is StepStatus.COMPENSATION_FAILED
    assert slow.compensation_error is not None
    assert "may still be running" in slow.compensation_error["message"]

    # Once the action is over, an operator's retry undoes it, after its effect.
    assert await asyncio.to_thread(effects.finished.wait, BOUNDED)
    await Client(store).retry("s", note="the slow call has finished")
    again = await engine.resume_saga("s")
    assert again.status is SagaStatus.COMPENSATED
    assert effects.done == ["do:reserve", "undo:reserve", "do:slow(late)", "undo:slow"]


async def test_a_sync_action_within_its_timeout_is_not_waited_for_again() -> None:
    calls: list[str] = []

    def quick(ctx: StepContext) -> str:
        calls.append("do")
        return "ok"

    def undo(ctx: CompensationContext) -> None:
        calls.append("undo")

    async def fails(ctx: StepContext) -> None:
        raise RuntimeError("declined")

    saga = (
        Saga("quick")
        .add(quick, compensate=undo, timeout=BOUNDED, compensate_on_failure=True)
        .add(fails, kind="pivot")
    )
    engine = Engine(MemoryStore())
    result = await engine.run(saga)
    assert result.status is SagaStatus.COMPENSATED
    assert calls == ["do", "undo"]
    assert not engine._late_calls  # nothing left running, nothing remembered
