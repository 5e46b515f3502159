"""The home page's numbers: sagas by status, by definition, and started per hour.

All of it is :func:`sagakit.operations.count`, which the store answers with one counting
statement per call (on an index of the instance rows, without reading any log): the hours
are 24 calls, one creation window each, made one after the other so that a PostgreSQL pool
is never filled by one page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sagakit.log import SagaStatus
from sagakit.operations import Query, count
from sagakit.store import Count, Store

HOUR = 3600.0


@dataclass
class Totals:
    """Counts by status, and by saga name@version and status."""

    by_status: dict[SagaStatus, int] = field(default_factory=dict)
    by_saga: dict[str, dict[SagaStatus, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True, slots=True)
class Hour:
    """Sagas created within one hour, by the status they have now."""

    start: float
    statuses: dict[SagaStatus, int]

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


async def totals(store: Store, query: Query | None = None) -> Totals:
    """What :func:`count` finds, summed by status and by definition."""
    found = Totals()
    for row in await count(store, query):
        found.by_status[row.status] = found.by_status.get(row.status, 0) + row.total
        per_saga = found.by_saga.setdefault(f"{row.name}@{row.version}", {})
        per_saga[row.status] = per_saga.get(row.status, 0) + row.total
    return found


async def hours(store: Store, now: float, last: int = 24) -> list[Hour]:
    """Sagas started in each of the ``last`` hours up to ``now`` (the current hour last),
    by status; whole clock hours, so the bars line up with the clock."""
    top = math.floor(now / HOUR) * HOUR
    starts = [top - HOUR * back for back in range(last - 1, -1, -1)]
    return [Hour(start, _by_status(await _hour(store, start))) for start in starts]


async def _hour(store: Store, start: float) -> list[Count]:
    # The store's bounds are exclusive: from just before the hour's start, to its end.
    window = Query(created_after=math.nextafter(start, -math.inf), created_before=start + HOUR)
    return await count(store, window)


def _by_status(rows: list[Count]) -> dict[SagaStatus, int]:
    found: dict[SagaStatus, int] = {}
    for row in rows:
        found[row.status] = found.get(row.status, 0) + row.total
    return found
