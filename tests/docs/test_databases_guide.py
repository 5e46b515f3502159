"""What docs/choreography-databases.md claims, on every database it names.

``test_examples.py`` runs the page's examples as a reader would, on SQLite; here the same
``main`` runs on PostgreSQL and MariaDB, through the sync and the async engine, each on a
database of the test's own, since the page says the code is the same on all of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from doc_examples import ROOT, load
from sqlalchemy_databases import FreshDatabase

PAGE = ROOT / "docs" / "choreography-databases.md"

SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("example", ["orm_service.py", "async_orm_service.py"])
async def test_the_examples_run_unchanged_on_each_server(
    kind: str, example: str, tmp_path: Path
) -> None:
    fresh = FreshDatabase(kind, tmp_path, whole=True)  # the examples take a URL alone
    await fresh.create()
    try:
        module = load(f"databases/{example}")
        url = fresh.url(asynchronous=example.startswith("async"))
        await module.main(url.render_as_string(hide_password=False))
    finally:
        await fresh.drop()


def test_the_page_names_each_database_s_class() -> None:
    text = PAGE.read_text()
    for name in (
        "SqliteDatabase",
        "PostgresDatabase",
        "SqlAlchemyDatabase",
        "AsyncSqlAlchemyDatabase",
    ):
        assert f"`{name}`" in text
