"""A saga log in this process's memory: for tests, benchmarks and throwaway runs."""

from __future__ import annotations

import collections
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from sagakit.errors import ConcurrentUpdateError, UnknownSagaError
from sagakit.log import Instance, Message, Record, SagaStatus
from sagakit.log._records import TERMINAL, UNFINISHED
from sagakit.store._base import ANY_INSTANCE, ANY_MESSAGE, FirstCall, StoredSaga, Watch
from sagakit.store._filter import ALL, Count, InstanceFilter, Position, fields_match
from sagakit.store._fleet import FORGOTTEN_AFTER, WorkerInfo
from sagakit.store._sql import record_of
from sagakit.store._watchers import Watchers

__all__ = ["MemoryStore"]


_Packed = tuple[int, str, float, str | None, int, str | None]
"""A stored record as a plain tuple of strings and numbers (its type by value)."""


def _packed(records: Sequence[Record]) -> tuple[_Packed, ...]:
    """Records as the store keeps them: plain tuples holding no object the garbage collector
    tracks, so it stops tracking them too. A Record (a named tuple, holding an enum member)
    stays tracked for ever, and a store of 100,000 sagas made every full collection walk
    their 800,000 records: a quarter of the benchmark's time."""
    return tuple([(r.seq, r.type._value_, r.at, r.step, r.attempt, r.data) for r in records])


class _Row:
    """The mutable current state of one instance (appends are hot, so no copying); its
    fields are strings and numbers, but for the status (see :func:`_packed`)."""

    __slots__ = (
        "created_at",
        "due_at",
        "id",
        "last_message",
        "lease_expires",
        "lease_owner",
        "log",
        "name",
        "status",
        "updated_at",
        "version",
    )

    def __init__(self, instance: Instance, log: tuple[_Packed, ...]) -> None:
        self.id = instance.id
        self.name = instance.name
        self.version = instance.version
        self.created_at = instance.created_at
        self.status = instance.status
        self.updated_at = instance.updated_at
        self.due_at = instance.due_at
        self.lease_owner = instance.lease_owner
        self.lease_expires = instance.lease_expires
        self.last_message = 0
        self.log = log

    def current(self) -> Instance:
        return Instance(
            self.id,
            self.name,
            self.version,
            self.status,
            self.created_at,
            self.updated_at,
            self.due_at,
            self.lease_owner,
            self.lease_expires,
        )

    @property
    def records(self) -> list[Record]:
        return [record_of(packed) for packed in self.log]

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def rank(self) -> float:
        """Claims take the earliest first: when it became due, or its lease lapsed."""
        if self.due_at is not None:
            return self.due_at
        if self.lease_expires is not None:
            return self.lease_expires
        return self.created_at

    def due(self, now: float) -> bool:
        """Its time has come, or whoever drove it stopped renewing (a dead worker)."""
        if self.due_at is not None and self.due_at <= now:
            return True
        return self.lease_expires is not None and self.lease_expires <= now

    def free(self, owner: str, now: float) -> bool:
        return (
            self.lease_owner is None
            or self.lease_owner == owner
            or (self.lease_expires is not None and self.lease_expires <= now)
        )


class MemoryStore:
    """Keeps every instance's row and log in dicts; nothing survives the process."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._rows: dict[str, _Row] = {}
        self._inbox: list[Message] = []
        self._workers: dict[str, WorkerInfo] = {}
        self._watchers = Watchers()

    async def create(self, instance: Instance, records: Sequence[Record]) -> bool:
        if instance.id in self._rows:
            return False
        self._rows[instance.id] = _Row(instance, _packed(records))
        if instance.due_at is not None and self._watchers:
            self._watchers.wake(ANY_INSTANCE)
        return True

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        row = self._rows.get(saga_id)
        if row is None:
            raise UnknownSagaError(saga_id)
        if records[0].seq != len(row.log):
            raise ConcurrentUpdateError(saga_id, records[0].seq)
        row.log += _packed(records)
        row.status = status
        row.updated_at = records[-1].at
        if status in TERMINAL:
            row.lease_owner = row.lease_expires = row.due_at = None
        if self._watchers:
            self._watchers.wake(saga_id)

    async def append_migrated(
        self, saga_id: str, records: Sequence[Record], status: SagaStatus, version: int
    ) -> None:
        await self.append(saga_id, records, status)  # awaits nothing: one step, as a commit
        self._rows[saga_id].version = version

    async def load(self, saga_id: str) -> StoredSaga | None:
        row = self._rows.get(saga_id)
        return None if row is None else self._stored(row)

    async def load_many(self, saga_ids: Sequence[str]) -> list[StoredSaga]:
        rows = self._rows
        return [self._stored(rows[saga_id]) for saga_id in saga_ids if saga_id in rows]

    async def instances(
        self, rows: InstanceFilter = ALL, *, after: Position | None = None, limit: int | None = None
    ) -> list[Instance]:
        found = sorted(self._passing(rows), key=_position, reverse=True)
        if after is not None:
            found = [i for i in found if (i.created_at, i.id) < after]
        return found if limit is None else found[:limit]

    async def counts(self, rows: InstanceFilter = ALL) -> list[Count]:
        tally = collections.Counter((i.name, i.version, i.status) for i in self._passing(rows))
        return [Count(*key, n) for key, n in sorted(tally.items())]

    def _passing(self, rows: InstanceFilter) -> Iterator[Instance]:
        for row in self._rows.values():
            instance = row.current()
            if rows.admits(instance) and (
                not rows.fields or fields_match(rows.fields, row.records)
            ):
                yield instance

    async def unfinished(self) -> list[Instance]:
        return [r.current() for r in self._rows.values() if r.status in UNFINISHED]

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
        now = time.time()
        ready = [
            (row.rank, saga_id)
            for saga_id, row in self._rows.items()
            if row.status in UNFINISHED
            and row.free(owner, now)
            and (not due_only or row.due(now))
            and (known is None or row.key in known)
        ]
        taken = [saga_id for _, saga_id in sorted(ready)[:limit]]
        for saga_id in taken:
            self._lease(saga_id, owner, now + lease)
            if self._rows[saga_id].status is SagaStatus.PENDING:  # as a claim says (Store)
                self._rows[saga_id].status = SagaStatus.RUNNING
        claimed = [self._stored(self._rows[saga_id]) for saga_id in taken]
        if not first_calls:
            return claimed
        return [self._first_call(stored, first_calls, now) for stored in claimed]

    def _first_call(
        self, stored: StoredSaga, first_calls: Mapping[str, FirstCall], now: float
    ) -> StoredSaga:
        """``stored`` with its first call recorded, where :class:`FirstCall` says so."""
        row = self._rows[stored.instance.id]
        call = first_calls.get(row.key)
        record = None if call is None else call.record(stored, now)
        if record is None:
            return stored
        row.log += _packed([record])
        row.updated_at = now
        return self._stored(row)

    async def acquire(self, owner: str, saga_id: str, lease: float) -> bool:
        row = self._rows.get(saga_id)
        now = time.time()
        if row is None or not row.free(owner, now):
            return False
        self._lease(saga_id, owner, now + lease)
        return True

    async def renew(self, owner: str, saga_ids: Sequence[str], lease: float) -> list[str]:
        now = time.time()
        held = [
            saga_id
            for saga_id in saga_ids
            if (row := self._rows.get(saga_id)) is not None and row.lease_owner == owner
        ]
        for saga_id in held:
            self._rows[saga_id].lease_expires = now + lease
        return held

    async def release(self, owner: str, saga_id: str, due_at: float | None) -> None:
        row = self._rows.get(saga_id)
        if row is None or row.lease_owner != owner:
            return
        row.lease_owner = row.lease_expires = None
        if row.status not in UNFINISHED:
            row.due_at = None
        elif due_at is not None and (row.due_at is None or due_at < row.due_at):
            row.due_at = due_at  # a message sent meanwhile made it due sooner: keep that
        self._watchers.wake(saga_id)

    async def send(self, saga_id: str, name: str, payload: str) -> Message:
        row = self._rows.get(saga_id)
        if row is None:
            raise UnknownSagaError(saga_id)
        message = Message(len(self._inbox) + 1, saga_id, name, payload, time.time())
        self._inbox.append(message)
        row.last_message = message.id
        if row.status in UNFINISHED:
            row.due_at = min(row.due_at or message.at, message.at)
        self._watchers.wake(saga_id)
        self._watchers.wake(ANY_INSTANCE)
        self._watchers.wake(ANY_MESSAGE)
        return message

    async def messages(self, saga_id: str, after: int = 0) -> list[Message]:
        return [m for m in self._inbox if m.saga_id == saga_id and m.id > after]

    def watch(self, saga_id: str) -> AbstractAsyncContextManager[Watch]:
        return self._watchers.watch(saga_id)

    async def close(self) -> None:
        return None

    async def beat(self, worker: WorkerInfo) -> None:
        self._workers[worker.owner] = worker

    async def retire(self, owner: str) -> None:
        self._workers.pop(owner, None)

    async def workers(self) -> list[WorkerInfo]:
        recent = time.time() - FORGOTTEN_AFTER
        return sorted(w for w in self._workers.values() if w.seen_at > recent)

    def _stored(self, row: _Row) -> StoredSaga:
        return StoredSaga(row.current(), row.records, row.last_message)

    def _lease(self, saga_id: str, owner: str, until: float) -> None:
        row = self._rows[saga_id]
        row.lease_owner = owner
        row.lease_expires = until
        row.due_at = None


def _position(instance: Instance) -> Position:
    return (instance.created_at, instance.id)
