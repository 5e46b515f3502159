"""Which instances a PostgreSQL store's watches wait on, as the writers can see it.

A status change is announced (``NOTIFY``) only for an instance somebody watches: every
NOTIFY takes a lock on the whole database at commit, so announcing every change made the
batches of all workers commit one at a time. The watched instances are rows of
``sagakit_watched``, one per instance and store, which the writing statement reads
(see :data:`sagakit.store._postgres_schema.CHANNEL` for why none is missed). A row is
written when a store's first watch of an instance is entered and deleted when its last
one is left; a store that died without deleting its rows costs the writers a NOTIFY per
change of those instances until a day has passed and the next registration drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from sagakit.errors import StoreError
from sagakit.store._postgres_pool import RetryingPool
from sagakit.store._postgres_url import Settings

FORGOTTEN_AFTER = 86_400.0
"""Seconds after which a registration is taken for one a dead store left behind."""

_NOW = "extract(epoch FROM now())::float8"
_REGISTER = f"""
WITH stale AS (
    DELETE FROM sagakit_watched WHERE since < {_NOW} - {FORGOTTEN_AFTER}
), registered AS (
    INSERT INTO sagakit_watched (saga_id, watcher, since) VALUES ($1, $2, {_NOW})
    ON CONFLICT (saga_id, watcher) DO UPDATE SET since = excluded.since
)
SELECT 1 FROM sagas WHERE id = $1 FOR SHARE
"""
"""Register, and in the same transaction lock the instance's row against a writer that
did not see the registration: such a writer holds the row until it commits, so this
statement returns only after that commit, which the watcher's next read then sees."""
_UNREGISTER = "DELETE FROM sagakit_watched WHERE saga_id = $1 AND watcher = $2"
_FORGET_ALL = "DELETE FROM sagakit_watched WHERE watcher = $1"


class WatchedSagas:
    """This store's registrations, counted: a row per instance however many watches."""

    def __init__(self, pool: RetryingPool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self.watcher = uuid.uuid4().hex
        """This store's name in ``sagakit_watched``."""
        self._watches: dict[str, int] = {}
        """Watches inside their block, by instance."""
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Per instance, a lock and how many watches use it (entering, inside or leaving),
        so that a watch entered while the last one is left never finds its row deleted
        after it was written, and the lock goes once nobody uses it."""

    @contextlib.asynccontextmanager
    async def registered(self, saga_id: str) -> AsyncIterator[None]:
        """Within the block, changes of ``saga_id``'s status are announced to listeners."""
        lock, users = self._locks.get(saga_id, (asyncio.Lock(), 0))
        self._locks[saga_id] = (lock, users + 1)
        try:
            async with lock:
                if saga_id not in self._watches:
                    await self._run(_REGISTER, saga_id)
                self._watches[saga_id] = self._watches.get(saga_id, 0) + 1
            try:
                yield
            finally:
                async with lock:
                    self._watches[saga_id] -= 1
                    if not self._watches[saga_id]:
                        del self._watches[saga_id]
                        with contextlib.suppress(StoreError):  # forgotten in a day anyway
                            await self._run(_UNREGISTER, saga_id)
        finally:
            lock, users = self._locks[saga_id]
            if users == 1:
                del self._locks[saga_id]
            else:
                self._locks[saga_id] = (lock, users - 1)

    async def forget_all(self) -> None:
        """Delete this store's registrations (it is closing)."""
        if self._watches:
            self._watches.clear()
            with contextlib.suppress(StoreError), self._settings.translated():
                await self._pool.execute(_FORGET_ALL, self.watcher)

    async def _run(self, sql: str, saga_id: str) -> None:
        with self._settings.translated():
            await self._pool.execute(sql, saga_id, self.watcher)
