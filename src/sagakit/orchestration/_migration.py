"""An operator's migration of an in-flight instance to a newer version of its saga.

An instance finishes on the version it started with, so a deploy never changes a saga under
its feet. When the old code must go, an operator moves an instance on, explicitly and in its
log (``operator_migrated``): the steps it has done stay done, with their results, and the new
version's steps run from there. This module decides whether that is safe and what the record
says; :meth:`~sagakit.orchestration.Client.migrate` writes it under the instance's lease.
"""

from __future__ import annotations

from collections.abc import Mapping

from sagakit.errors import OperatorActionError, StepActionError
from sagakit.log import Migrated, Record, SagaState, StepState
from sagakit.log._codec import encode
from sagakit.log._fast import RecordTypes, SagaStatuses, StepKinds, StepStatuses
from sagakit.orchestration._definition import Saga
from sagakit.orchestration._plan import (
    Plan,
    cancel_pending,
    idempotency_key,
    passed_pivot,
    unsettled,
)

_ACTION = "migrate"


def migration(
    state: SagaState, to: Saga, map_steps: Mapping[str, str], by: str, note: str
) -> Migrated:
    """The ``operator_migrated`` payload that moves ``state`` onto ``to``; raises
    :class:`OperatorActionError` (or :class:`StepActionError`, naming the step) if the
    move is not safe, having decided nothing. :meth:`Client.migrate` says what is."""
    _check_saga(state, to)
    _check_boundary(state)
    renamed = _renamed(state, to, map_steps)
    migrated: Migrated = {
        "by": by,
        "note": note,
        "from_version": state.version,
        "to_version": to.version,
        "steps": Plan(to).steps_meta,
        "renamed": renamed,
    }
    _check_point_of_no_return(state, migrated)
    return migrated


def _refuse(state: SagaState, why: str) -> OperatorActionError:
    return OperatorActionError(state.id, _ACTION, why)


def _refuse_step(state: SagaState, step: str, why: str) -> StepActionError:
    return StepActionError(state.id, _ACTION, step, why)


def _check_saga(state: SagaState, to: Saga) -> None:
    """The saga must be unfinished and going forward, and ``to`` a newer version of it."""
    if to.name != state.name:
        raise _refuse(state, f"it is a {state.name!r} saga, not {to.name!r}")
    if to.version <= state.version:
        raise _refuse(
            state, f"it is on version {state.version}: it moves only to a newer one, not {to.key}"
        )
    status = state.status
    going = state.before_attention if status is SagaStatuses.NEEDS_ATTENTION else status
    if going is SagaStatuses.COMPENSATING:
        raise _refuse(state, "it is compensating: only a saga going forward moves")
    if status is SagaStatuses.COMPLETED or status is SagaStatuses.COMPENSATED:
        raise _refuse(state, f"it is {status.value}: only an unfinished saga moves")


def _check_boundary(state: SagaState) -> None:
    """No call may be in flight, or its outcome unknown: what it did under its step's key
    is not known, and the new version might not have that step."""
    if cancel_pending(state):
        raise _refuse(state, "a cancel is pending: it compensates once its call is settled")
    step = unsettled(state)
    if step is not None and step.status is StepStatuses.FAILED:
        raise _refuse_step(
            state,
            step.name,
            "timed out and may have applied: migrate once its retry has settled it",
        )
    for step in state.steps:
        if step.status is StepStatuses.RUNNING:
            raise _refuse_step(
                state,
                step.name,
                "is in flight (started, its outcome not recorded): migrate once a worker "
                "has settled it",
            )
        if step.status is StepStatuses.WAITING and step.waiting is not None:
            raise _refuse_step(
                state,
                step.name,
                f"waits for {step.waiting['signal']!r} in the middle of its call: migrate "
                "once the call has ended",
            )


def _renamed(state: SagaState, to: Saga, map_steps: Mapping[str, str]) -> dict[str, str]:
    """Each step done (old name) to the step of ``to`` it becomes, position by position."""
    new_names = [step.name for step in to.steps]
    for old, new in map_steps.items():
        if old not in state.by_name:
            raise _refuse_step(state, old, f"is not one of its steps ({', '.join(state.by_name)})")
        if new not in new_names:
            raise _refuse_step(state, old, f"maps to {new!r}, which is not a step of {to.key}")
    done = state.steps[: state.cursor]
    renamed: dict[str, str] = {}
    for position, step in enumerate(done):
        new = map_steps.get(step.name, step.name)
        _check_place(state, to, position, step, new)
        renamed[step.name] = new
    for later in to.steps[len(done) :]:
        if later.name in renamed and renamed[later.name] != later.name:
            raise _refuse_step(
                state,
                later.name,
                f"of {to.key} has not run, but the step {later.name!r} that was done would "
                "lend it its idempotency key: a service would answer with the done call's result",
            )
    return renamed


def _check_place(state: SagaState, to: Saga, position: int, step: StepState, new: str) -> None:
    """The step done at ``position`` must be the step of ``to`` there, of the same kind;
    a new name only where its compensation can never be called."""
    if position >= len(to.steps):
        raise _refuse_step(
            state, step.name, f"is done, but {to.key} has only {len(to.steps)} step(s)"
        )
    target = to.steps[position]
    if target.name != new:
        hint = " (a step renamed is mapped with map_steps)" if new == step.name else ""
        raise _refuse_step(
            state,
            step.name,
            f"is done and maps to {new!r}, but step {position + 1} of {to.key} is "
            f"{target.name!r}: the steps done must map, in order, onto its first steps{hint}",
        )
    if target.kind.value != step.kind:
        raise _refuse_step(
            state,
            step.name,
            f"is {step.kind}, but {target.name!r} is {target.kind.value} in {to.key}: "
            "a step done keeps its kind",
        )
    if new != step.name and step.kind == StepKinds.COMPENSATABLE.value and not passed_pivot(state):
        key = idempotency_key(state.id, step.name)
        raise _refuse_step(
            state,
            step.name,
            f"may still be compensated, and its compensation is handed the key its action "
            f"was called with ({key}), derived from the step's name: it keeps its name "
            "until the saga has passed its pivot",
        )


def _check_point_of_no_return(state: SagaState, migrated: Migrated) -> None:
    """A saga past its pivot stays past it: forgetting would allow a cancel."""
    after = SagaState.from_records(state.id, [*state.records, _record(state, migrated)])
    if passed_pivot(state) and not passed_pivot(after):
        tried = [s.name for s in state.steps[state.cursor :] if s.attempts]
        raise _refuse(
            state,
            f"it is past its point of no return only by the tries of {', '.join(tried)}, "
            "which the new version would forget",
        )


def _record(state: SagaState, migrated: Migrated) -> Record:
    return Record(
        state.next_seq, RecordTypes.OPERATOR_MIGRATED, state.records[-1].at, data=encode(migrated)
    )
