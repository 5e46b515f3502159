"""Orchestrated sagas: definitions, the engine that drives them, workers and the client.

An orchestrator (here, the :class:`Engine` inside each :class:`Worker`) tells each step
what to do and writes every transition to the saga log before acting on it, so any process
can carry a saga on after a crash.
"""

from sagakit._retry import Retry
from sagakit.orchestration._apps import load_definitions, load_sagas
from sagakit.orchestration._client import Client
from sagakit.orchestration._context import CompensationContext, StepContext
from sagakit.orchestration._definition import Saga, Step
from sagakit.orchestration._engine import DEFAULT_LEASE, DriveReport, Engine, SagaResult
from sagakit.orchestration._plan import idempotency_key, new_saga_id
from sagakit.orchestration._worker import Worker, on_queues, resume_all

__all__ = [
    "DEFAULT_LEASE",
    "Client",
    "CompensationContext",
    "DriveReport",
    "Engine",
    "Retry",
    "Saga",
    "SagaResult",
    "Step",
    "StepContext",
    "Worker",
    "idempotency_key",
    "load_definitions",
    "load_sagas",
    "new_saga_id",
    "on_queues",
    "resume_all",
]
