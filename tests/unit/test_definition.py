"""Definitions are checked when they are declared."""

from __future__ import annotations

import pytest

from sagakit import Saga, SagaDefinitionError, StepContext
from sagakit.context import CompensationContext


async def act(ctx: StepContext) -> None:
    return None


async def undo(ctx: CompensationContext) -> None:
    return None


def test_compensatable_step_needs_a_compensation() -> None:
    saga = Saga("s")
    with pytest.raises(SagaDefinitionError, match=r"saga 's', step 'act'.*needs a compensation"):
        saga.add(act)


def test_duplicate_step_names_are_rejected() -> None:
    saga = Saga("s").add(act, compensate=undo)
    with pytest.raises(SagaDefinitionError, match="duplicate"):
        saga.add(act, compensate=undo)


def test_compensatable_after_pivot_is_rejected() -> None:
    saga = Saga("s").add(act, name="p", kind="pivot")
    with pytest.raises(SagaDefinitionError, match="after the pivot"):
        saga.add(act, name="c", compensate=undo)


def test_second_pivot_is_rejected() -> None:
    saga = Saga("s").add(act, name="p", kind="pivot")
    with pytest.raises(SagaDefinitionError, match="at most one pivot"):
        saga.add(act, name="q", kind="pivot")
