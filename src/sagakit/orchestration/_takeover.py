"""Taking over a call another holder started: saying so in the log and in the worker's log.

A holder that dies (or freezes) mid-call leaves a ``*_started`` record with no outcome; once
its lease lapses another engine claims the instance and makes that call again with the
same idempotency key. Without a word that is invisible (a step "started at +2 s, succeeded
at +86 s, tries 1"), so the new holder appends a ``call_taken_over`` record naming the
previous holder (from the ``*_started`` record, which carries it) and the call, and the
engine says, once per batch, "took over N sagas from host:pid (lease lapsed)". Takeovers are
rare: none of this runs unless a claimed instance's last call is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sagakit.log import Record, SagaState
from sagakit.log._codec import decode, encode
from sagakit.log._fast import RecordTypes, StepStatuses
from sagakit.log._payloads import TakenOver
from sagakit.orchestration._plan import idempotency_key

logger = logging.getLogger("sagakit.orchestration")

_OUTCOMES = frozenset(
    {
        RecordTypes.STEP_SUCCEEDED,
        RecordTypes.STEP_FAILED,
        RecordTypes.STEP_WAITING,
        RecordTypes.COMPENSATION_SUCCEEDED,
        RecordTypes.COMPENSATION_FAILED,
    }
)


def in_flight_call(state: SagaState) -> tuple[Record, str | None] | None:
    """The ``*_started`` record of the instance's latest call if no outcome of it is
    recorded (its step is still running or compensating), with who made it last (the
    latest holder that took it over, or the one that started it); else None. Looks back
    only to the latest call or outcome record: one or two records, as a rule."""
    holder: str | None = None
    taken = False
    for record in reversed(state.records):
        kind = record.type
        if kind is RecordTypes.CALL_TAKEN_OVER and not taken:
            taken, holder = True, _holder(record)
        elif kind is RecordTypes.STEP_STARTED or kind is RecordTypes.COMPENSATION_STARTED:
            step = state.by_name.get(record.step or "")
            status = None if step is None else step.status
            if status is not StepStatuses.RUNNING and status is not StepStatuses.COMPENSATING:
                return None
            return record, holder if taken else _holder(record)
        elif kind in _OUTCOMES:
            return None
    return None


def _holder(record: Record) -> str | None:
    """Who made a call, as its ``*_started`` (or ``call_taken_over``) record says."""
    data: Any = None if record.data is None else decode(record.data)
    holder = data.get("holder") if isinstance(data, dict) else None
    return holder if isinstance(holder, str) else None


def taken_over(state: SagaState, holder: str) -> tuple[Record, TakenOver] | None:
    """The call ``holder`` is about to make again although another holder started it, and
    the ``call_taken_over`` payload that says so; None if there is no such call."""
    call = in_flight_call(state)
    if call is None:
        return None
    started, previous = call
    if previous == holder or started.step is None:
        return None
    role = "action" if started.type is RecordTypes.STEP_STARTED else "compensation"
    key = idempotency_key(state.id, started.step, role)
    return started, {"previous": previous, "holder": holder, "role": role, "key": key}


def host_pid(holder: str | None) -> str:
    """``host:pid`` of a lease holder's name (``host:pid:tag``), as an operator finds it."""
    if holder is None:
        return "an earlier holder"
    head = holder.rpartition(":")[0]
    return head if head.count(":") >= 1 else holder


class TakeoverNotes:
    """Counts the takeovers of one claim batch by previous holder, and logs them in one
    warning per holder once the batch's drives have all begun (on the loop's next turn)."""

    def __init__(self) -> None:
        self._counts: dict[str | None, int] = {}
        self._due = False

    def record(self, state: SagaState, holder: str) -> tuple[Record, str] | None:
        """The ``call_taken_over`` record's call and payload (JSON) for ``state``, counted
        for the next warning; None when no call another holder started is in flight."""
        taken = taken_over(state, holder)
        if taken is None:
            return None
        started, payload = taken
        self._counts[payload["previous"]] = self._counts.get(payload["previous"], 0) + 1
        logger.info(
            "saga %s: took over step %r (%s, attempt %d) from %s (lease lapsed); it is made"
            " again with the key %s",
            *(state.id, started.step, payload["role"], started.attempt),
            *(host_pid(payload["previous"]), payload["key"]),
            extra={"saga_id": state.id, "lease_owner": payload["previous"]},
        )
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_soon(self._say)
        return started, encode(payload)

    def _say(self) -> None:
        counts, self._counts, self._due = self._counts, {}, False
        for previous, count in counts.items():
            logger.warning(
                "took over %d saga%s from %s (lease lapsed): their calls in flight are made"
                " again with the same idempotency keys",
                *(count, "" if count == 1 else "s", host_pid(previous)),
                extra={"lease_owner": previous, "sagas": count},
            )
