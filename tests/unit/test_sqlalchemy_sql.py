"""The SQL the SQLAlchemy adapter sends, compiled for each database without a server.

The contract suite shows the statements work on real servers; this pins what they say: a
claim on PostgreSQL and MariaDB locks its heads with ``FOR UPDATE SKIP LOCKED`` (without
``OF``, which MariaDB lacks), SQLite's claim locks nothing, the inbox insert skips a
duplicate each database's way, and the tables' types keep what the protocol needs.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.dialects.mysql import mariadb
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from sagakit.choreography import _sqlalchemy_schema as sql
from sagakit.choreography.sqlalchemy import inbox_table, metadata, outbox_table

DIALECTS: dict[str, Dialect] = {
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
    "mariadb": mariadb.MariaDBDialect(),
    "mysql": mysql.dialect(),
    "sqlite": sqlite.dialect(),
}


def compiled(statement: object, dialect: str) -> str:
    return " ".join(str(statement.compile(dialect=DIALECTS[dialect])).split())  # type: ignore[attr-defined]


def test_postgresql_locks_heads_as_it_finds_them_skipping_those_another_claim_holds() -> None:
    text = compiled(sql._heads(7, 0.0, lock=True), "postgresql")
    assert text.endswith("FOR UPDATE SKIP LOCKED")
    assert " OF " not in text  # the subquery's table is not locked, only o's rows
    assert "NOT (EXISTS (SELECT p.id FROM sagakit_outbox AS p WHERE" in text
    assert "p.correlation_id = o.correlation_id AND p.sent_at IS NULL AND p.id < o.id" in text
    assert "ORDER BY o.id" in text


@pytest.mark.parametrize("dialect", ["mariadb", "mysql"])
def test_mariadb_locks_only_rows_it_names_by_key(dialect: str) -> None:
    """InnoDB locks what a locking statement reads, so the search for heads does not lock,
    and every locking statement reaches rows through the primary key."""
    lock = compiled(sql._lock([3, 5], "mysql", heads=True), dialect)
    assert "FROM sagakit_outbox FORCE INDEX (PRIMARY) WHERE sagakit_outbox.id IN" in lock
    assert "dead_at IS NULL" in lock and lock.endswith("FOR UPDATE SKIP LOCKED")
    marking = sql.by_key(update(outbox_table).values(sent_at=1.0), "mysql")
    assert compiled(marking, dialect).startswith("UPDATE sagakit_outbox FORCE INDEX (PRIMARY) SET")
    assert sql.by_key(marking, "postgresql") is marking


def test_sqlite_s_claim_locks_nothing() -> None:
    text = compiled(sql._heads(7, 0.0, lock=False), "sqlite")
    assert "FOR UPDATE" not in text and "ORDER BY o.id LIMIT" in text


@pytest.mark.parametrize(
    ("dialect", "shape"),
    [
        ("postgresql", "INSERT INTO sagakit_inbox .* ON CONFLICT DO NOTHING$"),
        ("sqlite", "INSERT INTO sagakit_inbox .* ON CONFLICT DO NOTHING$"),
        ("mariadb", "^INSERT IGNORE INTO sagakit_inbox "),
        ("mysql", "^INSERT IGNORE INTO sagakit_inbox "),
    ],
)
def test_the_inbox_insert_skips_a_duplicate(dialect: str, shape: str) -> None:
    family = sql.family(DIALECTS[dialect].name)
    assert family is not None
    assert re.search(shape, compiled(sql._inbox_insert(family), dialect))


@pytest.mark.parametrize("dialect", ["mariadb", "mysql"])
def test_mariadb_keys_compare_exactly_and_events_may_be_long(dialect: str) -> None:
    outbox = compiled(CreateTable(outbox_table), dialect)
    inbox = compiled(CreateTable(inbox_table), dialect)
    exact = "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"
    assert f"correlation_id {exact}" in outbox
    assert f"consumer {exact}" in inbox and f"event_id {exact}" in inbox
    assert "event LONGTEXT NOT NULL" in outbox.replace("`", "")
    assert "ENGINE=InnoDB" in outbox and "CHARSET=utf8mb4" in outbox
    assert "FLOAT" not in outbox and "sent_at DOUBLE" in outbox


def test_sqlite_s_outbox_ids_are_never_reused() -> None:
    assert "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" in compiled(
        CreateTable(outbox_table), "sqlite"
    )


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_the_indexes_lead_with_what_the_head_query_seeks(dialect: str) -> None:
    made = sorted(compiled(CreateIndex(index), dialect) for index in outbox_table.indexes)
    assert [text.replace("`", "") for text in made] == [
        "CREATE INDEX sagakit_outbox_by_sent ON sagakit_outbox (sent_at, id)",
        "CREATE INDEX sagakit_outbox_chain_by_sent ON sagakit_outbox (correlation_id, sent_at, id)",
    ]


def test_the_metadata_holds_exactly_the_two_tables() -> None:
    assert sorted(metadata.tables) == ["sagakit_inbox", "sagakit_outbox"]


@pytest.mark.parametrize(
    ("name", "family"),
    [("postgresql", "postgresql"), ("mariadb", "mysql"), ("mysql", "mysql"), ("mssql", None)],
)
def test_dialects_map_to_the_families_the_adapter_speaks(name: str, family: str | None) -> None:
    assert sql.family(name) == family
