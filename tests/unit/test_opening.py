"""Property: the row and ``saga_started`` record a client stores for a new instance
(``Plan.opening``, which folds no state) are those a begun journal makes, for any input,
deadline, redaction and trace, and fold into the same state."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import json_values

from sagakit import Saga, SagaState, StepContext
from sagakit.errors import SerializationError
from sagakit.orchestration._plan import Plan


def saga(deadline: float | None, redact: tuple[str, ...]) -> Saga:
    async def step(ctx: StepContext) -> None:
        return None

    return Saga("order", 3, deadline=deadline, redact=redact).add(step, name="charge", kind="pivot")


@given(
    json_values,
    st.sampled_from([None, 30.0]),
    st.sampled_from([(), ("card",)]),
    st.sampled_from([None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]),
)
def test_an_opening_is_what_a_begun_journal_records(
    value: Any, deadline: float | None, redact: tuple[str, ...], trace: str | None
) -> None:
    plan = Plan(saga(deadline, redact))
    with patch("time.time", return_value=1_000.5):  # both made at the same instant
        row, record = plan.opening("s-1", value, trace)
        journal = plan.begin("s-1", value, trace)
    assert row == journal.new_instance(due_at=record.at)
    assert [record] == journal.take()
    folded = SagaState.from_records("s-1", [record])
    assert folded.as_dict() == journal.state.as_dict()
    assert folded.deadline_at == (None if deadline is None else 1_000.5 + deadline)


def test_an_opening_of_an_input_that_is_not_json_is_refused() -> None:
    with pytest.raises(SerializationError, match="order"):
        Plan(saga(None, ())).opening("s-1", object())
