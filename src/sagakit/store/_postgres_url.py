"""What a ``postgresql://`` URL tells the PostgreSQL saga log, and how its errors are told.

Split from the store so that the URL's rules (sagakit's ``?schema=``, ``?pool=`` and
``?timeout=``, a password never shown) read in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from sagakit._urls import redact
from sagakit.errors import InvalidStoreURLError, StoreError, StoreUnavailableError
from sagakit.store._postgres_errors import diagnose

DEFAULT_POOL = 10
"""Connections per store unless the URL says ``?pool=N`` (writers and pool; plus one to
listen, once something waits for a change)."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a statement (or a connection attempt) may take unless the URL says
``?timeout=SECONDS`` (``0``: no limit). sagakit's own statements take milliseconds and the
heaviest operator listing well under a second, so 10 s is only reached by a database that is
frozen or cut off; it is a third of the default lease, so a worker hears of that while its
leases still hold. Past it the call fails with :class:`StoreUnavailableError`."""
_OURS = ("schema", "pool", "timeout")

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
    timeout: float | None = DEFAULT_TIMEOUT
    """Client-side limit on each statement and connection attempt; None: none."""

    @classmethod
    def parse(cls, url: str) -> Settings:
        """Read ``?schema=NAME`` (default ``public``), ``?pool=N`` and ``?timeout=SECONDS``;
        keep the rest for the driver."""
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
        timeout = _timeout(ours.get("timeout", str(DEFAULT_TIMEOUT)))
        rest = urlencode([(k, v) for k, v in query if k not in _OURS])
        dsn = urlunsplit(parts._replace(query=rest))
        return cls(dsn, schema, int(pool), redact(url), parts.password, timeout)

    @property
    def quoted_schema(self) -> str:
        return f'"{self.schema}"'

    @property
    def server_settings(self) -> dict[str, str]:
        """Every connection resolves sagakit's unqualified table names in its schema."""
        return {"search_path": self.quoted_schema}

    @property
    def connect_timeout(self) -> float:
        """asyncpg's connection attempts always have a limit (60 s is its own)."""
        return self.timeout or 60.0

    def error(self, error: BaseException) -> StoreError:
        """A driver error as a :class:`StoreError` that names the database, not its password,
        and says what happened; one that waiting may mend is a :class:`StoreUnavailableError`."""
        failure = diagnose(error)
        what = failure.what
        if isinstance(error, TimeoutError) and self.timeout:
            what = f"no answer within {self.timeout:g} s (?timeout=)"
        text = str(error)
        if self.password:
            text = text.replace(self.password, "***")
        message = f"PostgreSQL saga log {self.display}: {what}" + (f" ({text})" if text else "")
        kind = StoreUnavailableError if failure.transient else StoreError
        return kind(message)

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Translate driver errors at the store boundary, keeping the original as cause."""
        try:
            yield
        except DRIVER_ERRORS as error:
            raise self.error(error) from error


def _timeout(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise InvalidStoreURLError(
            f"invalid timeout {text!r}: use ?timeout=SECONDS with SECONDS >= 0 (0: no limit)"
        )
    return seconds or None
