"""A failed call's traceback as the log keeps it: the traceback module's text, less carets."""

from __future__ import annotations

import re
import traceback

import pytest

from sagakit import CompensationContext, Engine, MemoryStore, Saga, SagaStatus, StepContext
from sagakit.orchestration._failure import describe

CARETS = re.compile(r"^ +[~^]+ *\n", re.MULTILINE)


def _charge(order: dict[str, int]) -> int:
    return order["total"] // order["items"]  # carets go under the division, in Python 3.11


def _call(order: dict[str, int]) -> int:
    return _charge(order)


def _caught(action: object) -> BaseException:
    try:
        action()  # type: ignore[operator]
    except BaseException as error:
        return error
    raise AssertionError("the action did not raise")


def _as_the_module_writes_it(error: BaseException) -> str:
    assert error.__traceback__ is not None
    stack = error.__traceback__.tb_next  # from below the frame that caught it, as the log
    return CARETS.sub("", "".join(traceback.format_exception(type(error), error, stack)))


def test_a_lone_error_is_written_as_the_traceback_module_writes_it_less_carets() -> None:
    error = _caught(lambda: _call({"total": 10, "items": 0}))
    described = describe(error)
    assert described["type"] == "ZeroDivisionError"
    assert described["traceback"] == _as_the_module_writes_it(error)
    assert 'in _charge\n    return order["total"] // order["items"]' in described["traceback"]
    assert "^" not in described["traceback"]


class CourierError(Exception):
    """An error of the application's own (a module's name before its type)."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


def _raise(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize(
    "error",
    [CourierError("refused"), CourierError(), ValueError(""), Unprintable("x"), KeyError("sku")],
    ids=["own type", "no message", "empty message", "str() fails", "a key error"],
)
def test_the_last_line_is_the_one_the_module_writes(error: BaseException) -> None:
    caught = _caught(lambda: _raise(error))
    assert describe(caught)["traceback"] == _as_the_module_writes_it(caught)


def _chained() -> None:
    try:
        _call({"total": 10, "items": 0})
    except ZeroDivisionError as cause:
        raise RuntimeError("the order cannot be priced") from cause


def _recursing(depth: int) -> None:
    if depth == 0:
        raise ValueError("bottom")
    _recursing(depth - 1)


def _noted() -> None:
    error = ValueError("refused")
    error.add_note("the courier's note")
    raise error


@pytest.mark.parametrize(
    "action",
    [_chained, lambda: _recursing(40), _noted, lambda: exec("1 +")],
    ids=["a cause", "a recursion", "a note", "a syntax error"],
)
def test_what_the_module_writes_its_own_way_is_left_to_it(action: object) -> None:
    error = _caught(action)
    expected = "".join(
        traceback.format_exception(type(error), error, error.__traceback__.tb_next)  # type: ignore[union-attr]
    )
    assert describe(error)["traceback"] == expected


async def test_a_step_whose_error_cannot_be_printed_still_compensates() -> None:
    saga = Saga("order")
    undone: list[str] = []

    async def undo(ctx: CompensationContext) -> None:
        undone.append(ctx.step)

    @saga.step(compensate=undo)
    async def charge(ctx: StepContext) -> str:
        return "p-1"

    @saga.step(compensate=undo)
    async def ship(ctx: StepContext) -> None:
        raise Unprintable("x")

    result = await Engine(MemoryStore(), [saga]).run(saga, {})
    assert result.status is SagaStatus.COMPENSATED
    assert undone == ["charge"]
    assert result.reason == "step 'ship' failed: <exception str() failed>"
