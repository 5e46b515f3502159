"""Fixtures shared by the suites: fresh saga logs on every durable store."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES = os.environ.get("SAGAKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The machine's PostgreSQL; every log made here is a schema of its own, so runs never
collide, and it is dropped when the test ends."""


class SagaLogs:
    """Makes fresh, empty saga log URLs of one kind (SQLite files or PostgreSQL schemas)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.schemas: list[str] = []

    def new(self, directory: Path) -> str:
        if self.kind == "sqlite":
            directory.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{directory / 'sagas.db'}"
        schema = f"t_{uuid.uuid4().hex[:16]}"
        self.schemas.append(schema)
        return f"{POSTGRES}?schema={schema}"

    async def drop_all(self) -> None:
        if not self.schemas:
            return
        import asyncpg  # only the PostgreSQL runs need the driver

        conn = await asyncpg.connect(POSTGRES)
        try:
            for schema in self.schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def saga_logs(request: pytest.FixtureRequest) -> Iterator[SagaLogs]:
    """Parametrizes a test over the durable stores; each ``new()`` log is fresh."""
    logs = SagaLogs(request.param)
    yield logs
    asyncio.run(logs.drop_all())
