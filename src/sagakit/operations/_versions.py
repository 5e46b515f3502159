"""Which saga versions are in the log and which live workers serve them: what an operator
checks in a rolling deploy before the last worker of an old version goes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sagakit.log import SagaStatus
from sagakit.log._records import UNFINISHED
from sagakit.store import Store


@dataclass
class VersionInfo:
    """One saga version: its instances by status, and the live workers that run it."""

    name: str
    version: int
    statuses: dict[SagaStatus, int] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)
    """Owners of the live workers that registered this version."""

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def in_flight(self) -> int:
        """Instances a worker still has to drive (pending, running or compensating)."""
        return sum(self.statuses.get(status, 0) for status in UNFINISHED)

    @property
    def stranded(self) -> bool:
        """Instances in flight and no live worker to drive them."""
        return self.in_flight > 0 and not self.workers

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "in_flight": self.in_flight,
            "statuses": {status.value: n for status, n in self.statuses.items()},
            "workers": self.workers,
        }


async def versions(store: Store, *, now: float | None = None) -> list[VersionInfo]:
    """Every version with instances in the log or a live worker, by name and version."""
    now = time.time() if now is None else now
    found: dict[tuple[str, int], VersionInfo] = {}

    def of(name: str, version: int) -> VersionInfo:
        return found.setdefault((name, version), VersionInfo(name, version))

    for count in await store.counts():
        of(count.name, count.version).statuses[count.status] = count.total
    for worker in await store.workers():
        if worker.live(now):
            for key in worker.sagas:
                name, _, version = key.rpartition("@")
                of(name, int(version)).workers.append(worker.owner)
    return [found[key] for key in sorted(found)]
