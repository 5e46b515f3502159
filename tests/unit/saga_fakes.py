"""Scripted fake actions and compensations that record every call, for the engine's unit tests."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sagakit import CompensationContext, SagaState, StepContext
from sagakit.log import Record, RecordType

ActionFn = Callable[[StepContext], Awaitable[Any]]
CompensationFn = Callable[[CompensationContext], Awaitable[Any]]


class Crash(BaseException):
    """Simulated death of the process: not an ``Exception``, so the engine cannot absorb it."""


@dataclass(frozen=True)
class Call:
    """One call the engine made to a fake."""

    role: str
    """``"action"`` or ``"compensation"``."""
    step: str
    attempt: int
    key: str
    ctx: StepContext | CompensationContext
    thread: int
    results: dict[str, Any]
    """``ctx.results`` as the call saw it, decoded when it was made."""


class Recorder:
    """Makes fakes whose behaviour is scripted call by call, and records their calls."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def _record(self, role: str, ctx: StepContext | CompensationContext) -> None:
        self.calls.append(
            Call(
                role,
                ctx.step,
                ctx.attempt,
                ctx.idempotency_key,
                ctx,
                threading.get_ident(),
                dict(ctx.results),
            )
        )

    def action(
        self,
        step: str,
        result: Any = None,
        *,
        raises: Iterable[BaseException] = (),
        always: BaseException | None = None,
    ) -> ActionFn:
        """An async action named ``step``: raises each of ``raises`` in turn, then ``always``
        on every later call if given, else returns ``result``."""
        script = list(raises)

        async def act(ctx: StepContext) -> Any:
            self._record("action", ctx)
            if script:
                raise script.pop(0)
            if always is not None:
                raise always
            return result

        act.__name__ = act.__qualname__ = step
        return act

    def compensation(
        self,
        step: str,
        *,
        raises: Iterable[BaseException] = (),
        always: BaseException | None = None,
    ) -> CompensationFn:
        """An async compensation, scripted like :meth:`action`."""
        script = list(raises)

        async def undo(ctx: CompensationContext) -> None:
            self._record("compensation", ctx)
            if script:
                raise script.pop(0)
            if always is not None:
                raise always

        undo.__name__ = undo.__qualname__ = f"undo_{step}"
        return undo

    def of(self, role: str, step: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.role == role and (step is None or c.step == step)]

    def order(self) -> list[tuple[str, str]]:
        """Every call as ``(role, step)``, in call order."""
        return [(c.role, c.step) for c in self.calls]

    def count(self, role: str, step: str) -> int:
        return len(self.of(role, step))


def kinds(state: SagaState) -> list[tuple[str, str | None, int]]:
    """The log as ``(record type, step, attempt)`` triples."""
    return [(r.type.value, r.step, r.attempt) for r in state.records]


def records_of(state: SagaState, kind: RecordType, step: str | None = None) -> list[Record]:
    return [r for r in state.records if r.type is kind and (step is None or r.step == step)]
