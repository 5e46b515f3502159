"""URLs as sagakit shows them: never with a password in them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log, print and put in errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def scheme_of(url: str) -> str:
    """The scheme of ``url`` in lower case (``postgresql`` of ``postgresql://...``), or ``""``."""
    return url.split("://", 1)[0].lower() if "://" in url else ""
