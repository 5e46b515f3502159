"""The dashboard as one ASGI application: its pages, its JSON API, and how both fail.

:func:`create_app` wires the routers of :mod:`._pages` and :mod:`._api` to one
:class:`~sagakit.dashboard._board.Board` (the saga log, the guard of :mod:`._security`,
the templates). Every failure a request can cause ends as a status and one line:
sagakit's errors by kind (an unknown saga is 404, a refused action 409, a bad filter or
JSON 422, a database that is away 503), as ``{"detail": ...}`` under ``/api/`` and as a
page elsewhere; never a traceback. Every answer carries headers that keep the pages from
loading anything from anywhere but the dashboard itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from sagakit.dashboard import _api, _pages
from sagakit.dashboard._board import Board, failure, status_of
from sagakit.dashboard._security import Guard
from sagakit.errors import SagakitError
from sagakit.store import Store

logger = logging.getLogger("sagakit.dashboard")
LIVE_FOR = 300.0
"""Seconds one live-update stream lasts before the browser opens the next."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_app(
    store: str | Store,
    *,
    token: str | None = None,
    read_only: bool = False,
    mermaid_js: Path | None = None,
    allowed_hosts: Sequence[str] | None = None,
    live_for: float = LIVE_FOR,
) -> FastAPI:
    """The dashboard over ``store`` (a saga log URL, opened while the app runs, or an open
    :class:`~sagakit.store.Store`, which stays the caller's to close).

    Actions need ``token``; without one, or with ``read_only``, only reads are served.
    ``mermaid_js`` is a local copy of mermaid.js to draw the flowcharts with (none is
    fetched from anywhere); ``allowed_hosts`` the ``Host`` headers to answer (None: any),
    which stops a DNS-rebinding page from reading the dashboard.
    """
    board = Board(store, token=token, read_only=read_only, mermaid_js=mermaid_js, live_for=live_for)
    app = FastAPI(
        title="sagakit dashboard",
        summary="Find sagas, read their logs, and act on them as an operator.",
        version="1",
        lifespan=board.lifespan,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: never
        redoc_url=None,
    )
    app.state.board = board
    app.include_router(_api.router)
    app.include_router(_pages.router)
    if mermaid_js is not None:
        app.add_api_route(
            "/static/mermaid.js", _serve(mermaid_js), methods=["GET"], include_in_schema=False
        )
    app.mount("/static", StaticFiles(packages=[("sagakit.dashboard", "static")]), name="static")
    _handle_errors(app)
    app.add_middleware(_ActionsNeedTheToken, guard=board.guard)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(_SafeHeaders, mermaid=mermaid_js is not None)
    return app


def _serve(path: Path) -> Callable[[], Awaitable[Response]]:
    async def mermaid() -> Response:
        return FileResponse(path, media_type="text/javascript")

    return mermaid


# --------------------------------------------------------------------------- failures


def _handle_errors(app: FastAPI) -> None:
    async def sagakit_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, SagakitError)
        return failure(request, status_of(error), str(error))

    async def invalid(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return failure(request, 422, _first_problem(error))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        # FastAPI answers a body it cannot parse (not UTF-8, not JSON) with 400: it is bad
        # input like any other, so it says so the way the rest does.
        status = 422 if error.status_code == 400 else error.status_code
        return failure(request, status, str(error.detail))

    async def unexpected(request: Request, error: Exception) -> Response:
        logger.error("dashboard: %s %s failed: %r", request.method, request.url.path, error)
        return failure(request, 500, "internal error: the dashboard's log says more")

    app.add_exception_handler(SagakitError, sagakit_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _first_problem(error: RequestValidationError) -> str:
    problems = error.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    if first.get("type") == "json_invalid":
        return f"the body is not JSON: {first.get('ctx', {}).get('error', 'cannot decode it')}"
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in _PLACES)
    return f"invalid {where or 'request'}: {first.get('msg', 'not valid')}"


_PLACES = ("query", "body", "path", "header", "cookie")


# --------------------------------------------------------------------------- headers


class _ActionsNeedTheToken:
    """Refuses (403) every API call that could change state and lacks the token, before
    anything reads its body: a request without the token learns nothing, not even whether
    its body would have parsed. (The routes check again, and their schema says so.)"""

    def __init__(self, app: ASGIApp, *, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guarded(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        why = (
            "this dashboard is read-only: actions are refused"
            if self.guard.read_only
            else "an action needs the header Authorization: Bearer TOKEN"
        )
        await JSONResponse({"detail": why}, status_code=403)(scope, receive, send)

    @staticmethod
    def _guarded(scope: Scope) -> bool:
        path, method = str(scope.get("path", "")), str(scope.get("method", "GET"))
        return path.startswith("/api/") and method not in ("GET", "HEAD", "OPTIONS")

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and self.guard.bearer_ok(credentials.strip())
        return False


class _SafeHeaders:
    """Adds to every answer the headers that keep a page to what the dashboard serves."""

    def __init__(self, app: ASGIApp, *, mermaid: bool) -> None:
        self.app = app
        styles = "'self' 'unsafe-inline'" if mermaid else "'self'"  # mermaid's SVG has <style>
        policy = (
            "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
            f"style-src {styles}; font-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        self.headers = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")
        extra = self.headers if static else [*self.headers, (b"cache-control", b"no-store")]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)
