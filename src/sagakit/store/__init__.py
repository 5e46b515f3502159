"""Saga logs, chosen by URL: ``memory://``, ``sqlite:///path.db``, ``postgresql://...``."""

from __future__ import annotations

from sagakit.errors import StoreError, UnsupportedDatabaseError
from sagakit.store._base import ANY_INSTANCE, Store, StoredSaga, StoreWrapper, Watch
from sagakit.store.memory import MemoryStore

__all__ = [
    "ANY_INSTANCE",
    "SCHEMES",
    "MemoryStore",
    "Store",
    "StoreWrapper",
    "StoredSaga",
    "Watch",
    "open_store",
]

SCHEMES = ["memory", "sqlite", "postgresql"]


async def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and migrate, if it is new or older) the saga log at ``url``.

    With ``create=False`` a log that does not exist yet is a :class:`StoreError` instead of
    being made: for commands that only read, so a typo in a path creates nothing.

    Raises :class:`UnsupportedDatabaseError` naming the supported schemes for any other URL.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        from sagakit.store.sqlite import SqliteStore

        return await SqliteStore.open(url, create=create)
    if scheme in ("postgresql", "postgres"):
        return await _open_postgres(url, create=create)
    raise UnsupportedDatabaseError(url, SCHEMES)


async def _open_postgres(url: str, *, create: bool) -> Store:
    """Imported only when asked for, so the core needs no PostgreSQL driver installed."""
    try:
        from sagakit.store.postgres import PostgresStore
    except ImportError as error:
        raise StoreError(
            "a postgresql:// saga log needs the asyncpg driver: pip install 'sagakit[postgres]'"
        ) from error
    return await PostgresStore.open(url, create=create)
