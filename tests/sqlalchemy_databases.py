"""Fresh databases for the SQLAlchemy adapter's suites, and engines on them.

One :class:`FreshDatabase` is a schema of its own on the machine's PostgreSQL, a database of
its own on its MariaDB, or a file in the test's directory, made for one test and dropped
after it, so runs never see each other's rows. Each engine opened on it stands for another
process of the service (its own pool); all are disposed of when it is dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from servers import MARIADB, POSTGRES

DRIVERS = {
    ("postgres", False): "postgresql+psycopg",
    ("postgres", True): "postgresql+asyncpg",
    ("mariadb", False): "mariadb+pymysql",
    ("mariadb", True): "mariadb+aiomysql",
    ("sqlite", False): "sqlite",
    ("sqlite", True): "sqlite+aiosqlite",
}
"""The SQLAlchemy driver of each kind of database, sync (False) and async (True)."""


class FreshDatabase:
    """A database of one test's own, of ``kind`` (``postgres``, ``mariadb`` or ``sqlite``).

    On PostgreSQL it is a schema, first on the engines' search path; with ``whole``, a
    database, for code that takes a URL alone (a URL cannot set asyncpg's search path).
    """

    def __init__(self, kind: str, directory: Path, *, whole: bool = False) -> None:
        self.kind = kind
        self.name = f"sagakit_{uuid.uuid4().hex[:12]}"
        self._file = directory / f"{self.name}.db"
        self._engines: list[Engine | AsyncEngine] = []
        self._schema = kind == "postgres" and not whole

    def url(self, asynchronous: bool = False) -> URL:
        driver = DRIVERS[(self.kind, asynchronous)]
        if self.kind == "sqlite":
            return URL.create(driver, database=str(self._file))
        server = make_url(POSTGRES if self.kind == "postgres" else MARIADB)
        database = server.database if self._schema else self.name
        return server.set(drivername=driver, database=database)

    def _connect_args(self, asynchronous: bool) -> dict[str, Any]:
        """PostgreSQL: the test's schema first on the search path, as a service would set it."""
        if not self._schema:
            return {}
        if asynchronous:
            return {"server_settings": {"search_path": self.name}}
        return {"options": f"-csearch_path={self.name}"}

    def engine(self) -> Engine:
        made = sqlalchemy.create_engine(self.url(), connect_args=self._connect_args(False))
        self._engines.append(made)
        return made

    def async_engine(self) -> AsyncEngine:
        made = create_async_engine(self.url(True), connect_args=self._connect_args(True))
        self._engines.append(made)
        return made

    async def create(self) -> None:
        if self._schema:
            await asyncio.to_thread(self._admin, f'CREATE SCHEMA "{self.name}"')
        elif self.kind == "postgres":
            await asyncio.to_thread(self._admin, f'CREATE DATABASE "{self.name}"')
        elif self.kind == "mariadb":
            await asyncio.to_thread(self._admin, f"CREATE DATABASE `{self.name}`")

    async def drop(self) -> None:
        for made in self._engines:
            if isinstance(made, AsyncEngine):
                await made.dispose()
            else:
                await asyncio.to_thread(made.dispose)
        if self._schema:
            await asyncio.to_thread(self._admin, f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        elif self.kind == "postgres":
            await asyncio.to_thread(self._admin, f'DROP DATABASE IF EXISTS "{self.name}" (FORCE)')
        elif self.kind == "mariadb":
            await asyncio.to_thread(self._admin, f"DROP DATABASE IF EXISTS `{self.name}`")

    def _admin(self, statement: str) -> None:
        server = make_url(POSTGRES if self.kind == "postgres" else MARIADB)
        if self.kind == "mariadb":  # a server's own connection: no database needed
            server = server.set(database=None)
        admin = sqlalchemy.create_engine(
            server.set(drivername=DRIVERS[(self.kind, False)]),
            poolclass=sqlalchemy.NullPool,
            isolation_level="AUTOCOMMIT",  # PostgreSQL makes databases outside a transaction
        )
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(statement)
        finally:
            admin.dispose()


async def run_sql(engine: Engine | AsyncEngine, statement: str, **params: Any) -> list[Any]:
    """Run ``statement`` on ``engine`` in a transaction of its own (a thread for a sync
    engine); the rows it returned, if any."""
    if isinstance(engine, AsyncEngine):
        async with engine.begin() as connection:
            result = await connection.execute(sqlalchemy.text(statement), params)
            return list(result) if result.returns_rows else []
    return await asyncio.to_thread(_run_sync, engine, statement, params)


def _run_sync(engine: Engine, statement: str, params: dict[str, Any]) -> list[Any]:
    with engine.begin() as connection:
        result = connection.execute(sqlalchemy.text(statement), params)
        return list(result) if result.returns_rows else []
