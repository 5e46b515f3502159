"""sagakit: sagas for Python, with a durable saga log, crash recovery and operator tools."""

from sagakit.client import Client
from sagakit.context import CompensationContext, Results, StepContext
from sagakit.engine import Engine, Outcome, SagaResult, idempotency_key
from sagakit.errors import (
    CompensationImpossible,
    ConcurrentUpdateError,
    OperatorActionError,
    ResultTimeoutError,
    SagaDeadlineError,
    SagaDefinitionError,
    SagakitError,
    SchemaVersionError,
    SerializationError,
    SignalTimeoutError,
    StepTimeoutError,
    StoreError,
    UnknownSagaError,
    UnregisteredSagaError,
    UnsupportedDatabaseError,
)
from sagakit.log import RecordType, SagaStatus, StepStatus
from sagakit.policies import Retry
from sagakit.saga import Saga, Step, StepKind
from sagakit.state import SagaState
from sagakit.store import MemoryStore, Store, open_store
from sagakit.worker import Worker

__all__ = [
    "Client",
    "CompensationContext",
    "CompensationImpossible",
    "ConcurrentUpdateError",
    "Engine",
    "MemoryStore",
    "OperatorActionError",
    "Outcome",
    "RecordType",
    "ResultTimeoutError",
    "Results",
    "Retry",
    "Saga",
    "SagaDeadlineError",
    "SagaDefinitionError",
    "SagaResult",
    "SagaState",
    "SagaStatus",
    "SagakitError",
    "SchemaVersionError",
    "SerializationError",
    "SignalTimeoutError",
    "Step",
    "StepContext",
    "StepKind",
    "StepStatus",
    "StepTimeoutError",
    "Store",
    "StoreError",
    "UnknownSagaError",
    "UnregisteredSagaError",
    "UnsupportedDatabaseError",
    "Worker",
    "idempotency_key",
    "open_store",
]
