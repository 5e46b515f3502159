"""The dashboard's HTML pages: overview, list, needs-attention queue, one saga, login.

Every page reads through :mod:`sagakit.operations` (``find``, ``count``, ``versions``) and
the store, as ``sagakit list`` and ``show`` do. An action is a form posted to
``/sagas/ID/actions/ACTION``, answered in two steps: a confirmation page saying what will
be done and as whom, then, once confirmed, the action itself and a redirect back to the
saga. Both steps need a logged-in session and its CSRF token; without them the answer is
403 and nothing is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from sagakit.dashboard import _actions
from sagakit.dashboard._activity import hours, totals
from sagakit.dashboard._board import Board, board_of, failure, status_of
from sagakit.dashboard._charts import bars
from sagakit.dashboard._filters import STATUSES, Filters, filters
from sagakit.dashboard._live import changes
from sagakit.dashboard._security import SESSION_COOKIE, SESSION_TTL, Session, operator_name
from sagakit.dashboard._story import list_row, saga_page
from sagakit.errors import InvalidArgumentError, SagakitError, UnknownSagaError
from sagakit.log import SagaState, SagaStatus
from sagakit.operations import SagaView, find, versions

router = APIRouter(include_in_schema=False)
FORM_LIMIT = 1 << 20
"""Bytes a posted form may have."""
Board_ = Annotated[Board, Depends(board_of)]
Limit = Annotated[int, Query(ge=1, le=500)]
DONE = {
    "retry": "retry recorded; a worker will carry it on",
    "skip": "step marked done; a worker carries the saga on",
    "resolve": "resolved",
    "cancel": "cancel recorded",
    "signal": "signal sent",
}
"""What the page says after each action (never text from the query string)."""


@router.get("/")
async def home(request: Request, board: Board_) -> Response:
    store, now = board.store, time.time()
    counted = await totals(store)
    per_hour = await hours(store, now)
    return board.page(
        request,
        "home.html",
        totals=counted,
        statuses=list(SagaStatus),
        chart=bars(per_hour),
        hours=per_hour,
        versions=await versions(store, now=now),
    )


@router.get("/sagas")
async def list_page(
    request: Request,
    board: Board_,
    chosen: Annotated[Filters, Depends(filters)],
    limit: Limit = 50,
    after: str = "",
) -> Response:
    return await _listing(request, board, chosen, limit, after, "Sagas")


@router.get("/attention")
async def attention(
    request: Request,
    board: Board_,
    chosen: Annotated[Filters, Depends(filters)],
    limit: Limit = 50,
    after: str = "",
) -> Response:
    chosen.status = [SagaStatus.NEEDS_ATTENTION.value]
    return await _listing(request, board, chosen, limit, after, "Needs attention")


async def _listing(
    request: Request, board: Board, chosen: Filters, limit: int, after: str, title: str
) -> Response:
    now = time.time()
    try:
        page = await find(board.store, chosen.query(now), limit=limit, after=after or None, now=now)
    except InvalidArgumentError as error:
        return _list_page(request, board, chosen, title, [], None, 422, str(error))
    rows = [(list_row(view, now), view.state.reason or "") for view in page.sagas]
    more = None
    if page.next is not None:
        more = f"{request.url.path}?" + urlencode(
            [*chosen.items(), ("limit", str(limit)), ("after", page.next)]
        )
    return _list_page(request, board, chosen, title, rows, more)


def _list_page(
    request: Request,
    board: Board,
    chosen: Filters,
    title: str,
    rows: Sequence[object],
    more: str | None,
    status: int = 200,
    error: str = "",
) -> Response:
    return board.page(
        request,
        "list.html",
        status,
        title=title,
        filters=chosen,
        statuses=STATUSES,
        rows=rows,
        more=more,
        error=error,
    )


async def _view(board: Board, saga_id: str) -> SagaView:
    stored = await board.store.load(saga_id)
    if stored is None:
        raise UnknownSagaError(saga_id)
    return SagaView(stored.instance, SagaState.from_records(saga_id, stored.records))


@router.get("/sagas/{saga_id}")
async def saga(request: Request, board: Board_, saga_id: str, done: str = "") -> Response:
    return board.page(
        request,
        "saga.html",
        saga=saga_page(await _view(board, saga_id), time.time()),
        saga_id=saga_id,
        done=DONE.get(done, ""),
        error="",
        actions=_actions.ACTIONS,
    )


@router.get("/sagas/{saga_id}/live")
async def saga_live(request: Request, board: Board_, saga_id: str) -> Response:
    """The part of the saga page that live updates replace."""
    page = saga_page(await _view(board, saga_id), time.time())
    return board.page(request, "saga_live.html", saga=page, saga_id=saga_id)


@router.get("/sagas/{saga_id}/events")
async def saga_events(board: Board_, saga_id: str) -> Response:
    """Server-Sent Events: ``change`` each time what the saga page shows changes."""
    await _view(board, saga_id)  # an unknown id is a 404, not an empty stream
    stream = changes(board.store, saga_id, lifetime=board.live_for)
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )


# --------------------------------------------------------------------------- actions


@router.post("/sagas/{saga_id}/actions/{action}")
async def act(request: Request, board: Board_, saga_id: str, action: str) -> Response:
    """Confirm, then carry out, an operator's action (see the module's docstring)."""
    form = await _form(request)
    session = _allowed(board, request, form)
    if isinstance(session, Response):
        return session
    try:
        wanted = _actions.from_form(action, form, session.operator)
    except InvalidArgumentError as error:
        return await _refused(request, board, saga_id, 422, str(error))
    view = await _view(board, saga_id)
    if form.get("confirmed") != "yes":
        return board.page(
            request,
            "confirm.html",
            saga_id=saga_id,
            status_now=view.state.status.value,
            action=wanted,
            said=wanted.describe(saga_id),
            fields=wanted.fields(),
            payload=_actions.shown_payload(view, wanted),
        )
    try:
        await _actions.perform(board.store, saga_id, wanted)
    except UnknownSagaError:
        raise
    except SagakitError as error:
        return await _refused(request, board, saga_id, status_of(error), str(error))
    return RedirectResponse(f"/sagas/{quote(saga_id, safe='')}?done={action}", status_code=303)


def _allowed(board: Board, request: Request, form: dict[str, str]) -> Session | Response:
    """The session that may act, or the 403 that says why not (nothing is written)."""
    if board.guard.read_only:
        return failure(request, 403, "this dashboard is read-only: actions are refused")
    session = board.session(request)
    if session is None:
        return failure(request, 403, "log in with the dashboard's token to act")
    if not board.guard.csrf_ok(session, form.get("csrf")):
        return failure(request, 403, "the form's CSRF token is missing or wrong: reload the page")
    return session


async def _refused(request: Request, board: Board, saga_id: str, status: int, why: str) -> Response:
    """The saga page again, saying why the action was refused."""
    view = await _view(board, saga_id)
    return board.page(
        request,
        "saga.html",
        status,
        saga=saga_page(view, time.time()),
        saga_id=saga_id,
        done="",
        error=" ".join(why.split()),
        actions=_actions.ACTIONS,
    )


async def _form(request: Request) -> dict[str, str]:
    """A posted ``application/x-www-form-urlencoded`` form (the last value of a name)."""
    body = await request.body()
    if len(body) > FORM_LIMIT:
        raise InvalidArgumentError(f"the form is larger than {FORM_LIMIT} bytes")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


# --------------------------------------------------------------------------- login


@router.get("/login")
async def login_form(request: Request, board: Board_, next: str = "/") -> Response:
    return board.page(request, "login.html", next=_local(next), error="")


@router.post("/login")
async def login(request: Request, board: Board_) -> Response:
    form = await _form(request)
    target = _local(form.get("next", "/"))
    if board.guard.read_only:
        return board.page(
            request, "login.html", 403, next=target, error="this dashboard is read-only"
        )
    if not board.guard.token_ok(form.get("token")):
        return board.page(request, "login.html", 403, next=target, error="that is not the token")
    try:
        name = operator_name(form.get("operator"))
    except InvalidArgumentError as error:
        return board.page(request, "login.html", 422, next=target, error=str(error))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        board.guard.open_session(name),
        max_age=int(SESSION_TTL),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, board: Board_) -> Response:
    form = await _form(request)
    session = board.session(request)
    if session is not None and not board.guard.csrf_ok(session, form.get("csrf")):
        return failure(request, 403, "the form's CSRF token is missing or wrong: reload the page")
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
    return response


def _local(target: str) -> str:
    """``target`` if it is a path on this dashboard, else ``/``: no open redirect."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"
