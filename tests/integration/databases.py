"""Saga log URLs for integration tests that must pass on every durable store."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

POSTGRES = os.environ.get("SAGAKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The machine's PostgreSQL; each test gets a schema of its own, so runs never collide."""

UrlFor = Callable[[Path], str]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


def postgres_url(tmp_path: Path) -> str:
    return f"{POSTGRES}?schema=t_{uuid.uuid4().hex[:12]}"


def database_urls() -> list[object]:
    return [
        pytest.param(sqlite_url, id="sqlite"),
        pytest.param(postgres_url, id="postgres"),
    ]


async def drop(url: str) -> None:
    """Remove what a test put in PostgreSQL (its schema); SQLite files go with tmp_path."""
    if not url.startswith("postgresql://"):
        return
    import asyncpg  # only the PostgreSQL tests need the driver

    base, _, query = url.partition("?schema=")
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{query}" CASCADE')
    finally:
        await conn.close()
