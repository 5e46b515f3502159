"""Definitions are checked when they are declared."""

from __future__ import annotations

from typing import Any

import pytest

from sagakit import (
    Engine,
    MemoryStore,
    Retry,
    Saga,
    SagaDefinitionError,
    Step,
    StepContext,
    StepKind,
)
from sagakit._retry import COMPENSATION_RETRY, FOREVER, NO_RETRY
from sagakit.orchestration import CompensationContext


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


# --- every rule, each naming the saga and the step -------------------------------------------


def test_duplicate_name_error_names_saga_and_step() -> None:
    saga = Saga("orders").add(act, name="reserve", compensate=undo)
    with pytest.raises(SagaDefinitionError) as caught:
        saga.add(act, name="reserve", compensate=undo)
    assert caught.value.saga == "orders"
    assert caught.value.step == "reserve"
    assert str(caught.value).startswith("saga 'orders', step 'reserve': ")


def test_duplicate_name_across_kinds_is_rejected() -> None:
    saga = Saga("s").add(act, name="x", compensate=undo)
    with pytest.raises(SagaDefinitionError, match=r"step 'x'.*duplicate"):
        saga.add(act, name="x", kind=StepKind.PIVOT)


def test_compensatable_after_retriable_is_rejected() -> None:
    saga = Saga("s").add(act, name="r", kind="retriable")
    with pytest.raises(SagaDefinitionError, match=r"step 'c'.*after the pivot or a retriable"):
        saga.add(act, name="c", compensate=undo)


def test_pivot_after_retriable_is_rejected() -> None:
    saga = Saga("s").add(act, name="r", kind="retriable")
    with pytest.raises(SagaDefinitionError, match=r"step 'p'.*pivot cannot come after a retriable"):
        saga.add(act, name="p", kind="pivot")


def test_retriable_after_pivot_and_several_retriables_are_allowed() -> None:
    saga = (
        Saga("s")
        .add(act, name="c", compensate=undo)
        .add(act, name="p", kind="pivot")
        .add(act, name="r1", kind="retriable")
        .add(act, name="r2", kind="retriable")
    )
    assert [(s.name, s.kind) for s in saga.steps] == [
        ("c", StepKind.COMPENSATABLE),
        ("p", StepKind.PIVOT),
        ("r1", StepKind.RETRIABLE),
        ("r2", StepKind.RETRIABLE),
    ]


@pytest.mark.parametrize("kind", ["pivot", "retriable"])
def test_compensation_on_a_forward_only_step_is_rejected(kind: str) -> None:
    with pytest.raises(SagaDefinitionError, match=rf"step 'x'.*{kind} step is never compensated"):
        Saga("s").add(act, name="x", kind=kind, compensate=undo)


def test_pivot_with_compensation_and_compensate_on_failure_is_allowed() -> None:
    saga = Saga("s").add(act, name="p", kind="pivot", compensate=undo, compensate_on_failure=True)
    assert saga.get("p").compensation is undo
    assert saga.get("p").compensate_on_failure


def test_compensate_on_failure_without_compensation_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match=r"step 'p'.*needs a compensation"):
        Saga("s").add(act, name="p", kind="pivot", compensate_on_failure=True)


def test_retriable_with_compensate_on_failure_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match=r"step 'r'.*retriable step never fails"):
        Saga("s").add(act, name="r", kind="retriable", compensate=undo, compensate_on_failure=True)


def test_compensatable_with_compensate_on_failure_is_allowed() -> None:
    saga = Saga("s").add(act, name="c", compensate=undo, compensate_on_failure=True)
    assert saga.get("c").compensate_on_failure


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.001])
def test_non_positive_timeout_is_rejected(timeout: float) -> None:
    with pytest.raises(SagaDefinitionError, match=r"step 'act'.*timeout must be positive"):
        Saga("s").add(act, compensate=undo, timeout=timeout)


def test_nan_timeout_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match="timeout"):
        Saga("s").add(act, compensate=undo, timeout=float("nan"))


def test_positive_timeout_is_kept() -> None:
    assert Saga("s").add(act, compensate=undo, timeout=0.5).get("act").timeout == 0.5


def test_unknown_kind_string_is_rejected() -> None:
    with pytest.raises(
        SagaDefinitionError, match=r"saga 's'.*unknown step kind 'pivott'"
    ) as caught:
        Saga("s").add(act, compensate=undo, kind="pivott")
    assert "compensatable, pivot, retriable" in str(caught.value)


def test_unknown_kind_error_names_the_step() -> None:
    with pytest.raises(SagaDefinitionError) as caught:
        Saga("s").add(act, name="reserve", compensate=undo, kind="pivott")
    assert caught.value.step == "reserve"


def test_kind_strings_are_accepted_by_the_builder() -> None:
    saga = Saga("s").add(act, name="p", kind="pivot").add(act, name="r", kind="retriable")
    assert saga.get("p").kind is StepKind.PIVOT
    assert saga.get("r").kind is StepKind.RETRIABLE


def test_step_built_with_a_kind_string_is_checked() -> None:
    bogus: Any = "bogus"
    with pytest.raises(SagaDefinitionError, match="unknown step kind"):
        Saga("s", steps=[Step("x", act, kind=bogus)])


def test_lambda_without_name_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match=r"saga 's'.*give the step a name="):
        Saga("s").add(lambda ctx: None, compensate=undo)


def test_lambda_with_name_is_accepted() -> None:
    saga = Saga("s").add(lambda ctx: 1, name="one", compensate=lambda ctx: None)
    assert [s.name for s in saga.steps] == ["one"]
    assert not saga.get("one").action_is_async


def test_non_callable_action_and_compensation_are_rejected() -> None:
    not_callable: Any = 42
    with pytest.raises(SagaDefinitionError, match=r"step 'x'.*action is not callable"):
        Saga("s").add_step(Step("x", not_callable, undo))
    with pytest.raises(SagaDefinitionError, match=r"step 'x'.*compensation is not callable"):
        Saga("s").add_step(Step("x", act, not_callable))


def test_empty_step_name_is_rejected() -> None:
    with pytest.raises(SagaDefinitionError, match="step name must be a non-empty string"):
        Saga("s").add_step(Step("", act, undo))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("",), {}, "non-empty string name"),
        (("s", 0), {}, "version must be a positive int"),
        (("s", -1), {}, "version must be a positive int"),
        (("s",), {"deadline": 0}, "deadline must be positive"),
        (("s",), {"deadline": -5.0}, "deadline must be positive"),
    ],
)
def test_bad_saga_headers_are_rejected(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SagaDefinitionError, match=message):
        Saga(*args, **kwargs)


def test_a_rejected_step_leaves_the_saga_unchanged() -> None:
    saga = Saga("s").add(act, name="a", compensate=undo).add(act, name="p", kind="pivot")
    with pytest.raises(SagaDefinitionError):
        saga.add(act, name="c", compensate=undo)
    assert [s.name for s in saga.steps] == ["a", "p"]
    with pytest.raises(KeyError):
        saga.get("c")
    saga.add(act, name="c", kind="retriable")  # the name is still free
    assert [s.name for s in saga.steps] == ["a", "p", "c"]


# --- the three ways to declare -------------------------------------------------------------


def test_builder_chains_and_keeps_order() -> None:
    saga = Saga("place_order", version=3, deadline=30)
    returned = saga.add(act, name="reserve", compensate=undo, retry=Retry(attempts=3))
    assert returned is saga
    saga.add(act, name="charge", kind=StepKind.PIVOT, timeout=2.0).add(
        act, name="email", kind="retriable"
    )
    assert saga.key == "place_order@3"
    assert saga.deadline == 30
    assert [s.name for s in saga.steps] == ["reserve", "charge", "email"]
    reserve = saga.get("reserve")
    assert reserve.action is act
    assert reserve.compensation is undo
    assert reserve.retry == Retry(attempts=3)
    assert reserve.compensation_retry == COMPENSATION_RETRY
    assert saga.get("charge").timeout == 2.0
    assert "place_order" in repr(saga)
    assert "reserve" in repr(saga)


def test_builder_names_a_step_after_its_function() -> None:
    saga = Saga("s").add(act, compensate=undo)
    assert saga.steps[0].name == "act"


def test_decorator_style() -> None:
    order = Saga("place_order")

    async def release(ctx: CompensationContext) -> None:
        return None

    @order.step(compensate=release, retry=Retry(attempts=2, backoff=0))
    async def reserve(ctx: StepContext) -> str:
        return "r-1"

    @order.pivot(timeout=5.0)
    async def charge(ctx: StepContext) -> str:
        return "c-1"

    @order.retriable(name="send_email")
    def email(ctx: StepContext) -> None:
        return None

    assert [(s.name, s.kind) for s in order.steps] == [
        ("reserve", StepKind.COMPENSATABLE),
        ("charge", StepKind.PIVOT),
        ("send_email", StepKind.RETRIABLE),
    ]
    # the decorator returns the function unchanged
    assert order.get("reserve").action is reserve
    assert order.get("charge").action is charge
    assert order.get("send_email").action is email
    assert order.get("reserve").compensation is release
    assert order.get("reserve").retry == Retry(attempts=2, backoff=0)
    assert order.get("charge").timeout == 5.0
    assert order.get("reserve").action_is_async
    assert not order.get("send_email").action_is_async


def test_decorator_applies_the_rules() -> None:
    order = Saga("s")

    @order.pivot()
    async def charge(ctx: StepContext) -> None:
        return None

    with pytest.raises(SagaDefinitionError, match=r"saga 's', step 'reserve'.*after the pivot"):

        @order.step(compensate=undo)
        async def reserve(ctx: StepContext) -> None:
            return None


def test_steps_argument() -> None:
    saga = Saga(
        "s",
        2,
        steps=[
            Step("a", act, undo),
            Step("p", act, kind=StepKind.PIVOT),
            Step("r", act, kind=StepKind.RETRIABLE, retry=Retry(attempts=4)),
        ],
    )
    assert saga.key == "s@2"
    assert [s.name for s in saga.steps] == ["a", "p", "r"]


def test_steps_argument_applies_the_rules() -> None:
    with pytest.raises(SagaDefinitionError, match=r"saga 's', step 'b'.*after the pivot"):
        Saga("s", steps=[Step("p", act, kind=StepKind.PIVOT), Step("b", act, undo)])
    with pytest.raises(SagaDefinitionError, match=r"step 'a'.*duplicate"):
        Saga("s", steps=[Step("a", act, undo), Step("a", act, undo)])


def test_default_retry_policies_by_kind() -> None:
    saga = (
        Saga("s")
        .add(act, name="c", compensate=undo)
        .add(act, name="p", kind="pivot")
        .add(act, name="r", kind="retriable")
        .add(act, name="r2", kind="retriable", retry=Retry(attempts=2))
    )
    assert saga.get("c").retry_policy is NO_RETRY
    assert saga.get("p").retry_policy is NO_RETRY
    assert saga.get("r").retry_policy is FOREVER
    assert FOREVER.attempts is None
    assert saga.get("r2").retry_policy == Retry(attempts=2)


def test_callable_object_with_async_call_is_detected_as_async() -> None:
    class Charge:
        async def __call__(self, ctx: StepContext) -> None:
            return None

    class Refund:
        def __call__(self, ctx: CompensationContext) -> None:
            return None

    step = Step("charge", Charge(), Refund())
    assert step.action_is_async
    assert not step.compensation_is_async


# --- registering with an engine ----------------------------------------------------------


async def test_engine_rejects_a_saga_without_steps() -> None:
    engine = Engine(MemoryStore())
    with pytest.raises(SagaDefinitionError, match=r"saga 'empty'.*at least one step"):
        await engine.run(Saga("empty"))


def test_engine_rejects_two_definitions_under_one_key() -> None:
    first = Saga("s").add(act, compensate=undo)
    second = Saga("s").add(act, compensate=undo)
    engine = Engine(MemoryStore(), [first])
    engine.register(first)  # the same object again is a no-op
    with pytest.raises(SagaDefinitionError, match=r"already registered as s@1"):
        engine.register(second)
    engine.register(Saga("s", 2).add(act, compensate=undo))  # another version is fine
