"""What a ``postgresql://`` URL tells the PostgreSQL saga log, and how its errors are told.

Split from the store so that the URL's rules (sagakit's ``?schema=`` and ``?pool=``, a
password never shown) read in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from sagakit._urls import redact
from sagakit.errors import InvalidStoreURLError, StoreError

DEFAULT_POOL = 10
"""Connections per store unless the URL says ``?pool=N`` (writers and pool; plus one to
listen, once something waits for a change)."""

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class Settings:
    """What a ``postgresql://`` URL says, split into the driver's part and sagakit's."""

    dsn: str
    """The URL for asyncpg: sagakit's own query parameters removed."""
    schema: str
    pool: int
    display: str
    """The URL with its password replaced, safe to print."""
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Settings:
        """Read ``?schema=NAME`` (default ``public``) and ``?pool=N``; keep the rest."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise InvalidStoreURLError(f"not a PostgreSQL URL: {redact(url)!r}")
        try:
            parts.port  # noqa: B018  (urlsplit checks the port only when asked for it)
        except ValueError as error:
            raise InvalidStoreURLError(f"invalid port in {redact(url)!r}: {error}") from None
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = dict(query)
        schema = ours.get("schema", "public")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidStoreURLError(f"invalid schema name {schema!r}: use letters, digits and _")
        pool = ours.get("pool", str(DEFAULT_POOL))
        if not pool.isdigit() or int(pool) < 1:
            raise InvalidStoreURLError(f"invalid pool size {pool!r}: use ?pool=N with N >= 1")
        rest = urlencode([(k, v) for k, v in query if k not in ("schema", "pool")])
        dsn = urlunsplit(parts._replace(query=rest))
        return cls(dsn, schema, int(pool), redact(url), parts.password)

    @property
    def quoted_schema(self) -> str:
        return f'"{self.schema}"'

    @property
    def server_settings(self) -> dict[str, str]:
        """Every connection resolves sagakit's unqualified table names in its schema."""
        return {"search_path": self.quoted_schema}

    def error(self, error: BaseException) -> StoreError:
        """A driver error as a :class:`StoreError` that names the database, not its password."""
        text = str(error) or type(error).__name__
        if self.password:
            text = text.replace(self.password, "***")
        return StoreError(f"PostgreSQL saga log {self.display}: {text}")

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Translate driver errors at the store boundary, keeping the original as cause."""
        try:
            yield
        except DRIVER_ERRORS as error:
            raise self.error(error) from error
