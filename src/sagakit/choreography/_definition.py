"""Declaring a choreographed saga: which events mean what, so a tracker can follow it.

A choreography has no coordinator, so nothing in it knows the whole flow; the declaration
is that knowledge, written down once::

    ORDER = Choreography(
        "order_choreography",
        version=1,
        steps=[
            ChoreographyStep("create_order", succeeded="OrderCreated",
                             compensated="OrderCancelled"),
            ChoreographyStep("charge_payment", succeeded="PaymentCompleted",
                             failed="PaymentDeclined", compensated="PaymentRefunded"),
            ChoreographyStep("reserve_stock", succeeded="StockReserved",
                             failed="StockReservationFailed"),
            ChoreographyStep("create_shipment", succeeded="ShipmentCreated", kind="pivot"),
        ],
        starts={"OrderCreated"},
        completes={"ShipmentCreated"},
        fails={"PaymentDeclined", "StockReservationFailed"},
        compensated={"OrderCancelled"},
        max_gap=60.0,
    )

Each event type says what happened to one step (:class:`StepOutcome`); ``starts`` begin a saga,
``completes`` and ``compensated`` end it, ``fails`` turn it to compensating and
``needs_attention`` end it in a person's hands. A saga that hears nothing for ``max_gap``
seconds before it ends is reported stuck. Mistakes are :class:`SagaDefinitionError` at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from sagakit.errors import SagaDefinitionError
from sagakit.log import StepKind, StepMeta, redaction_paths

Events = str | Collection[str]
"""One event type, or several."""


class StepOutcome(StrEnum):
    """What an event says about its step; each becomes the saga log record of that name."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


@dataclass(frozen=True, slots=True)
class Role:
    """An event type's meaning in its choreography."""

    step: str
    outcome: StepOutcome


@dataclass(frozen=True, slots=True)
class ChoreographyStep:
    """One service's local transaction, and the events that report on it."""

    name: str
    succeeded: Events = ()
    failed: Events = ()
    compensated: Events = ()
    compensation_failed: Events = ()
    started: Events = ()
    kind: StepKind | str = StepKind.COMPENSATABLE

    def events(self, outcome: StepOutcome) -> tuple[str, ...]:
        """The event types that report ``outcome`` for this step."""
        return _types(getattr(self, outcome.value))

    def roles(self) -> Iterable[tuple[str, Role]]:
        """``(event type, role)`` for every event the step declares."""
        for outcome in StepOutcome:
            for event_type in self.events(outcome):
                yield event_type, Role(self.name, outcome)


class Choreography:
    """A choreographed saga's definition: its steps, its events, and its longest silence.

    ``redact`` names the events' payload fields that are secret, masked by every reader of
    the saga log as an orchestrated saga's are (see :class:`sagakit.Saga`).
    """

    def __init__(
        self,
        name: str,
        version: int = 1,
        *,
        steps: Iterable[ChoreographyStep],
        starts: Events,
        completes: Events,
        fails: Events = (),
        compensated: Events = (),
        needs_attention: Events = (),
        max_gap: float = 300.0,
        redact: Iterable[str] = (),
    ) -> None:
        if not name or not isinstance(name, str):
            raise SagaDefinitionError(str(name), "a choreography needs a non-empty name")
        try:
            self.redact = redaction_paths([redact] if isinstance(redact, str) else redact)
        except ValueError as bad:
            raise SagaDefinitionError(name, str(bad)) from None
        if not isinstance(version, int) or version < 1:
            raise SagaDefinitionError(name, f"version must be a positive int: {version!r}")
        if not max_gap > 0:  # NaN too
            raise SagaDefinitionError(name, f"max_gap must be positive: {max_gap!r}")
        self.name = name
        self.version = version
        self.max_gap = float(max_gap)
        self.steps = tuple(_checked_steps(name, steps))
        self.roles = _roles(name, self.steps)
        self.starts = frozenset(_types(starts))
        self.completes = frozenset(_types(completes))
        self.fails = frozenset(_types(fails))
        self.compensated = frozenset(_types(compensated))
        self.needs_attention = frozenset(_types(needs_attention))
        self._check_events()

    def __repr__(self) -> str:
        return f"Choreography({self.name!r}, version={self.version}, steps={len(self.steps)})"

    @property
    def key(self) -> str:
        """``name@version``, as the saga log shows it."""
        return f"{self.name}@{self.version}"

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type this choreography listens for."""
        return frozenset(self.roles)

    @property
    def steps_meta(self) -> list[StepMeta]:
        """The steps as a ``saga_started`` record lists them."""
        return [{"name": s.name, "kind": str(s.kind)} for s in self.steps]

    def role(self, event_type: str) -> Role | None:
        return self.roles.get(event_type)

    def step(self, name: str) -> ChoreographyStep:
        return next(s for s in self.steps if s.name == name)

    def _check_events(self) -> None:
        declared = {
            "starts": self.starts,
            "completes": self.completes,
            "fails": self.fails,
            "compensated": self.compensated,
            "needs_attention": self.needs_attention,
        }
        if not self.starts or not self.completes:
            raise SagaDefinitionError(self.name, "declare which events start and complete it")
        for what, types in declared.items():
            unknown = sorted(types - set(self.roles))
            if unknown:
                raise SagaDefinitionError(self.name, f"{what}: {unknown} are not events of a step")
        ends = [self.completes, self.compensated, self.needs_attention]
        clash = {t for i, a in enumerate(ends) for b in ends[i + 1 :] for t in a & b}
        if clash:
            raise SagaDefinitionError(self.name, f"{sorted(clash)} cannot end it two ways")


def _checked_steps(saga: str, steps: Iterable[ChoreographyStep]) -> Iterable[ChoreographyStep]:
    seen: set[str] = set()
    for step in steps:
        if not step.name or not isinstance(step.name, str) or ":" in step.name:
            raise SagaDefinitionError(saga, f"bad step name {step.name!r}")
        if step.name in seen:
            raise SagaDefinitionError(saga, "duplicate step name", step.name)
        seen.add(step.name)
        try:
            kind = StepKind(step.kind)
        except ValueError:
            kinds = ", ".join(k.value for k in StepKind)
            raise SagaDefinitionError(
                saga, f"kind must be one of {kinds}, not {step.kind!r}", step.name
            ) from None
        if kind is not StepKind.COMPENSATABLE and _types(step.compensated):
            raise SagaDefinitionError(saga, f"a {kind} step is never compensated", step.name)
        yield replace(step, kind=kind)
    if not seen:
        raise SagaDefinitionError(saga, "a choreography needs at least one step")


def _roles(saga: str, steps: Iterable[ChoreographyStep]) -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for step in steps:
        for event_type, role in step.roles():
            if event_type in roles:
                raise SagaDefinitionError(
                    saga, f"event {event_type!r} is declared twice", step.name
                )
            roles[event_type] = role
    return roles


def _types(events: Events) -> tuple[str, ...]:
    """``events`` as a tuple of event types (a lone string is one type, not its letters)."""
    found = (events,) if isinstance(events, str) else tuple(events)
    for event_type in found:
        if not isinstance(event_type, str) or not event_type:
            raise SagaDefinitionError("?", f"an event type must be non-empty text: {event_type!r}")
    return found
