"""Saga definitions: a named, versioned list of steps, checked when it is declared."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sagakit._retry import COMPENSATION_RETRY, FOREVER, NO_RETRY, Retry
from sagakit.errors import SagaDefinitionError
from sagakit.log import StepKind, redaction_paths
from sagakit.orchestration._context import CompensationContext, StepContext

Action = Callable[[StepContext], Awaitable[Any]] | Callable[[StepContext], Any]
Compensation = (
    Callable[[CompensationContext], Awaitable[Any]] | Callable[[CompensationContext], Any]
)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Step:
    """One local transaction and, if it can be undone, how to undo it."""

    name: str
    action: Action
    compensation: Compensation | None = None
    kind: StepKind = StepKind.COMPENSATABLE
    retry: Retry | None = None
    compensation_retry: Retry = COMPENSATION_RETRY
    timeout: float | None = None
    """Seconds one call of the action (or of the compensation) may take; past it the call
    fails with :class:`~sagakit.errors.StepTimeoutError` (and is retried if the policy
    allows). An ``async def`` call is cancelled. A plain ``def`` runs in a thread, which
    cannot be stopped: it goes on, so with ``compensate_on_failure`` its compensation waits
    for it to finish (as long again as the timeout, at least a second) and never undoes an
    action that is still running; one still running then is not undone, and the saga ends
    ``needs_attention`` saying the action may still be running (retry it once it is over)."""
    compensate_on_failure: bool = False
    """Compensate the step even when its action failed, as it may have done part of its work."""
    action_is_async: bool = field(init=False, repr=False, compare=False, default=False)
    compensation_is_async: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_is_async", _is_async(self.action))
        if self.compensation is not None:
            object.__setattr__(self, "compensation_is_async", _is_async(self.compensation))

    @property
    def retry_policy(self) -> Retry:
        """The policy in force: the step's own, else its kind's default."""
        if self.retry is not None:
            return self.retry
        return FOREVER if self.kind is StepKind.RETRIABLE else NO_RETRY

    def retry_capped(self, max_attempts: int | None) -> Retry:
        """The policy in force where workers cap retriable steps at ``max_attempts`` (None:
        no cap): an unlimited retriable step gets that limit, so an outage after the pivot
        ends in ``needs_attention`` instead of retrying unseen; a finite policy is the
        step's own choice and is kept."""
        policy = self.retry_policy
        if max_attempts is None or self.kind is not StepKind.RETRIABLE:
            return policy
        if policy.attempts is not None:
            return policy
        return replace(policy, attempts=max_attempts)


DEFAULT_QUEUE = "default"
"""The queue of a saga that names none."""


class Saga:
    """A saga definition: a name, a version and an ordered list of steps.

    Declare steps with the decorator::

        order = Saga("place_order", version=1)

        @order.step(compensate=refund_payment, retry=Retry(attempts=3))
        async def charge_payment(ctx): ...

    or with the builder, ``Saga("place_order", 1).add(charge_payment, compensate=...)``,
    or all at once with ``Saga("place_order", 1, steps=[Step(...), ...])``. Every rule is
    checked as each step is added, so a wrong definition fails at import, not at 3 a.m.

    ``deadline`` (seconds) bounds the time from start to the pivot; past it the saga
    compensates. Steps after the pivot are not bound by it: they can only go forward.

    ``queue`` names the workers that run it: ``sagakit worker --queue payments`` drives
    only the sagas on that queue, so teams sharing one database scale theirs apart.

    ``redact`` names payload fields that are secret (``["card_number", "customer.email"]``):
    the log keeps them, for the steps that need them, and every reader masks them
    (``sagakit show``, ``list --json``, the dashboard); see :mod:`sagakit.log._redaction`.
    """

    def __init__(
        self,
        name: str,
        version: int = 1,
        *,
        steps: Iterable[Step] = (),
        deadline: float | None = None,
        queue: str = DEFAULT_QUEUE,
        redact: Iterable[str] = (),
    ) -> None:
        if not name or not isinstance(name, str):
            raise SagaDefinitionError(str(name), "a saga needs a non-empty string name")
        if not isinstance(version, int) or version < 1:
            raise SagaDefinitionError(name, f"version must be a positive int, not {version!r}")
        if deadline is not None and deadline <= 0:
            raise SagaDefinitionError(name, f"deadline must be positive, not {deadline!r}")
        if not queue or not isinstance(queue, str):
            raise SagaDefinitionError(name, f"queue must be a non-empty string, not {queue!r}")
        try:
            self.redact = redaction_paths([redact] if isinstance(redact, str) else redact)
        except ValueError as bad:
            raise SagaDefinitionError(name, str(bad)) from None
        self.name = name
        self.version = version
        self.deadline = deadline
        self.queue = queue
        self.steps: list[Step] = []
        self._by_name: dict[str, Step] = {}
        for step in steps:
            self.add_step(step)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, version={self.version}, steps={[s.name for s in self.steps]})"

    @property
    def key(self) -> str:
        """``name@version``: how the registry and the log refer to this definition."""
        return f"{self.name}@{self.version}"

    def get(self, step: str) -> Step:
        """The step called ``step``."""
        return self._by_name[step]

    def add_step(self, step: Step) -> Saga:
        """Append a built :class:`Step`, checking every rule; returns the saga for chaining."""
        if not isinstance(step.kind, StepKind):
            step = replace(step, kind=_kind(self.name, step.kind, step.name))
        self._check(step)
        self.steps.append(step)
        self._by_name[step.name] = step
        return self

    def add(
        self,
        action: Action,
        *,
        name: str | None = None,
        compensate: Compensation | None = None,
        kind: StepKind | str = StepKind.COMPENSATABLE,
        retry: Retry | None = None,
        compensation_retry: Retry = COMPENSATION_RETRY,
        timeout: float | None = None,
        compensate_on_failure: bool = False,
    ) -> Saga:
        """Builder form: add a step whose name defaults to the action's ``__name__``."""
        return self.add_step(
            Step(
                name=name or _name_of(self.name, action),
                action=action,
                compensation=compensate,
                kind=_kind(self.name, kind, name or getattr(action, "__name__", None)),
                retry=retry,
                compensation_retry=compensation_retry,
                timeout=timeout,
                compensate_on_failure=compensate_on_failure,
            )
        )

    def step(
        self,
        *,
        name: str | None = None,
        compensate: Compensation | None = None,
        kind: StepKind | str = StepKind.COMPENSATABLE,
        retry: Retry | None = None,
        compensation_retry: Retry = COMPENSATION_RETRY,
        timeout: float | None = None,
        compensate_on_failure: bool = False,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`add`; returns the function unchanged."""

        def register(action: F) -> F:
            self.add(
                action,
                name=name,
                compensate=compensate,
                kind=kind,
                retry=retry,
                compensation_retry=compensation_retry,
                timeout=timeout,
                compensate_on_failure=compensate_on_failure,
            )
            return action

        return register

    def pivot(self, **options: Any) -> Callable[[F], F]:
        """Decorator for the pivot step: ``@order.pivot()``."""
        return self.step(kind=StepKind.PIVOT, **options)

    def retriable(self, **options: Any) -> Callable[[F], F]:
        """Decorator for a retriable step after the pivot: ``@order.retriable()``."""
        return self.step(kind=StepKind.RETRIABLE, **options)

    def _check(self, step: Step) -> None:
        def fail(message: str) -> SagaDefinitionError:
            return SagaDefinitionError(self.name, message, step.name)

        if not step.name or not isinstance(step.name, str):
            raise SagaDefinitionError(self.name, f"step name must be a non-empty string: {step!r}")
        if step.name in self._by_name:
            raise fail("duplicate step name")
        if ":" in step.name:
            raise fail("a step name cannot contain ':', which separates idempotency key parts")
        if not callable(step.action):
            raise fail("action is not callable")
        if step.compensation is not None and not callable(step.compensation):
            raise fail("compensation is not callable")
        if step.timeout is not None and not step.timeout > 0:  # NaN too
            raise fail(f"timeout must be positive, not {step.timeout!r}")
        kinds = [s.kind for s in self.steps]
        if step.kind is StepKind.COMPENSATABLE:
            if step.compensation is None:
                raise fail("a compensatable step needs a compensation (or declare it a pivot)")
            if StepKind.PIVOT in kinds or StepKind.RETRIABLE in kinds:
                raise fail("a compensatable step cannot come after the pivot or a retriable step")
        elif step.kind is StepKind.PIVOT:
            if StepKind.PIVOT in kinds:
                raise fail("a saga has at most one pivot")
            if StepKind.RETRIABLE in kinds:
                raise fail("the pivot cannot come after a retriable step")
        if step.kind is not StepKind.COMPENSATABLE:
            if step.compensation is not None and not step.compensate_on_failure:
                raise fail(f"a {step.kind.value} step is never compensated once it succeeds")
            if step.compensate_on_failure and step.compensation is None:
                raise fail("compensate_on_failure needs a compensation")
        if step.kind is StepKind.RETRIABLE and step.compensate_on_failure:
            raise fail("a retriable step never fails for good, so it is never compensated")


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - instances with an async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _name_of(saga: str, action: Action) -> str:
    name = getattr(action, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise SagaDefinitionError(saga, f"give the step a name=: {action!r} has no usable name")
    return name


def _kind(saga: str, kind: StepKind | str, step: str | None) -> StepKind:
    try:
        return StepKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in StepKind)
        raise SagaDefinitionError(
            saga, f"unknown step kind {kind!r} (use {allowed})", step
        ) from None
