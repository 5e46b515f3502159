"""URLs as sagakit reads and shows them: backends chosen by scheme, never a password shown.

A kind of backend (saga logs, brokers) lists its schemes in one :class:`SchemeTable`: which
schemes select which backend, imported only when a URL asks for it, and which driver and
extra it needs, so that an unknown scheme or a missing driver fails the same way for each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")


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


def lazy(module: str, name: str) -> Callable[[], Any]:
    """A loader of ``name`` (``Class`` or ``Class.method``) from ``module``, imported on call."""

    def load() -> Any:
        found: Any = import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
        return found

    return load


@dataclass(frozen=True, slots=True)
class Backend(Generic[T]):
    """The backend some URL schemes select.

    ``schemes``: the first is the one errors name (``redis`` for ``redis`` and ``rediss``).
    ``driver``: the module the backend needs that the core does not install, checked before
    ``load`` runs; it comes with the PyPI ``package`` that ``pip install 'sagakit[extra]'``
    installs. None for a backend of the core. ``form``: the URL's shape as help texts show
    it (``sqlite:///PATH.db``).
    """

    schemes: tuple[str, ...]
    load: Callable[[], T]
    driver: str | None = None
    package: str = ""
    extra: str = ""
    form: str = ""

    @property
    def described(self) -> str:
        """``form``, with the extra to install when the core lacks the driver."""
        shape = self.form or f"{self.schemes[0]}://"
        return f"{shape} (sagakit[{self.extra}])" if self.extra else shape


class SchemeTable(Generic[T]):
    """Every backend of one kind, by scheme; :meth:`load` finds the one a URL selects.

    ``unsupported(url, names)`` makes the error for a scheme no backend has (the URL comes
    without its password); ``missing(backend)`` the error for a backend whose driver is not
    installed.
    """

    def __init__(
        self,
        *backends: Backend[T],
        unsupported: Callable[[str, list[str]], Exception],
        missing: Callable[[Backend[T]], Exception],
    ) -> None:
        self._by_scheme = {scheme: backend for backend in backends for scheme in backend.schemes}
        self._unsupported = unsupported
        self._missing = missing
        self.names = [backend.schemes[0] for backend in backends]
        """The schemes errors and documentation name, one per backend."""
        self.forms = [backend.described for backend in backends]
        """Each backend's URL shape and the extra it needs, for help texts."""

    def load(self, url: str) -> T:
        """What the backend for ``url``'s scheme loads (its class, or a function opening it)."""
        backend = self._by_scheme.get(scheme_of(url))
        if backend is None:
            raise self._unsupported(redact(url), self.names)
        if backend.driver is not None:
            try:
                import_module(backend.driver)
            except ImportError as exc:
                raise self._missing(backend) from exc
        return backend.load()
