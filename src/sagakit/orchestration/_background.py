"""Work a worker keeps running beside its claims: its reports of itself, its ear on the
inbox. Each runs as a task for as long as a block runs, and never outlives it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def beside(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` as a task while in the block; cancel it, and wait for it, on the way out."""
    task = asyncio.get_running_loop().create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Complaint:
    """Says that something keeps failing once, and once that it works again, instead of at
    every try: during a database outage a worker's side work fails for minutes on end."""

    def __init__(self, logger: Any, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failing = False

    def failed(self, error: BaseException) -> None:
        if not self.failing:
            self.failing = True
            self.logger.warning("%s failed: %s; trying again", self.what, error)

    def worked(self) -> None:
        if self.failing:
            self.failing = False
            self.logger.info("%s works again", self.what)
