"""A service's own database, chosen by URL, for the tools that reach it from outside.

A service opens its database in code (it passes its own tables, its SQLAlchemy engine);
an operator's ``sagakit outbox`` only has a URL, and needs the outbox and inbox alone.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from sagakit._urls import Backend, SchemeTable
from sagakit.choreography._outbox import LocalDatabase
from sagakit.choreography.sqlite import SqliteDatabase
from sagakit.errors import LocalDatabaseError
from sagakit.store.sqlite import path_of

_Opener = Callable[[str], Awaitable[LocalDatabase]]


async def _open_sqlite(url: str) -> LocalDatabase:
    return _existing_sqlite(path_of(url))


def _existing_sqlite(path: str) -> SqliteDatabase:
    if not os.path.isfile(path):  # a mistyped path must not leave an empty database behind
        raise LocalDatabaseError(f"no service database at {path!r}")
    return SqliteDatabase(path)


async def _open_postgres(url: str) -> LocalDatabase:
    from sagakit.choreography.postgres import PostgresDatabase

    return await PostgresDatabase.open(url)


def _unsupported(url: str, names: list[str]) -> Exception:
    return LocalDatabaseError(
        f"no service database for {url!r}: use one of {', '.join(f'{n}://' for n in names)}"
    )


def _missing(backend: Backend[_Opener]) -> Exception:
    return LocalDatabaseError(
        f"a {backend.schemes[0]}:// service database needs the {backend.package} driver: "
        f"pip install 'sagakit[{backend.extra}]'"
    )


_DATABASES: SchemeTable[_Opener] = SchemeTable(
    Backend(("sqlite",), lambda: _open_sqlite, form="sqlite:///PATH.db"),
    Backend(
        ("postgresql", "postgres"),
        lambda: _open_postgres,
        driver="asyncpg",
        package="asyncpg",
        extra="postgres",
        form="postgresql://USER@HOST[:PORT]/DB[?schema=NAME]",
    ),
    unsupported=_unsupported,
    missing=_missing,
)

DATABASE_FORMS = _DATABASES.forms
"""Each service database's URL shape, for help texts."""


async def open_local_database(url: str) -> LocalDatabase:
    """The service database at ``url``: a SQLite file that exists, or a PostgreSQL
    database (its outbox and inbox tables made if missing)."""
    return await _DATABASES.load(url)(url)
