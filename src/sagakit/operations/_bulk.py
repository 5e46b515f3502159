"""One operator action on every saga a query finds, with a dry run first.

The matches are listed before anything is done (acting changes what a query finds, so
acting page by page would skip or repeat sagas), then the action runs on each in turn. A
saga the action refuses (it moved on since it was listed, say) is reported and the rest
go ahead: one bad saga must not leave an operator's fix half applied without saying where.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sagakit.errors import SagakitError
from sagakit.operations._query import Query, SagaView, find
from sagakit.store import Store

_PAGE = 500


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What happened to one saga: ``error`` None and ``applied`` False in a dry run."""

    saga_id: str
    applied: bool
    error: str | None = None


async def matches(store: Store, query: Query, *, now: float | None = None) -> list[SagaView]:
    """Every saga ``query`` finds, newest first, read to the last page."""
    found: list[SagaView] = []
    after = None
    while True:
        page = await find(store, query, limit=_PAGE, after=after, now=now)
        found += page.sagas
        if page.next is None:
            return found
        after = page.next


async def act_on_each(
    views: list[SagaView], action: Callable[[str], Awaitable[None]], *, apply: bool
) -> list[BulkOutcome]:
    """Run ``action`` on each saga's id when ``apply``; otherwise only say what it would touch."""
    if not apply:
        return [BulkOutcome(view.instance.id, applied=False) for view in views]
    outcomes = []
    for view in views:
        try:
            await action(view.instance.id)
        except SagakitError as error:
            outcomes.append(BulkOutcome(view.instance.id, applied=False, error=str(error)))
        else:
            outcomes.append(BulkOutcome(view.instance.id, applied=True))
    return outcomes
