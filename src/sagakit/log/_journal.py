"""Where every saga log record is made, by whichever flavour writes it.

The orchestrator's driver, the client's operator actions and the choreography tracker all
append to saga logs. Each goes through a :class:`Journal`, so a record is numbered, timed
and folded into the instance's state in one place, and a new instance's row is derived from
its first records the same way everywhere.
"""

from __future__ import annotations

import time
from typing import Any

from sagakit.log._fast import RecordTypes, SagaStatuses
from sagakit.log._records import Instance, Record, RecordType
from sagakit.log._state import SagaState

_new_record = tuple.__new__
"""What ``Record(...)`` calls through a Python-level ``__new__`` of the named tuple: the
engine makes eight records a saga, so it skips that frame."""


class Journal:
    """An instance's state, and the records made for it that are not stored yet."""

    __slots__ = ("pending", "state")

    def __init__(self, state: SagaState) -> None:
        self.state = state
        self.pending: list[Record] = []

    @classmethod
    def begin(
        cls, saga_id: str, data: str, at: float, started: dict[str, Any] | None = None
    ) -> Journal:
        """A new instance's journal holding its ``saga_started`` record (``data``: its JSON).

        ``started`` may carry the same fields already decoded, as a caller that has just
        encoded them has them, to save decoding them again.
        """
        journal = cls(SagaState(saga_id))
        record = _new_record(Record, (0, RecordTypes.SAGA_STARTED, at, None, 0, data))
        journal.state.apply(record, started)
        journal.pending.append(record)
        return journal

    @staticmethod
    def opening(
        saga_id: str, name: str, version: int, data: str, at: float
    ) -> tuple[Instance, Record]:
        """A new instance's row, pending and due at once, and its ``saga_started`` record,
        as :meth:`begin` and :meth:`new_instance` would make them, but with no state folded:
        a client that only records the start never reads one (its steps, its input)."""
        record = _new_record(Record, (0, RecordTypes.SAGA_STARTED, at, None, 0, data))
        return Instance(saga_id, name, version, SagaStatuses.PENDING, at, at, at), record

    def add(
        self,
        kind: RecordType,
        step: str | None = None,
        attempt: int = 0,
        data: str | None = None,
        at: float | None = None,
    ) -> Record:
        """Make the next record (``data``: its payload as JSON text) and fold it into the
        state now; it is stored with the next :meth:`take`. ``at`` defaults to now."""
        when = time.time() if at is None else at
        record = _new_record(Record, (len(self.state.records), kind, when, step, attempt, data))
        self.state.apply(record)
        self.pending.append(record)
        return record

    def take(self) -> list[Record]:
        """The records made since the last take, to store; the journal forgets them."""
        records, self.pending = self.pending, []
        return records

    def new_instance(
        self,
        *,
        due_at: float | None = None,
        lease_owner: str | None = None,
        lease_expires: float | None = None,
    ) -> Instance:
        """The current-state row of the instance this journal began (its records still
        pending), due at ``due_at`` or leased to ``lease_owner``."""
        state = self.state
        return Instance(
            state.id,
            state.name,
            state.version,
            state.status,
            state.records[0].at,
            state.records[-1].at,
            due_at,
            lease_owner,
            lease_expires,
        )
