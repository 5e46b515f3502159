"""Every error sagakit raises, under one root so callers can catch them together.

::

    SagakitError
    ├── InvalidArgumentError       an argument that cannot work; also a ValueError
    │   ├── SagaDefinitionError        a saga was declared wrongly (raised at declaration)
    │   ├── ServiceDefinitionError     a choreographed service's handlers were declared wrongly
    │   ├── AppReferenceError          ``--app`` does not lead to saga definitions
    │   └── SagaIdConflictError        a start reuses a saga id for another saga or input
    ├── SerializationError         an input or a step result is not JSON
    ├── StepTimeoutError           a step or compensation ran past its timeout
    ├── SagaDeadlineError          the saga ran past its deadline
    ├── CompensationImpossible     raised by a compensation: this cannot be undone, ask a human
    ├── UnknownSagaError           no saga instance with that id
    ├── UnregisteredSagaError      an instance's definition (name, version) is not registered
    ├── SignalTimeoutError         a step's wait for a message timed out
    ├── OperatorActionError        an operator's action (or a signal) does not fit the saga
    │   └── StepActionError            retry from a step, or skip one, that does not allow it
    ├── ResultTimeoutError         the outcome was not there within the caller's timeout
    ├── StoreError                 the saga log cannot be used
    │   ├── InvalidStoreURLError*      the --db URL is malformed (path, schema name, pool size)
    │   ├── UnsupportedDatabaseError*  the --db URL names a scheme we do not support
    │   ├── SchemaVersionError         the database was made by a newer sagakit
    │   ├── StoreUnavailableError      the database cannot be reached now (down, restarting)
    │   └── ConcurrentUpdateError      someone else appended to the same instance
    ├── MalformedEventError        bytes that are not a sagakit event (says what is wrong)
    ├── LocalDatabaseError         a service's own database (its outbox, its inbox) fails
    └── BrokerError                the message broker cannot be used
        ├── UnsupportedBrokerError*    the broker URL names a scheme we do not support
        ├── MissingBrokerDriverError   the broker's client library is not installed
        ├── BrokerConnectionError      the broker cannot be reached (URL shown without password)
        ├── EventRejectedError         the broker refused one event (too big for it, say)
        │   └── EventTooLargeError*        an event over the broker's size limit
        └── BrokerNameError*           a stream or group name not every broker accepts

``*``: also an :class:`InvalidArgumentError`, so every bad argument is a ``ValueError``
whatever part of sagakit refused it.

Driver errors are translated at the store and broker boundaries; the original stays as
``__cause__``.
"""

from __future__ import annotations

__all__ = [
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
]


class SagakitError(Exception):
    """Root of every sagakit error."""


class InvalidArgumentError(SagakitError, ValueError):
    """An argument that cannot work (a negative count, a malformed URL); the message names it.

    Raised where the argument is given, before anything is recorded or sent.
    """


class SagaIdConflictError(InvalidArgumentError):
    """A start names a saga id that is an instance of another saga, or of another input.

    Starting is idempotent on the id, so a repeated start returns the instance it made.
    Returning that instance for a *different* request would pass off one saga's outcome
    as another's; nothing is recorded instead.
    """

    def __init__(self, saga_id: str, existing: str, asked: str) -> None:
        super().__init__(f"saga id {saga_id!r} is already {existing}, not {asked}")
        self.saga_id = saga_id


class SagaDefinitionError(InvalidArgumentError):
    """A saga definition breaks a rule; raised when it is declared, never at run time."""

    def __init__(self, saga: str, message: str, step: str | None = None) -> None:
        where = f"saga {saga!r}" + (f", step {step!r}" if step else "")
        super().__init__(f"{where}: {message}")
        self.saga = saga
        self.step = step


class SerializationError(SagakitError):
    """A saga input or a step result cannot be stored as JSON."""

    def __init__(self, saga: str, what: str, cause: BaseException, step: str | None = None) -> None:
        where = f"saga {saga!r}" + (f", step {step!r}" if step else "")
        super().__init__(f"{where}: {what} is not JSON-serialisable: {cause}")
        self.saga = saga
        self.step = step


class StepTimeoutError(SagakitError):
    """A step's action or compensation did not finish within its timeout."""

    def __init__(self, saga: str, step: str, timeout: float) -> None:
        super().__init__(f"saga {saga!r}, step {step!r}: timed out after {timeout:g}s")
        self.saga = saga
        self.step = step
        self.timeout = timeout


class SagaDeadlineError(SagakitError):
    """The saga did not reach its pivot before its deadline, so it compensates."""

    def __init__(self, saga: str, saga_id: str) -> None:
        super().__init__(f"saga {saga!r} ({saga_id}): deadline passed before the pivot")
        self.saga = saga
        self.saga_id = saga_id


class CompensationImpossible(SagakitError):
    """Raised by a compensation that can never succeed (the parcel was already picked up).

    The engine does not retry it: the saga goes to ``needs_attention`` with this message.
    """


class UnknownSagaError(SagakitError):
    """No saga instance has this id."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(f"no saga instance with id {saga_id!r}")
        self.saga_id = saga_id


class UnregisteredSagaError(SagakitError):
    """An instance names a definition (name, version) that this engine does not know."""

    def __init__(self, name: str, version: int, known: list[str]) -> None:
        listing = ", ".join(known) or "none"
        super().__init__(
            f"saga {name!r} version {version} is not registered (registered: {listing})"
        )
        self.name = name
        self.version = version


class AppReferenceError(InvalidArgumentError):
    """``--app`` does not lead to saga definitions; the message says which part is wrong."""


class StoreError(SagakitError):
    """The saga log cannot be read or written."""


class InvalidStoreURLError(StoreError, InvalidArgumentError):
    """A saga log URL that names a supported database but cannot be used as written."""


class UnsupportedDatabaseError(StoreError, InvalidArgumentError):
    """The database URL's scheme is not one sagakit supports."""

    def __init__(self, url: str, supported: list[str]) -> None:
        super().__init__(
            f"unsupported database URL {url!r}: use one of "
            + ", ".join(f"{s}://..." for s in supported)
        )
        self.url = url


class SchemaVersionError(StoreError):
    """The database's schema is newer than this sagakit understands; nothing was changed."""

    def __init__(self, url: str, found: int, supported: int) -> None:
        super().__init__(
            f"database {url!r} has schema version {found}, newer than the {supported} this "
            "sagakit understands; upgrade sagakit (nothing was changed)"
        )
        self.found = found
        self.supported = supported


class StoreUnavailableError(StoreError):
    """The saga log's database cannot be reached now: it is down, restarting, refusing
    connections, or did not answer in time. Waiting may mend it; a bad password, a missing
    database or a newer schema is a plain :class:`StoreError` instead, which waiting never
    mends. The message names the database (without its password) and what happened."""


class ConcurrentUpdateError(StoreError):
    """Another writer appended to this instance's log first (two engines ran one saga)."""

    def __init__(self, saga_id: str, seq: int) -> None:
        super().__init__(f"saga {saga_id!r}: log position {seq} was already written")
        self.saga_id = saga_id
        self.seq = seq


class MalformedEventError(SagakitError):
    """Data that is not a valid sagakit event; the message says exactly what is wrong."""


class ServiceDefinitionError(InvalidArgumentError):
    """A choreographed service's handlers break a rule; raised when they are declared, never
    when events arrive. (A wrong choreography is a :class:`SagaDefinitionError`.)"""


class LocalDatabaseError(SagakitError):
    """A service's own database cannot be used for its outbox or inbox (path in the message)."""


class BrokerError(SagakitError):
    """The message broker cannot be used."""


class UnsupportedBrokerError(BrokerError, InvalidArgumentError):
    """The broker URL's scheme is not one sagakit supports."""

    def __init__(self, url: str, supported: list[str]) -> None:
        super().__init__(
            f"unsupported broker URL {url!r}: use one of "
            + ", ".join(f"{s}://..." for s in supported)
        )
        self.url = url


class MissingBrokerDriverError(BrokerError):
    """The client library a broker URL needs is not installed; says which extra to install."""

    def __init__(self, scheme: str, package: str, extra: str) -> None:
        super().__init__(
            f"{scheme}:// brokers need the {package!r} package: pip install 'sagakit[{extra}]'"
        )
        self.extra = extra


class BrokerConnectionError(BrokerError):
    """The broker cannot be reached or dropped the connection; ``url`` has no password."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the broker at {url}: {reason}")
        self.url = url


class EventRejectedError(BrokerError):
    """The broker refused one event (over its size limit, say) while it takes others.

    Not an outage: the relay holds back that event's saga and keeps publishing the rest.
    """


class EventTooLargeError(EventRejectedError, InvalidArgumentError):
    """An event whose JSON is over the broker's ``max_event_bytes``.

    Raised by ``tx.emit`` inside the handler's transaction, so the event never reaches the
    outbox (the handler fails, is retried, and dead-lettered like any failing handler), and
    by :meth:`Broker.publish` for a row that reached the outbox anyway (written when the
    limit was higher): that row becomes a dead letter of the outbox, blocking no one.
    """

    def __init__(self, event_type: str, event_id: str, size: int, limit: int, broker: str) -> None:
        super().__init__(
            f"event {event_id!r} ({event_type}) is {size:,} bytes as JSON, over the "
            f"{limit:,} bytes {broker} takes: put large data elsewhere (object storage) "
            "and send its key"
        )
        self.event_type = event_type
        self.event_id = event_id
        self.size = size
        self.limit = limit


class BrokerNameError(BrokerError, InvalidArgumentError):
    """A stream or group name that some broker would refuse or mangle."""


class SignalTimeoutError(SagakitError):
    """A step waited for a message longer than its timeout; a failure like any other."""

    def __init__(self, saga: str, step: str, signal: str) -> None:
        super().__init__(f"saga {saga!r}, step {step!r}: no {signal!r} message in time")
        self.saga = saga
        self.step = step
        self.signal = signal


class OperatorActionError(SagakitError):
    """An operator's action (retry, resolve, cancel, skip, signal) that the saga's state does
    not allow; nothing was recorded or sent."""

    def __init__(self, saga_id: str, action: str, why: str) -> None:
        super().__init__(f"cannot {action} saga {saga_id!r}: {why}")
        self.saga_id = saga_id
        self.action = action
        self.why = why


class StepActionError(OperatorActionError):
    """An operator's action on one step (retry from it, skip it) that the step does not allow.

    ``why`` follows the step's name: ``cannot skip saga 'o-1': step 'email' did not fail``.
    """

    def __init__(self, saga_id: str, action: str, step: str, why: str) -> None:
        super().__init__(saga_id, action, f"step {step!r} {why}")
        self.step = step


class ResultTimeoutError(SagakitError, TimeoutError):
    """The saga had no outcome within the time the caller was willing to wait."""

    def __init__(self, saga_id: str, timeout: float, status: str) -> None:
        super().__init__(f"saga {saga_id!r} still {status} after {timeout:g}s")
        self.saga_id = saga_id
        self.status = status
