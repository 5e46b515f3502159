"""Saga logs, chosen by URL: ``memory://``, ``sqlite:///path.db``."""

from __future__ import annotations

from sagakit.errors import UnsupportedDatabaseError
from sagakit.store.base import Store, StoredSaga
from sagakit.store.memory import MemoryStore

__all__ = ["SCHEMES", "MemoryStore", "Store", "StoredSaga", "open_store"]

SCHEMES = ["memory", "sqlite"]


async def open_store(url: str) -> Store:
    """Open (and migrate, if it is new or older) the saga log at ``url``.

    Raises :class:`UnsupportedDatabaseError` naming the supported schemes for any other URL.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        from sagakit.store.sqlite import SqliteStore

        return await SqliteStore.open(url)
    raise UnsupportedDatabaseError(url, SCHEMES)
