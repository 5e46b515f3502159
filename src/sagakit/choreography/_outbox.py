"""The transactional outbox and the inbox, kept in a choreographed service's own database.

Why both: a service that commits its change and *then* publishes an event loses the event
if it crashes in between, and one that publishes first announces a change that may never
commit. So the event is written to the ``sagakit_outbox`` table in the same local
transaction as the change, and a :class:`~sagakit.choreography.Relay` publishes it afterwards,
as often as it takes. That makes publishing at-least-once, and brokers redeliver too; so
each consumer records the ids of the events it handled in ``sagakit_inbox``, again in the
same transaction as its work, and a redelivered event is acknowledged with no second effect.

Every :class:`LocalDatabase` keeps the same two tables (types vary by database)::

    sagakit_outbox(id ascending, stream, correlation_id, event json, created_at,
                   sent_at NULL, refusals 0.., last_error NULL, retry_at NULL, dead_at NULL)
    sagakit_inbox(consumer, event_id, processed_at, PRIMARY KEY (consumer, event_id))

A row the broker keeps refusing becomes a *dead letter* (``dead_at`` set) instead of being
tried for ever; its saga's later rows wait behind it, so that re-sending it keeps their
order. This module holds the protocol; the backends are :class:`SqliteDatabase`
(:mod:`sagakit.choreography.sqlite`), :mod:`sagakit.choreography.postgres` and
:mod:`sagakit.choreography.sqlalchemy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from sagakit.bus import Event


@dataclass(frozen=True, slots=True)
class Pending:
    """An outbox row not yet confirmed by the broker, as the relay claimed it.

    ``refusals`` is how many times the broker refused it so far (each one recorded by
    :meth:`OutboxClaim.refused`).
    """

    id: int
    stream: str
    event: Event
    refusals: int = 0

    @property
    def correlation_id(self) -> str:
        return self.event.correlation_id


@dataclass(frozen=True, slots=True)
class OutboxDeadLetter:
    """An outbox row the relay gave up on: kept, with why, until an operator re-sends it.

    ``event`` is the row's JSON text as it was written (it may be what could not be read).
    Its saga's later events wait behind it, so their order is kept when it is re-sent.
    """

    id: int
    stream: str
    correlation_id: str
    event: str
    refusals: int
    error: str
    created_at: float
    dead_at: float


class OutboxTransaction(Protocol):
    """One open local transaction: the service's own work, its inbox and its outbox."""

    @property
    def connection(self) -> Any:
        """What the service's own tables are reached through, inside this transaction:
        the driver's connection (``sqlite3.Connection``, ``asyncpg.Connection``) or an
        ORM session (SQLAlchemy's ``Session`` or ``AsyncSession``)."""
        ...

    async def first_delivery(self, consumer: str, event_id: str) -> bool:
        """Record that ``consumer`` handled ``event_id``; False if it already had."""
        ...

    async def enqueue(self, stream: str, event: Event) -> None:
        """Add ``event`` to the outbox, to be published to ``stream`` once this commits."""
        ...

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call a plain (sync) handler as this database's driver allows: on the event loop
        where its calls are quick local ones (SQLite) or where it has no sync API (asyncpg),
        in a thread where they wait on a server (SQLAlchemy's ``Session``)."""
        ...


class OutboxClaim(Protocol):
    """Chains of outbox rows one relay holds inside one open transaction of its own.

    A *chain* is one correlation id's unsent rows, oldest first. A claim holds every unsent
    row of its chains, and leaves alone a chain any row of which another claim holds: so
    no other relay (another replica of the service) publishes the same saga's events until
    this claim ends, and order per saga survives several replicas. Holding the head alone
    is not enough: ids are given when a row is written, not when it commits, so a row with
    an earlier id may commit after the claim and become an unheld head. What is marked
    here commits when the claim ends.
    """

    @property
    def rows(self) -> Sequence[Pending]:
        """The claimed chains' rows, in id order."""
        ...

    async def sent(self, ids: Sequence[int]) -> None:
        """The broker confirmed these rows: never publish them again."""
        ...

    async def refused(self, row_id: int, error: str, retry_at: float | None) -> None:
        """The broker refused the row (``error`` says why): try it again at ``retry_at``
        (epoch seconds), or, with None, give up on it: it becomes a dead letter."""
        ...


class LocalDatabase(Protocol):
    """A service's own database, with the outbox and inbox tables beside its own.

    :class:`sagakit.testing.LocalDatabaseContract` holds every implementation to these
    rules against a real server.
    """

    def transaction(self) -> AbstractAsyncContextManager[OutboxTransaction]:
        """Commit on success, roll back on any error."""
        ...

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxClaim]:
        """Claim up to ``limit`` chains whose head is due (not refused until later, not
        dead) and held by no other claim: the oldest heads first. A chain whose head is a
        dead letter stays unclaimed until the head is re-sent."""
        ...

    def changes(self, wake: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """While inside, call ``wake`` soon after any connection commits outbox rows (a
        database that cannot tell does nothing: the relay's poll finds them)."""
        ...

    async def backlog(self) -> int:
        """How many events wait to be published, dead letters not counted."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[OutboxDeadLetter]:
        """The rows given up on, oldest first."""
        ...

    async def resend(self, ids: Sequence[int]) -> int:
        """Make these dead letters publishable again (refusals start over); how many were."""
        ...

    async def prune(self, sent_before: float) -> int:
        """Delete rows sent before ``sent_before`` (epoch seconds); how many went.

        Sent rows are kept until then as a record of what was published; an operator (or a
        periodic job) prunes them.
        """
        ...

    async def close(self) -> None:
        """Close the connection; the database is unusable afterwards."""
        ...


HEADS_WHERE = """
    o.sent_at IS NULL AND o.dead_at IS NULL AND (o.retry_at IS NULL OR o.retry_at <= {now})
    AND NOT EXISTS (
        SELECT 1 FROM sagakit_outbox p
        WHERE p.correlation_id = o.correlation_id AND p.sent_at IS NULL AND p.id < o.id
    )"""
"""Which rows head a chain that may be claimed now (``o``: the outbox), ``{now}`` being the
database's parameter for the current time: the oldest unsent row of its correlation id,
not dead and due. A dead or refused head so keeps its whole chain back."""


def unreadable(row_id: int, error: Exception) -> str:
    """The dead-letter reason of an outbox row whose event cannot be read (written by an
    older sagakit, or by hand): it is given up at once, since no retry can read it."""
    return f"outbox row {row_id}: its event cannot be read: {error}"
