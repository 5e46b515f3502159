"""The store contract against SQLite, plus what only a file-backed log must do."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagakit import SagaStatus, SchemaVersionError, StoreError, UnsupportedDatabaseError, open_store
from sagakit.log import RecordType
from sagakit.store import InstanceFilter, Store
from sagakit.store import sqlite as sqlite_store
from sagakit.store.sqlite import SCHEMA_VERSION, SqliteStore
from sagakit.testing import SchedulingContract, StoreContract, instance, started, step_record


class TestSqliteStore(StoreContract, SchedulingContract):
    @pytest.fixture
    async def store(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
        # Polls an hour apart: a watch that returns early in the contract was woken by the
        # change, not by a poll (which the next test checks on its own).
        monkeypatch.setattr(sqlite_store, "POLL_INTERVAL", 3600.0)
        store = await open_store(f"sqlite:///{tmp_path}/log.db")
        yield store
        await store.close()


async def test_a_watch_looks_again_for_changes_made_by_another_process(tmp_path: Path) -> None:
    """Nothing tells one SQLite store of another's commits, so its waits end at each poll
    (an early return, which a watch allows) and the caller finds the change by looking."""
    url = f"sqlite:///{tmp_path}/log.db"
    watcher, writer = await SqliteStore.open(url), await SqliteStore.open(url)
    try:
        await writer.create(instance("p"), [started()])
        async with watcher.watch("p") as watch:
            await writer.append(
                "p", [step_record(1, RecordType.SAGA_COMPLETED)], SagaStatus.COMPLETED
            )
            async with asyncio.timeout(10):
                await watch.wait(3600.0)  # returns after POLL_INTERVAL at the most
        loaded = await watcher.load("p")
        assert loaded is not None and loaded.instance.status is SagaStatus.COMPLETED
    finally:
        await watcher.close()
        await writer.close()


async def test_records_survive_closing_and_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    store = await open_store(url)
    await store.create(instance("a"), [started(), step_record(1)])
    await store.close()
    again = await open_store(url)
    loaded = await again.load("a")
    await again.close()
    assert loaded is not None and [r.seq for r in loaded.records] == [0, 1]


async def test_pragmas_make_every_commit_durable(tmp_path: Path) -> None:
    store = await SqliteStore.open(f"sqlite:///{tmp_path}/log.db")
    mode = store._guarded(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    sync = store._guarded(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    await store.close()
    assert (mode, sync) == ("wal", 2)  # 2 is FULL


async def test_the_log_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = await open_store(f"sqlite:///{path}")
    await store.create(instance("a"), [started()])
    await store.close()
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE saga_log SET type = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM saga_log")
    conn.close()


async def test_newer_schema_is_refused_and_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    store = await open_store(f"sqlite:///{path}")
    await store.create(instance("a"), [started()])
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO sagakit_schema (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await open_store(f"sqlite:///{path}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


async def test_reopening_does_not_migrate_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    for _ in range(2):
        await (await open_store(url)).close()
    conn = sqlite3.connect(tmp_path / "log.db")
    versions = [v for (v,) in conn.execute("SELECT version FROM sagakit_schema")]
    conn.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"notes\.db"):
        await open_store(f"sqlite:///{path}")
    assert path.read_bytes() == b"this is not sqlite" * 100


async def test_unsupported_scheme_names_the_supported_ones() -> None:
    with pytest.raises(
        UnsupportedDatabaseError, match=r"sqlite://.*memory://|memory://.*sqlite://"
    ):
        await open_store("mongodb://localhost/x")


async def test_status_column_matches_the_log(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/log.db")
    await store.create(instance("a"), [started()])
    await store.append("a", [step_record(1)], SagaStatus.COMPENSATING)
    rows = await store.instances(InstanceFilter(statuses={SagaStatus.COMPENSATING}))
    await store.close()
    assert [r.id for r in rows] == ["a"]


async def test_a_reader_does_not_create_a_missing_log(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "log.db"
    with pytest.raises(StoreError, match="no SQLite saga log"):
        await open_store(f"sqlite:///{path}", create=False)
    assert not path.parent.exists()
