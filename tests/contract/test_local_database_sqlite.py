"""The local database contract on a service's SQLite file (one relay per file, no notices)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagakit.choreography import LocalDatabase, OutboxTransaction, SqliteDatabase
from sagakit.testing import LocalDatabaseContract, LocalDatabaseFactory


class TestSqliteDatabase(LocalDatabaseContract):
    concurrent_relays = False  # a claim holds no lock: one relay per file, by design
    notifies = False  # one SQLite connection is never told of another's commit

    @pytest.fixture
    async def database_factory(self, tmp_path: Path) -> AsyncIterator[LocalDatabaseFactory]:
        made: list[SqliteDatabase] = []

        async def make() -> LocalDatabase:
            made.append(SqliteDatabase(tmp_path / "service.db", self.own_table_sql + ";"))
            return made[-1]

        yield make
        for db in made:
            await db.close()

    async def insert_own_row(self, tx: OutboxTransaction, value: str) -> None:
        tx.connection.execute("INSERT INTO contract_own (value) VALUES (?)", (value,))

    async def count_own_rows(self, db: LocalDatabase) -> int:
        assert isinstance(db, SqliteDatabase)
        [count] = db.connection.execute("SELECT count(*) FROM contract_own").fetchone()
        return int(count)

    async def overwrite_event(self, db: LocalDatabase, row_id: int, text: str) -> None:
        assert isinstance(db, SqliteDatabase)
        db.connection.execute("UPDATE sagakit_outbox SET event = ? WHERE id = ?", (text, row_id))
