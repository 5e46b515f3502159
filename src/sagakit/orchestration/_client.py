"""The client: start sagas for workers to run, wait for outcomes, signal them, and act on
them as an operator. It drives nothing itself, so it fits in a web request handler.

Operators' actions are records in the saga's log, naming who and why. A client appends
them only while it holds the instance's lease, as an engine would, so it never writes over
a worker; a running saga that a worker holds is asked to cancel through its inbox instead.
"""

from __future__ import annotations

import getpass
import socket
import time
from typing import Any

from sagakit.errors import (
    OperatorActionError,
    ResultTimeoutError,
    SerializationError,
    UnknownSagaError,
)
from sagakit.log import Journal, RecordType, SagaState
from sagakit.log._codec import ENCODE_ERRORS, encode
from sagakit.log._fast import RecordTypes, SagaStatuses
from sagakit.log._records import TERMINAL
from sagakit.orchestration._definition import Saga
from sagakit.orchestration._engine import SagaResult, default_owner
from sagakit.orchestration._plan import CANCEL, Plan, new_saga_id, passed_pivot
from sagakit.store import Store

_ACT_LEASE = 30.0
"""How long an operator's action may hold an instance (it takes milliseconds)."""
_WAKE = 30.0
"""Longest wait between looks at an outcome; stores also wake waiters when it changes."""


def default_operator() -> str:
    """``user@host``: who an operator's action is recorded as, unless told otherwise."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


class Client:
    """Talks to the sagas in one store; workers (or an :class:`~sagakit.Engine`) drive them."""

    def __init__(self, store: Store, *, operator: str | None = None) -> None:
        self.store = store
        self.operator = operator or default_operator()
        self.owner = f"client:{default_owner()}"

    async def start(self, saga: Saga, input: Any = None, *, saga_id: str | None = None) -> str:
        """Record a new instance, due now for any worker, and return its id at once.

        Idempotent on ``saga_id``: starting an id that exists changes nothing and returns
        the id. Raises :class:`SerializationError` if ``input`` is not JSON.
        """
        saga_id = saga_id or new_saga_id()
        journal = Plan(saga).begin(saga_id, input)
        row = journal.new_instance(due_at=journal.state.records[0].at)
        await self.store.create(row, journal.take())
        return saga_id

    async def result(self, saga_id: str, timeout: float | None = None) -> SagaResult:
        """Wait until the saga is terminal and return its outcome.

        Waits on the store's change notices (LISTEN/NOTIFY on PostgreSQL), not in a busy
        loop. Raises :class:`ResultTimeoutError` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # Watch before looking, so a change made in between still wakes us.
        async with self.store.watch(saga_id) as change:
            while True:
                state = await self.state(saga_id)
                if state.status in TERMINAL:
                    return SagaResult.of(state)
                left = _WAKE if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeoutError(saga_id, timeout or 0.0, state.status.value)
                await change.wait(min(left, _WAKE))

    async def state(self, saga_id: str) -> SagaState:
        """The instance's state as its log tells it now."""
        stored = await self.store.load(saga_id)
        if stored is None:
            raise UnknownSagaError(saga_id)
        return SagaState.from_records(saga_id, stored.records)

    async def signal(self, saga_id: str, name: str, payload: Any = None) -> None:
        """Send a message to the saga; a step's ``ctx.wait_for(name)`` gets ``payload``."""
        try:
            encoded = encode(payload)
        except ENCODE_ERRORS as error:
            raise SerializationError(saga_id, f"the {name!r} signal's payload", error) from error
        await self.store.send(saga_id, name, encoded)

    async def cancel(self, saga_id: str, *, reason: str = "", by: str | None = None) -> None:
        """Ask an unfinished saga that has not passed its pivot to compensate."""
        request = {"by": by or self.operator, "reason": reason}
        state = await self.state(saga_id)
        _check_cancel(saga_id, state)
        if not await self.store.acquire(self.owner, saga_id, _ACT_LEASE):
            # a worker is driving it: it reads the request at its next step or wait
            await self.store.send(saga_id, CANCEL, encode(request))
            return
        try:
            state = await self.state(saga_id)
            _check_cancel(saga_id, state)
            why = f"cancelled by {request['by']}" + (f": {reason}" if reason else "")
            await self._append(
                state,
                [
                    (RecordTypes.CANCEL_REQUESTED, request),
                    (RecordTypes.SAGA_COMPENSATING, {"reason": why}),
                ],
            )
        finally:
            await self.store.release(self.owner, saga_id, time.time())

    async def retry(self, saga_id: str, *, note: str = "", by: str | None = None) -> None:
        """Try a ``needs_attention`` saga's failed calls again, with a fresh retry budget."""
        await self._operate(saga_id, "retry", RecordTypes.OPERATOR_RETRY, note, by)

    async def resolve(self, saga_id: str, *, note: str, by: str | None = None) -> None:
        """Record that a person finished a ``needs_attention`` saga by hand (with ``note``)."""
        if not note.strip():
            raise OperatorActionError(saga_id, "resolve", "say what was done (a note)")
        await self._operate(saga_id, "resolve", RecordTypes.OPERATOR_RESOLVED, note, by)

    async def _operate(
        self, saga_id: str, action: str, kind: RecordType, note: str, by: str | None
    ) -> None:
        if not await self.store.acquire(self.owner, saga_id, _ACT_LEASE):
            await self.state(saga_id)  # an unknown id says so
            raise OperatorActionError(saga_id, action, "it is being driven; try again shortly")
        try:
            state = await self.state(saga_id)
            if state.status is not SagaStatuses.NEEDS_ATTENTION:
                raise OperatorActionError(
                    saga_id, action, f"it is {state.status.value}, not needs_attention"
                )
            await self._append(state, [(kind, {"by": by or self.operator, "note": note})])
        finally:
            await self.store.release(self.owner, saga_id, time.time())

    async def _append(self, state: SagaState, records: list[tuple[RecordType, Any]]) -> None:
        journal = Journal(state)
        for kind, data in records:
            journal.add(kind, data=encode(data))
        await self.store.append(state.id, journal.take(), state.status)


def _check_cancel(saga_id: str, state: SagaState) -> None:
    if state.status not in (SagaStatuses.PENDING, SagaStatuses.RUNNING):
        raise OperatorActionError(saga_id, "cancel", f"it is {state.status.value}")
    if passed_pivot(state):
        raise OperatorActionError(saga_id, "cancel", "it has passed its pivot: only forward")
