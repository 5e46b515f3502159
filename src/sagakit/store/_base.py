"""The Store protocol: everything the engine and the CLI need from a saga log."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from sagakit.log import Instance, Message, Record, RecordType, SagaStatus
from sagakit.store._filter import ALL, Count, InstanceFilter, Position
from sagakit.store._fleet import WorkerInfo

ANY_INSTANCE = "*"
"""Watch this id with ``watch`` to hear of new work: a store wakes its watchers when an
instance is created due, or a message makes one due (workers then claim at once)."""
ANY_MESSAGE = "*inbox"
"""Watch this id with ``watch`` to hear that a message was sent to some instance: a worker
tells the sagas it drives to read their inboxes, so a cancel lands at the next step."""


@dataclass(frozen=True, slots=True)
class StoredSaga:
    """An instance's row and its whole log, in ``seq`` order."""

    instance: Instance
    records: list[Record]
    last_message: int = 0
    """The id of the newest message in the instance's inbox (0: none), so that an engine
    reads the inbox only when it holds something the log has not taken yet."""


class FirstCall(NamedTuple):
    """A fresh instance's first call, which a claim records as it takes the instance, in
    the same transaction, sparing its driver a write (``claim(first_calls=...)``).

    A claim writes it only where the driver would write that very record first: the log is
    the ``saga_started`` record alone, the inbox is empty (a cancel would come before any
    call), and the ``saga_started`` payload begins with :attr:`started`, the registered
    definition with no deadline (a passed one would come first, another definition would
    need attention). The driver then finds the call started by its own holder, and makes it.
    """

    started: str
    """What the ``saga_started`` payload begins with: the definition's fields up to the input."""
    step: str
    """The first step's name."""
    data: str
    """The ``step_started`` payload (a ``CallStarted``): who makes the call."""

    def record(self, stored: StoredSaga, at: float) -> Record | None:
        """The ``step_started`` record a claim at ``at`` writes for ``stored``, if any."""
        records = stored.records
        if len(records) != 1 or stored.last_message:
            return None
        started = records[0]
        if started.type is not RecordType.SAGA_STARTED or started.data is None:
            return None
        if not started.data.startswith(self.started):
            return None
        return self.made_at(at)

    def made_at(self, at: float) -> Record:
        """The ``step_started`` record of this call, recorded at ``at``."""
        return Record(1, RecordType.STEP_STARTED, at, self.step, 1, self.data)


class Watch(Protocol):
    """What ``async with store.watch(saga_id) as watch`` gives: news of one instance's
    changes from entering the block on, so that a caller may look at the instance and then
    wait, without missing a change made in between::

        async with store.watch(saga_id) as watch:
            while not finished(await store.load(saga_id)):
                await watch.wait(timeout)
    """

    async def wait(self, timeout: float) -> None:
        """Return at the first change of the instance after the watch was entered (or after
        the previous ``wait`` returned), or after ``timeout`` seconds.

        A spurious early return is allowed, a missed change is not.
        """
        ...


class Store(Protocol):
    """A durable, append-only saga log plus a current-state row per instance.

    When ``create`` or ``append`` returns, the records are durable (for a durable store):
    the engine relies on that to call no action before its ``*_started`` record is safe.
    Every store passes :class:`sagakit.testing.StoreContract`.
    """

    url: str

    async def create(self, instance: Instance, records: Sequence[Record]) -> bool:
        """Record a new instance with its first records; False if the id already exists."""
        ...

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        """Append records (``seq`` continuing the log) and set the instance's status.

        Raises :class:`~sagakit.errors.ConcurrentUpdateError` if a ``seq`` is taken, and
        :class:`~sagakit.errors.UnknownSagaError` if there is no such instance.
        """
        ...

    async def append_migrated(
        self, saga_id: str, records: Sequence[Record], status: SagaStatus, version: int
    ) -> None:
        """:meth:`append`, also setting the instance's definition ``version``, in one
        transaction: an operator moved the instance to another version of its saga, so
        claims by ``name@version`` (``claim(known=...)``) find it under its new key, and
        never the row without the records that say so. Raises as :meth:`append` does."""
        ...

    async def load(self, saga_id: str) -> StoredSaga | None:
        """The instance and its log, or None if there is no such instance."""
        ...

    async def load_many(self, saga_ids: Sequence[str]) -> list[StoredSaga]:
        """The instances and their logs, in the order of ``saga_ids``, in one round trip
        where the store can (a listing reads a page of them); ids of no instance are left
        out."""
        ...

    async def instances(
        self, rows: InstanceFilter = ALL, *, after: Position | None = None, limit: int | None = None
    ) -> list[Instance]:
        """Instances that pass ``rows``, newest first (by ``created_at``, then ``id``), from
        just before ``after`` on: the pages of a listing, at most ``limit`` at a time."""
        ...

    async def counts(self, rows: InstanceFilter = ALL) -> list[Count]:
        """How many instances that pass ``rows`` each saga name has in each status,
        ordered by name and status; pairs with none are left out."""
        ...

    async def unfinished(self) -> list[Instance]:
        """Instances that are pending, running or compensating, oldest first."""
        ...

    async def claim(
        self,
        owner: str,
        limit: int,
        lease: float,
        *,
        due_only: bool = True,
        known: Collection[str] | None = None,
        first_calls: Mapping[str, FirstCall] | None = None,
    ) -> list[StoredSaga]:
        """Lease up to ``limit`` unfinished instances to ``owner`` for ``lease`` seconds.

        Only instances nobody holds (or whose lease has lapsed) are taken, and with
        ``due_only`` only those that are due: ``due_at`` has come, or the lease of whoever
        drove it lapsed (it died). With ``known`` (saga keys, ``name@version``) only
        instances of those definitions: a worker never takes a saga it cannot run, which
        waits for a worker that can. Earliest due first. Two owners
        claiming at once never get the same instance (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL). Returns the instances now held, each with its log, in the same
        round trip: a worker drives what it claims, so a separate load would only repeat it.
        A ``pending`` instance taken is ``running`` from then on (its driver's first record
        says so, and then changes no row). With ``first_calls`` (by saga key) the claim also
        appends a fresh instance's first ``step_started``, as :class:`FirstCall` says when,
        and returns it with the log.
        """
        ...

    async def acquire(self, owner: str, saga_id: str, lease: float) -> bool:
        """Lease one instance, whatever its status, if nobody else holds it."""
        ...

    async def renew(self, owner: str, saga_ids: Sequence[str], lease: float) -> list[str]:
        """Extend ``owner``'s leases; returns the ids it still holds (a lapsed one may be lost)."""
        ...

    async def release(self, owner: str, saga_id: str, due_at: float | None) -> None:
        """Give up ``owner``'s lease; the instance is next due at ``due_at`` (None: not
        until a message arrives), or sooner if a message sent while it was held made it
        due. A terminal ``append`` releases the lease by itself."""
        ...

    async def send(self, saga_id: str, name: str, payload: str) -> Message:
        """Put a message in an instance's inbox and make an unfinished instance due now.

        Raises :class:`~sagakit.errors.UnknownSagaError` if there is no such instance.
        """
        ...

    async def messages(self, saga_id: str, after: int = 0) -> list[Message]:
        """The instance's messages with ``id`` greater than ``after``, oldest first."""
        ...

    async def beat(self, worker: WorkerInfo) -> None:
        """Record that ``worker`` is alive and what it serves (replacing its last report)."""
        ...

    async def retire(self, owner: str) -> None:
        """Forget a worker that stopped cleanly."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """The workers' last reports, by owner (gone ones too, until they are retired or
        a report of theirs is older than a day)."""
        ...

    def watch(self, saga_id: str) -> AbstractAsyncContextManager[Watch]:
        """Watch the instance's row for changes while in the ``async with`` block.

        The watch is registered when the block is entered: a change committed after that,
        by this process or another, wakes its :meth:`Watch.wait` (a store that cannot be
        told of other processes' changes polls at a modest interval). ``ANY_INSTANCE``
        watches for new due work on any instance.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...


class StoreWrapper:
    """A :class:`Store` that hands every call to ``inner``: subclass it and override the
    calls to observe or change (tracing, fault injection), and the rest keep working."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url

    async def create(self, instance: Instance, records: Sequence[Record]) -> bool:
        return await self.inner.create(instance, records)

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        await self.inner.append(saga_id, records, status)

    async def append_migrated(
        self, saga_id: str, records: Sequence[Record], status: SagaStatus, version: int
    ) -> None:
        await self.inner.append_migrated(saga_id, records, status, version)

    async def load(self, saga_id: str) -> StoredSaga | None:
        return await self.inner.load(saga_id)

    async def load_many(self, saga_ids: Sequence[str]) -> list[StoredSaga]:
        return await self.inner.load_many(saga_ids)

    async def instances(
        self, rows: InstanceFilter = ALL, *, after: Position | None = None, limit: int | None = None
    ) -> list[Instance]:
        return await self.inner.instances(rows, after=after, limit=limit)

    async def counts(self, rows: InstanceFilter = ALL) -> list[Count]:
        return await self.inner.counts(rows)

    async def unfinished(self) -> list[Instance]:
        return await self.inner.unfinished()

    async def claim(
        self,
        owner: str,
        limit: int,
        lease: float,
        *,
        due_only: bool = True,
        known: Collection[str] | None = None,
        first_calls: Mapping[str, FirstCall] | None = None,
    ) -> list[StoredSaga]:
        return await self.inner.claim(
            owner, limit, lease, due_only=due_only, known=known, first_calls=first_calls
        )

    async def acquire(self, owner: str, saga_id: str, lease: float) -> bool:
        return await self.inner.acquire(owner, saga_id, lease)

    async def renew(self, owner: str, saga_ids: Sequence[str], lease: float) -> list[str]:
        return await self.inner.renew(owner, saga_ids, lease)

    async def release(self, owner: str, saga_id: str, due_at: float | None) -> None:
        await self.inner.release(owner, saga_id, due_at)

    async def send(self, saga_id: str, name: str, payload: str) -> Message:
        return await self.inner.send(saga_id, name, payload)

    async def messages(self, saga_id: str, after: int = 0) -> list[Message]:
        return await self.inner.messages(saga_id, after)

    async def beat(self, worker: WorkerInfo) -> None:
        await self.inner.beat(worker)

    async def retire(self, owner: str) -> None:
        await self.inner.retire(owner)

    async def workers(self) -> list[WorkerInfo]:
        return await self.inner.workers()

    def watch(self, saga_id: str) -> AbstractAsyncContextManager[Watch]:
        return self.inner.watch(saga_id)

    async def close(self) -> None:
        await self.inner.close()
