"""The Store protocol: everything the engine and the CLI need from a saga log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sagakit.log import Instance, Record, SagaStatus


@dataclass(frozen=True, slots=True)
class StoredSaga:
    """An instance's row and its whole log, in ``seq`` order."""

    instance: Instance
    records: list[Record]


class Store(Protocol):
    """A durable, append-only saga log plus a current-state row per instance.

    When ``create`` or ``append`` returns, the records are durable (for a durable store):
    the engine relies on that to call no action before its ``*_started`` record is safe.
    Every store passes :class:`sagakit.testing.store_contract.StoreContract`.
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

    async def load(self, saga_id: str) -> StoredSaga | None:
        """The instance and its log, or None if there is no such instance."""
        ...

    async def instances(
        self, status: SagaStatus | None = None, limit: int | None = None
    ) -> list[Instance]:
        """Instances, newest first, optionally only those with ``status``."""
        ...

    async def unfinished(self) -> list[Instance]:
        """Instances that are pending, running or compensating, oldest first."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...
