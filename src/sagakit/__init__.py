"""sagakit: sagas for Python, with a durable saga log, crash recovery and operator tools."""

from sagakit.bus import Broker, MemoryBroker, open_broker
from sagakit.client import Client
from sagakit.context import CompensationContext, Results, StepContext
from sagakit.engine import Engine, Outcome, SagaResult, idempotency_key
from sagakit.errors import (
    BrokerConnectionError,
    BrokerError,
    CompensationImpossible,
    ConcurrentUpdateError,
    MalformedEventError,
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
from sagakit.events import Event
from sagakit.log import RecordType, SagaStatus, StepStatus
from sagakit.policies import Retry
from sagakit.saga import Saga, Step, StepKind
from sagakit.state import SagaState
from sagakit.store import MemoryStore, Store, open_store
from sagakit.worker import Worker

__all__ = [
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "Client",
    "CompensationContext",
    "CompensationImpossible",
    "ConcurrentUpdateError",
    "Engine",
    "Event",
    "MalformedEventError",
    "MemoryBroker",
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
    "open_broker",
    "open_store",
]
