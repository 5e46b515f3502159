"""``sagakit migrate`` brings a PostgreSQL saga log to this code's schema with no time limit:
``?timeout=`` bounds a worker's statements, not a migration that may index every saga."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sagakit.store import open_store
from servers import POSTGRES

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"cli_migrate_{uuid.uuid4().hex[:10]}"
    yield name

    async def drop() -> None:
        connection = await asyncpg.connect(POSTGRES)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await connection.close()

    asyncio.run(drop())


def test_migrate_ignores_a_statement_limit_too_short_for_any_migration(schema: str) -> None:
    url = f"{POSTGRES}?schema={schema}&timeout=0.001"
    done = subprocess.run(
        [SAGAKIT, "migrate", "--db", url],
        capture_output=True,
        text=True,
        timeout=120,
        env={key: value for key, value in os.environ.items() if key != "SAGAKIT_DB"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{url}: schema is current"

    async def opens_without_migrating() -> None:
        store = await open_store(f"{POSTGRES}?schema={schema}", create=False)
        await store.close()

    asyncio.run(opens_without_migrating())


def test_migrate_of_an_unreachable_server_is_one_line() -> None:
    done = subprocess.run(
        [SAGAKIT, "migrate", "--db", "postgresql://app:s3cret@127.0.0.1:1/test"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "s3cret" not in done.stderr
