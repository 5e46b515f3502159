"""Choreographed sagas: services that react to each other's events, with no coordinator.

Each :class:`Service` handles events in local transactions that also write its inbox and
its outbox; its :class:`Relay` publishes the outbox; a :class:`Tracker` rebuilds each saga's
timeline in the saga log from the events a :class:`Choreography` declares.
"""

from sagakit.choreography._definition import Choreography, ChoreographyStep, StepOutcome
from sagakit.choreography._outbox import (
    LocalDatabase,
    OutboxClaim,
    OutboxDeadLetter,
    OutboxTransaction,
    Pending,
)
from sagakit.choreography._relay import Relay, RelayPass
from sagakit.choreography._service import Service, Transaction
from sagakit.choreography._tracker import Tracker
from sagakit.choreography.sqlite import SqliteDatabase

__all__ = [
    "Choreography",
    "ChoreographyStep",
    "LocalDatabase",
    "OutboxClaim",
    "OutboxDeadLetter",
    "OutboxTransaction",
    "Pending",
    "Relay",
    "RelayPass",
    "Service",
    "SqliteDatabase",
    "StepOutcome",
    "Tracker",
    "Transaction",
]
