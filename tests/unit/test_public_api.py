"""The public API, pinned: every public module's ``__all__``, name by name.

A name added to or dropped from a package's surface fails here, so that changing what users
import is a decision written down in this file (and the changelog), never an accident of a
refactor. Private modules (``_engine.py``) are free to change; public ones may not grow or
lose names silently, and every public module must say what it exports.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import sagakit

PUBLIC: dict[str, list[str]] = {
    "sagakit": [
        "AppReferenceError",
        "Broker",
        "BrokerConnectionError",
        "BrokerError",
        "BrokerNameError",
        "Choreography",
        "ChoreographyStep",
        "Client",
        "CompensationContext",
        "CompensationImpossible",
        "ConcurrentUpdateError",
        "DriveReport",
        "Engine",
        "Event",
        "InvalidArgumentError",
        "InvalidStoreURLError",
        "LocalDatabase",
        "LocalDatabaseError",
        "MalformedEventError",
        "MemoryBroker",
        "MemoryStore",
        "MissingBrokerDriverError",
        "OperatorActionError",
        "RecordType",
        "Relay",
        "ResultTimeoutError",
        "Results",
        "Retry",
        "Saga",
        "SagaDeadlineError",
        "SagaDefinitionError",
        "SagaIdConflictError",
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
        "StepActionError",
        "StepContext",
        "StepKind",
        "StepStatus",
        "StepTimeoutError",
        "Store",
        "StoreError",
        "StoreUnavailableError",
        "Tracker",
        "Transaction",
        "UnknownSagaError",
        "UnregisteredSagaError",
        "UnsupportedBrokerError",
        "UnsupportedDatabaseError",
        "Worker",
        "idempotency_key",
        "open_broker",
        "open_store",
    ],
    "sagakit.bus": [
        "Broker",
        "DeadLetter",
        "Delivery",
        "Event",
        "Handler",
        "MAX_EVENT_BYTES",
        "MemoryBroker",
        "SCHEMES",
        "Subscription",
        "event_schema",
        "open_broker",
    ],
    "sagakit.bus.memory": [
        "MemoryBroker",
    ],
    "sagakit.bus.nats_jetstream": [
        "NatsJetStreamBroker",
    ],
    "sagakit.bus.rabbitmq": [
        "RabbitMQBroker",
    ],
    "sagakit.bus.redis_streams": [
        "RedisStreamsBroker",
    ],
    "sagakit.choreography": [
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
    ],
    "sagakit.choreography.postgres": [
        "PostgresDatabase",
    ],
    "sagakit.choreography.sqlalchemy": [
        "AsyncSqlAlchemyDatabase",
        "SqlAlchemyDatabase",
        "inbox_table",
        "metadata",
        "outbox_table",
    ],
    "sagakit.choreography.sqlite": [
        "SqliteDatabase",
    ],
    "sagakit.cli": [
        "app",
        "main",
    ],
    "sagakit.dashboard": [
        "create_app",
    ],
    "sagakit.demo": [
        "CardDeclined",
        "EmailService",
        "InsufficientPoints",
        "InventoryService",
        "LoyaltyService",
        "MailServerUnavailable",
        "OrderRejected",
        "OrderService",
        "OrderServices",
        "PartialReservation",
        "PaymentService",
        "ShippingService",
        "build_order_saga",
        "from_environment",
        "open_services",
        "order_input",
        "run_choreography_demo",
        "run_demo",
    ],
    "sagakit.demo.processes": [
        "BROKER_ENV",
        "ServiceProcess",
        "ServiceProcessError",
        "main",
    ],
    "sagakit.errors": [
        "AppReferenceError",
        "BrokerConnectionError",
        "BrokerError",
        "BrokerNameError",
        "CompensationImpossible",
        "ConcurrentUpdateError",
        "EventRejectedError",
        "EventTooLargeError",
        "InvalidArgumentError",
        "InvalidStoreURLError",
        "LocalDatabaseError",
        "MalformedEventError",
        "MissingBrokerDriverError",
        "OperatorActionError",
        "ResultTimeoutError",
        "SagaDeadlineError",
        "SagaDefinitionError",
        "SagaIdConflictError",
        "SagakitError",
        "SchemaVersionError",
        "SerializationError",
        "ServiceDefinitionError",
        "SignalTimeoutError",
        "StepActionError",
        "StepTimeoutError",
        "StoreError",
        "StoreUnavailableError",
        "UnknownSagaError",
        "UnregisteredSagaError",
        "UnsupportedBrokerError",
        "UnsupportedDatabaseError",
    ],
    "sagakit.log": [
        "Attention",
        "CancelRequest",
        "Compensating",
        "ErrorInfo",
        "Failure",
        "Instance",
        "Journal",
        "MASK",
        "Message",
        "Migrated",
        "NO_REDACTION",
        "OperatorNote",
        "Received",
        "Record",
        "RecordType",
        "Redaction",
        "Results",
        "SagaState",
        "SagaStatus",
        "Skipped",
        "Started",
        "StepKind",
        "StepMeta",
        "StepState",
        "StepStatus",
        "TRACKED_FACTS",
        "Waiting",
        "redaction_paths",
        "shown_data",
    ],
    "sagakit.orchestration": [
        "Client",
        "CompensationContext",
        "DEFAULT_LEASE",
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
    ],
    "sagakit.operations": [
        "BulkOutcome",
        "Page",
        "Query",
        "SagaView",
        "VersionInfo",
        "act_on_each",
        "count",
        "cursor_of",
        "find",
        "matches",
        "position_of",
        "versions",
    ],
    "sagakit.store": [
        "ALL",
        "ANY_INSTANCE",
        "ANY_MESSAGE",
        "Count",
        "FieldEquals",
        "FirstCall",
        "InstanceFilter",
        "MemoryStore",
        "Position",
        "SCHEMES",
        "Store",
        "StoreWrapper",
        "StoredSaga",
        "URL_FORMS",
        "Watch",
        "WorkerInfo",
        "migrate",
        "open_store",
    ],
    "sagakit.store.memory": [
        "MemoryStore",
    ],
    "sagakit.store.postgres": [
        "MAX_BATCH",
        "PostgresStore",
        "SCHEMA_VERSION",
        "migrate",
    ],
    "sagakit.store.sqlite": [
        "SCHEMA_VERSION",
        "SqliteStore",
    ],
    "sagakit.telemetry": [
        "COMPENSATION_SPAN",
        "DRIVE_SPAN",
        "HANDLE_SPAN",
        "INSTRUMENTATION",
        "METRICS",
        "PUBLISH_SPAN",
        "START_SPAN",
        "STEP_SPAN",
        "available",
        "configure",
        "disable",
        "enable",
    ],
    "sagakit.testing": [
        "BrokerContract",
        "BrokerFactory",
        "GROUPS",
        "LocalDatabaseContract",
        "LocalDatabaseFactory",
        "Recorder",
        "SchedulingContract",
        "StoreContract",
        "events",
        "instance",
        "started",
        "step_record",
    ],
}


def _public_modules() -> list[str]:
    found = ["sagakit"]
    for info in pkgutil.walk_packages(sagakit.__path__, "sagakit."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


def test_every_public_module_is_pinned() -> None:
    assert _public_modules() == sorted(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_a_public_modules_all_is_as_pinned(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} declares no __all__"
    assert sorted(exported) == PUBLIC[name]
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name} exports names it does not have: {missing}"


def test_the_root_exports_only_what_its_packages_do() -> None:
    """``from sagakit import X`` is a shortcut, never a second home for a name."""
    homes = {n for m, names in PUBLIC.items() if m != "sagakit" for n in names}
    assert set(PUBLIC["sagakit"]) <= homes
