"""The overview's chart of sagas started per hour, as SVG drawn on the server.

Bars are SVG shapes with their sizes as attributes, not inline styles, so the page's
Content-Security-Policy (no inline style) holds and no charting script is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagakit._timeline import local_time
from sagakit.dashboard._activity import Hour
from sagakit.log import SagaStatus

WIDTH = 720.0
HEIGHT = 140.0
_GAP = 2.0
_ORDER = (
    SagaStatus.COMPLETED,
    SagaStatus.COMPENSATED,
    SagaStatus.RUNNING,
    SagaStatus.PENDING,
    SagaStatus.COMPENSATING,
    SagaStatus.NEEDS_ATTENTION,
)
"""Bottom to top: finished well, undone, under way, needing a person."""


@dataclass(frozen=True, slots=True)
class Block:
    """One status's part of one hour's bar."""

    x: float
    y: float
    width: float
    height: float
    status: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    blocks: list[Block]
    labels: list[tuple[float, str]]
    """Every few hours, where its label goes and the hour's clock time."""
    peak: int
    width: float = WIDTH
    height: float = HEIGHT


def bars(hours: list[Hour]) -> Chart:
    """A stacked bar per hour, scaled to the busiest hour."""
    peak = max((hour.total for hour in hours), default=0)
    slot = WIDTH / max(len(hours), 1)
    blocks: list[Block] = []
    labels: list[tuple[float, str]] = []
    for index, hour in enumerate(hours):
        x = index * slot
        when = local_time(hour.start, "%H:00")
        if index % 4 == 0:
            labels.append((x, when))
        top = HEIGHT
        for status in _ORDER:
            n = hour.statuses.get(status, 0)
            if not n:
                continue
            tall = HEIGHT * n / peak
            top -= tall
            title = f"{when}: {n} {status.value}"
            blocks.append(Block(x, top, slot - _GAP, tall, status.value, title))
    return Chart(blocks, labels, peak)
