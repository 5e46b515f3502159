"""sagakit: sagas for Python, with a durable saga log, crash recovery and operator tools."""

from sagakit.context import CompensationContext, Results, StepContext
from sagakit.engine import Engine, SagaResult, idempotency_key
from sagakit.errors import (
    CompensationImpossible,
    ConcurrentUpdateError,
    SagaDeadlineError,
    SagaDefinitionError,
    SagakitError,
    SchemaVersionError,
    SerializationError,
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

__all__ = [
    "CompensationContext",
    "CompensationImpossible",
    "ConcurrentUpdateError",
    "Engine",
    "MemoryStore",
    "RecordType",
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
    "idempotency_key",
    "open_store",
]
