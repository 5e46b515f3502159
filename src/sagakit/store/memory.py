"""A saga log in this process's memory: for tests, benchmarks and throwaway runs."""

from __future__ import annotations

from collections.abc import Sequence

from sagakit.errors import ConcurrentUpdateError, UnknownSagaError
from sagakit.log import UNFINISHED, Instance, Record, SagaStatus
from sagakit.store.base import StoredSaga


class MemoryStore:
    """Keeps every instance's row and log in dicts; nothing survives the process."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._instances: dict[str, Instance] = {}
        self._logs: dict[str, list[Record]] = {}
        self._status: dict[str, tuple[SagaStatus, float]] = {}

    async def create(self, instance: Instance, records: Sequence[Record]) -> bool:
        if instance.id in self._instances:
            return False
        self._instances[instance.id] = instance
        self._logs[instance.id] = list(records)
        return True

    async def append(self, saga_id: str, records: Sequence[Record], status: SagaStatus) -> None:
        log = self._logs.get(saga_id)
        if log is None:
            raise UnknownSagaError(saga_id)
        if records[0].seq != len(log):
            raise ConcurrentUpdateError(saga_id, records[0].seq)
        log.extend(records)
        self._status[saga_id] = (status, records[-1].at)

    async def load(self, saga_id: str) -> StoredSaga | None:
        if saga_id not in self._instances:
            return None
        return StoredSaga(self._current(saga_id), list(self._logs[saga_id]))

    async def instances(
        self, status: SagaStatus | None = None, limit: int | None = None
    ) -> list[Instance]:
        current = [self._current(saga_id) for saga_id in reversed(self._instances)]
        found = [i for i in current if status is None or i.status is status]
        return found if limit is None else found[:limit]

    async def unfinished(self) -> list[Instance]:
        current = [self._current(saga_id) for saga_id in self._instances]
        return [i for i in current if i.status in UNFINISHED]

    def _current(self, saga_id: str) -> Instance:
        """The row as created, with the status the last append set (kept apart: appends are hot)."""
        instance = self._instances[saga_id]
        if saga_id not in self._status:
            return instance
        status, updated_at = self._status[saga_id]
        return instance._replace(status=status, updated_at=updated_at)

    async def close(self) -> None:
        return None
