"""Saga logs, chosen by URL: ``memory://``, ``sqlite:///path.db``, ``postgresql://...``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from sagakit._urls import Backend, SchemeTable, lazy, scheme_of
from sagakit.errors import StoreError, UnsupportedDatabaseError
from sagakit.store._base import (
    ANY_INSTANCE,
    ANY_MESSAGE,
    FirstCall,
    Store,
    StoredSaga,
    StoreWrapper,
    Watch,
)
from sagakit.store._filter import ALL, Count, FieldEquals, InstanceFilter, Position
from sagakit.store._fleet import WorkerInfo
from sagakit.store.memory import MemoryStore

__all__ = [
    "ALL",
    "ANY_INSTANCE",
    "ANY_MESSAGE",
    "SCHEMES",
    "URL_FORMS",
    "Count",
    "FieldEquals",
    "FirstCall",
    "InstanceFilter",
    "MemoryStore",
    "Position",
    "Store",
    "StoreWrapper",
    "StoredSaga",
    "Watch",
    "WorkerInfo",
    "migrate",
    "open_store",
]


class _Opener(Protocol):
    def __call__(self, url: str, *, create: bool) -> Awaitable[Store]: ...


async def _open_memory(url: str, *, create: bool) -> Store:
    return MemoryStore(url)


def _missing_driver(backend: Backend[_Opener]) -> StoreError:
    return StoreError(
        f"a {backend.schemes[0]}:// saga log needs the {backend.package} driver: "
        f"pip install 'sagakit[{backend.extra}]'"
    )


_POSTGRES = ("postgresql", "postgres")
_STORES: SchemeTable[_Opener] = SchemeTable(
    Backend(("memory",), lambda: _open_memory),
    Backend(
        ("sqlite",), lazy("sagakit.store.sqlite", "SqliteStore.open"), form="sqlite:///PATH.db"
    ),
    Backend(
        _POSTGRES,
        lazy("sagakit.store.postgres", "PostgresStore.open"),
        driver="asyncpg",
        package="asyncpg",
        extra="postgres",
        form="postgresql://USER@HOST[:PORT]/DB[?schema=NAME]",
    ),
    unsupported=UnsupportedDatabaseError,
    missing=_missing_driver,
)

SCHEMES = _STORES.names
URL_FORMS = _STORES.forms
"""Each saga log's URL shape, with the extra it needs: what ``--db`` help texts list."""


async def migrate(url: str) -> None:
    """Create the saga log at ``url``, or bring it to this code's schema, and close it.

    For ``sagakit migrate`` ahead of a deploy. On PostgreSQL the migration's statements have
    no time limit, whatever ``?timeout=`` says, since one may build an index over every saga
    in the log; opening a log migrates it too, but under that limit.
    """
    if scheme_of(url) in _POSTGRES:
        _STORES.load(url)  # the driver's install hint, as opening would give it
        migrate_postgres = lazy("sagakit.store._postgres_schema", "migrate")()
        await migrate_postgres(url)
        return
    store = await open_store(url)
    await store.close()


async def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and migrate, if it is new or older) the saga log at ``url``.

    With ``create=False`` a log that does not exist yet is a :class:`StoreError` instead of
    being made: for commands that only read, so a typo in a path creates nothing.

    Raises :class:`UnsupportedDatabaseError` naming the supported schemes for any other URL,
    and :class:`StoreError` saying which extra to install if the database's driver is missing
    (the core needs no PostgreSQL driver: it is imported only when a URL asks for it).
    """
    return await _STORES.load(url)(url, create=create)
