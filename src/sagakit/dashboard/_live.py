"""Live updates of the saga page, as Server-Sent Events.

The stream is fed by ``store.watch(saga_id)``: the store wakes it at each change it makes
or hears of (NOTIFY on PostgreSQL; a short poll on SQLite, which cannot be told of other
processes' writes), and :data:`CHECK` bounds each wait besides. Each wake-up loads the
saga and sends a ``change`` event only when what the page shows changed, carrying the
page's new :func:`~sagakit.dashboard._story.signature`; the page then fetches its live
fragment. A stream ends after ``lifetime`` seconds (the browser's ``EventSource`` opens a
new one), and with a ``gone`` event if the saga is no longer there.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator

from sagakit.dashboard._story import signature
from sagakit.log import SagaState
from sagakit.operations import SagaView
from sagakit.store import Store

CHECK = 15.0
"""Longest wait between two looks at the saga, whatever the store's watch says."""
RECONNECT_MS = 3000
"""How long a browser waits before it reopens a stream that ended."""


def event(name: str, data: object) -> str:
    """One Server-Sent Event, its data a line of JSON."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def changes(
    store: Store, saga_id: str, *, lifetime: float, check: float = CHECK
) -> AsyncGenerator[str, None]:
    """The events of one saga page: its state now, then each change, for ``lifetime``.

    The watch is entered before the first look, so a change made in between is not missed.
    """
    deadline = time.monotonic() + lifetime
    yield f"retry: {RECONNECT_MS}\n\n"
    async with store.watch(saga_id) as change:
        seen = None
        while True:
            stored = await store.load(saga_id)
            if stored is None:
                yield event("gone", {"id": saga_id})
                return
            view = SagaView(stored.instance, SagaState.from_records(saga_id, stored.records))
            now = signature(view)
            if now != seen:
                yield event("change", {"version": now, "status": view.state.status.value})
                seen = now
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await change.wait(min(left, check))
