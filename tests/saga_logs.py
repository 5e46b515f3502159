"""Fresh saga logs on every durable store, for the suites that run against both."""

from __future__ import annotations

import uuid
from pathlib import Path

from servers import POSTGRES


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
