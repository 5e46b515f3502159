"""What every request of one dashboard shares: the saga log, the guard, the templates,
and the one way a request is refused (a status and one line: JSON under ``/api/``, a page
elsewhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from sagakit._timeline import local_time
from sagakit._urls import redact
from sagakit.dashboard._security import SESSION_COOKIE, Guard, Session
from sagakit.errors import (
    ConcurrentUpdateError,
    InvalidArgumentError,
    OperatorActionError,
    SagakitError,
    SerializationError,
    StoreError,
    UnknownSagaError,
)
from sagakit.store import Store, open_store

_LINE_LIMIT = 500


class Board:
    """What every request of one dashboard shares."""

    def __init__(
        self,
        source: str | Store,
        *,
        token: str | None,
        read_only: bool,
        mermaid_js: Path | None,
        live_for: float,
    ) -> None:
        self._given = None if isinstance(source, str) else source
        self.url = redact(source if isinstance(source, str) else source.url)
        self._open_url = source if isinstance(source, str) else None
        self._store: Store | None = self._given
        self.guard = Guard(token, read_only=read_only)
        self.mermaid_js = mermaid_js
        self.live_for = live_for
        self.templates = Environment(
            loader=PackageLoader("sagakit.dashboard", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
        )
        self.templates.filters["urlpart"] = lambda text: quote(str(text), safe="")
        self.templates.filters["clock"] = lambda at: local_time(at, "%m-%d %H:00")

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError(f"the saga log {self.url} is not open")
        return self._store

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """Open the saga log (one named by URL: never created) for as long as the app runs."""
        if self._open_url is not None:
            self._store = await open_store(self._open_url, create=False)
        try:
            yield
        finally:
            if self._open_url is not None and self._store is not None:
                await self._store.close()
                self._store = None

    def session(self, request: Request) -> Session | None:
        return self.guard.session(request.cookies.get(SESSION_COOKIE))

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page from its template, with what every page shows (who is logged in)."""
        session = self.session(request)
        html = self.templates.get_template(name).render(
            session=session,
            csrf="" if session is None else self.guard.csrf(session),
            read_only=self.guard.read_only,
            mermaid=self.mermaid_js is not None,
            path=request.url.path,
            db=self.url,
            **context,
        )
        return HTMLResponse(html, status_code=status)


def board_of(request: Request) -> Board:
    return cast(Board, request.app.state.board)


def status_of(error: SagakitError) -> int:
    """The HTTP status a sagakit error answers with."""
    if isinstance(error, UnknownSagaError):
        return 404
    if isinstance(error, OperatorActionError | ConcurrentUpdateError):
        return 409
    if isinstance(error, InvalidArgumentError | SerializationError):
        return 422
    if isinstance(error, StoreError):
        return 503
    return 422


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _LINE_LIMIT else line[: _LINE_LIMIT - 1] + "…"


def failure(request: Request, status: int, message: str) -> Response:
    """A refusal: JSON under ``/api/``, a page elsewhere; one line either way."""
    line = one_line(message)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": line}, status_code=status)
    return board_of(request).page(request, "error.html", status, status_code=status, message=line)
