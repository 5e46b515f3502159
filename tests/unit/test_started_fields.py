"""Property: a worker that reads a ``saga_started`` record through its registered definition
(``Plan.started_fields``) folds exactly the state any reader folds from the same record, and
falls back to reading it whole wherever it was not written by that definition untimed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import json_values

from sagakit import Saga, SagaState, StepContext
from sagakit.log import Record
from sagakit.log._codec import encode
from sagakit.orchestration._plan import Plan


def saga(
    name: str = "order", *, deadline: float | None = None, redact: tuple[str, ...] = ()
) -> Saga:
    async def step(ctx: StepContext) -> None:
        return None

    return Saga(name, 2, deadline=deadline, redact=redact).add(step, name="charge", kind="pivot")


def started_record(plan: Plan, value: Any, trace: str | None = None) -> Record:
    journal = plan.begin("s-1", value, trace)
    return journal.take()[0]


@given(json_values, st.sampled_from([(), ("card",)]))
def test_the_definitions_reading_folds_the_state_any_reader_folds(
    value: Any, redact: tuple[str, ...]
) -> None:
    plan = Plan(saga(redact=redact))
    record = started_record(plan, value)
    assert record.data is not None
    fields = plan.started_fields(record.data)
    assert fields is not None
    assert fields["input_json"] == encode(value)
    fast, read = (
        SagaState.from_records("s-1", [record], fields),
        SagaState.from_records("s-1", [record]),
    )
    assert fast.redaction.paths == read.redaction.paths == redact
    fast.redaction = read.redaction  # compared by identity
    assert fast == read


@pytest.mark.parametrize(
    ("why", "data"),
    [
        (
            "traced",
            lambda plan: started_record(plan, 1, "00-" + "a" * 32 + "-" + "b" * 16 + "-01").data,
        ),
        ("another definition", lambda plan: started_record(Plan(saga("trip")), 1).data),
        ("a field after the input", lambda plan: f'{plan.untimed}1,"more":2}}'),
        ("the input cut short", lambda plan: f'{plan.untimed}{{"a":}}'),
        ("no closing brace", lambda plan: f"{plan.untimed}1"),
        ("spaced out by another writer", lambda plan: plan.untimed.replace(",", ", ") + "1}"),
    ],
)
def test_anything_else_is_read_as_any_reader_reads_it(why: str, data: Any) -> None:
    plan = Plan(saga())
    assert plan.started_fields(data(plan)) is None, why


def test_a_saga_with_a_deadline_is_read_as_any_reader_reads_it() -> None:
    plan = Plan(saga(deadline=60.0))
    record = started_record(plan, {"id": 1})
    assert record.data is not None and plan.started_fields(record.data) is None
    assert SagaState.from_records("s-1", [record]).deadline_at == pytest.approx(record.at + 60)
