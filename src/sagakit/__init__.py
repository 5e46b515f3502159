"""sagakit: sagas for Python, with a durable saga log, crash recovery and operator tools."""

from sagakit.bus import Broker, MemoryBroker, open_broker
from sagakit.choreography import Choreography, ChoreographyStep
from sagakit.client import Client
from sagakit.context import CompensationContext, Results, StepContext
from sagakit.engine import Engine, Outcome, SagaResult, idempotency_key
from sagakit.errors import (
    BrokerConnectionError,
    BrokerError,
    CompensationImpossible,
    ConcurrentUpdateError,
    LocalDatabaseError,
    MalformedEventError,
    OperatorActionError,
    ResultTimeoutError,
    SagaDeadlineError,
    SagaDefinitionError,
    SagakitError,
    SchemaVersionError,
    SerializationError,
    ServiceDefinitionError,
    SignalTimeoutError,
    StepTimeoutError,
    StoreError,
    UnknownSagaError,
    UnregisteredSagaError,
    UnsupportedDatabaseError,
)
from sagakit.events import Event
from sagakit.log import RecordType, SagaStatus, StepStatus
from sagakit.outbox import LocalDatabase, SqliteDatabase
from sagakit.policies import Retry
from sagakit.relay import Relay
from sagakit.saga import Saga, Step, StepKind
from sagakit.service import Service, Transaction
from sagakit.state import SagaState
from sagakit.store import MemoryStore, Store, open_store
from sagakit.tracker import Tracker
from sagakit.worker import Worker

__all__ = [
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "Choreography",
    "ChoreographyStep",
    "Client",
    "CompensationContext",
    "CompensationImpossible",
    "ConcurrentUpdateError",
    "Engine",
    "Event",
    "LocalDatabase",
    "LocalDatabaseError",
    "MalformedEventError",
    "MemoryBroker",
    "MemoryStore",
    "OperatorActionError",
    "Outcome",
    "RecordType",
    "Relay",
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
    "Service",
    "ServiceDefinitionError",
    "SignalTimeoutError",
    "SqliteDatabase",
    "Step",
    "StepContext",
    "StepKind",
    "StepStatus",
    "StepTimeoutError",
    "Store",
    "StoreError",
    "Tracker",
    "Transaction",
    "UnknownSagaError",
    "UnregisteredSagaError",
    "UnsupportedDatabaseError",
    "Worker",
    "idempotency_key",
    "open_broker",
    "open_store",
]
