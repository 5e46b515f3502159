"""Choreography declarations: every mistake is caught when the choreography is declared."""

from __future__ import annotations

from typing import Any

import pytest

from sagakit.choreography import Choreography, ChoreographyStep, StepOutcome
from sagakit.choreography._definition import Role
from sagakit.errors import SagaDefinitionError


def declare(**overrides: Any) -> Choreography:
    fields: dict[str, Any] = {
        "steps": [
            ChoreographyStep("create", succeeded="Created", compensated="Cancelled"),
            ChoreographyStep("pay", succeeded=("Paid", "PaidLater"), failed="Declined"),
            ChoreographyStep("ship", succeeded="Shipped", kind="pivot"),
        ],
        "starts": "Created",
        "completes": "Shipped",
        "fails": "Declined",
        "compensated": "Cancelled",
        "max_gap": 10,
    }
    fields.update(overrides)
    return Choreography("flow", 3, **fields)


def test_a_declaration_maps_each_event_to_its_step_and_outcome() -> None:
    flow = declare()
    assert flow.key == "flow@3"
    assert flow.role("PaidLater") == Role("pay", StepOutcome.SUCCEEDED)
    assert flow.role("Cancelled") == Role("create", StepOutcome.COMPENSATED)
    assert flow.role("Unknown") is None
    assert flow.starts == {"Created"} and flow.fails == {"Declined"}
    assert flow.steps_meta[2] == {"name": "ship", "kind": "pivot"}
    assert flow.event_types == {"Created", "Cancelled", "Paid", "PaidLater", "Declined", "Shipped"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": []}, "at least one step"),
        ({"starts": ()}, "start and complete"),
        ({"completes": "Nope"}, r"completes: \['Nope'\] are not events of a step"),
        ({"compensated": "Shipped"}, "cannot end it two ways"),
        ({"max_gap": 0}, "max_gap must be positive"),
        ({"max_gap": float("nan")}, "max_gap must be positive"),
        (
            {"steps": [ChoreographyStep("a", succeeded="Created"), ChoreographyStep("a")]},
            "duplicate step name",
        ),
        (
            {"steps": [ChoreographyStep("a", succeeded="Created", failed="Created")]},
            "'Created' is declared twice",
        ),
        ({"steps": [ChoreographyStep("a", succeeded="Created", kind="sideways")]}, "kind must"),
        (
            {"steps": [ChoreographyStep("a", succeeded="Created", compensated="X", kind="pivot")]},
            "a pivot step is never compensated",
        ),
        ({"steps": [ChoreographyStep("a:b", succeeded="Created")]}, "bad step name"),
        ({"fails": [""]}, "non-empty text"),
    ],
)
def test_mistakes_are_refused_when_declared(overrides: dict[str, Any], message: str) -> None:
    if "steps" in overrides and overrides["steps"] and "completes" not in overrides:
        overrides = {"completes": "Created", "fails": (), "compensated": (), **overrides}
    with pytest.raises(SagaDefinitionError, match=message):
        declare(**overrides)


def test_name_and_version_are_checked() -> None:
    with pytest.raises(SagaDefinitionError, match="non-empty name"):
        Choreography("", steps=[], starts=(), completes=())
    with pytest.raises(SagaDefinitionError, match="positive int"):
        Choreography("x", 0, steps=[], starts=(), completes=())
