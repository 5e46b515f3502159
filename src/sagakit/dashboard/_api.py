"""The JSON API under ``/api/``: the pages' reads as JSON, and the operator's actions.

Reads are open (like the pages); every action needs ``Authorization: Bearer TOKEN`` and is
refused with 403, before anything is read or written, without it or on a read-only
dashboard. The bodies name who acts (``by``, default ``dashboard``) and why, as the CLI's
``--by`` and ``--note`` do. Every answer's shape is a model of :mod:`._models`, so
``/openapi.json`` describes exactly what comes back, refusals included.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from sagakit.dashboard import _actions
from sagakit.dashboard._activity import hours
from sagakit.dashboard._board import Board, board_of
from sagakit.dashboard._filters import Filters, filters
from sagakit.dashboard._models import (
    ActionOut,
    CancelIn,
    CountOut,
    HourOut,
    Problem,
    ResolveIn,
    RetryIn,
    SagaDetailOut,
    SagaPageOut,
    SignalIn,
    SkipIn,
)
from sagakit.dashboard._security import operator_name
from sagakit.dashboard._shapes import saga_detail_json, saga_json
from sagakit.errors import InvalidArgumentError, UnknownSagaError
from sagakit.log import SagaState
from sagakit.operations import SagaView, count, find
from sagakit.store import Store

_bearer = HTTPBearer(auto_error=False, description="The token `sagakit ui` was started with.")


def _problem(text: str) -> dict[str, Any]:
    return {"model": Problem, "description": text}


Responses = dict[int | str, dict[str, Any]]
_READ: Responses = {
    422: _problem("A bad filter, cursor or limit"),
    503: _problem("The saga log is away"),
}
_ONE: Responses = {404: _problem("No saga with that id"), **_READ}
_ACT: Responses = {
    403: _problem("No token, a wrong one, or a read-only dashboard: nothing was written"),
    409: _problem("The action does not fit the saga now: nothing was written"),
    **_ONE,
}

router = APIRouter(prefix="/api", tags=["sagas"])
Board_ = Annotated[Board, Depends(board_of)]


def _authorized(
    board: Board_, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Board:
    """The board, once the request proved it holds the token (403 otherwise)."""
    if board.guard.read_only:
        raise HTTPException(403, "this dashboard is read-only: actions are refused")
    if credentials is None or not board.guard.bearer_ok(credentials.credentials):
        raise HTTPException(403, "an action needs the header Authorization: Bearer TOKEN")
    return board


Acting = Annotated[Board, Depends(_authorized)]


@router.get("/sagas", response_model=SagaPageOut, responses=_READ)
async def list_sagas(
    board: Board_,
    chosen: Annotated[Filters, Depends(filters)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[str | None, Query(description="The `next` of the page before.")] = None,
) -> dict[str, Any]:
    """Sagas that pass every filter, newest first, a page at a time."""
    now = time.time()
    page = await find(board.store, chosen.query(now), limit=limit, after=after or None, now=now)
    return {"sagas": [saga_json(view) for view in page.sagas], "next": page.next}


@router.get("/sagas/{saga_id}", response_model=SagaDetailOut, responses=_ONE)
async def one_saga(board: Board_, saga_id: str) -> dict[str, Any]:
    """One saga: its state, every record of its log, and its flowchart."""
    return saga_detail_json(await _view(board.store, saga_id))


@router.get("/counts", response_model=list[CountOut], responses=_READ)
async def counts(board: Board_, chosen: Annotated[Filters, Depends(filters)]) -> list[Any]:
    """How many sagas that pass the filters each saga version has in each status."""
    now = time.time()
    found = await count(board.store, chosen.query(now), now=now)
    return [{**row._asdict(), "status": row.status.value} for row in found]


@router.get("/activity", response_model=list[HourOut], responses=_READ)
async def activity(
    board: Board_, last: Annotated[int, Query(ge=1, le=168, description="Hours back.")] = 24
) -> list[Any]:
    """Sagas started in each of the last hours (the current one last), by status now."""
    found = await hours(board.store, time.time(), last)
    return [
        {"start": hour.start, "statuses": {s.value: n for s, n in hour.statuses.items()}}
        for hour in found
    ]


async def _view(store: Store, saga_id: str) -> SagaView:
    stored = await store.load(saga_id)
    if stored is None:
        raise UnknownSagaError(saga_id)
    return SagaView(stored.instance, SagaState.from_records(saga_id, stored.records))


async def _act(store: Store, saga_id: str, action: _actions.Action) -> dict[str, Any]:
    await _view(store, saga_id)  # an unknown id is a 404 before anything else
    outcome = await _actions.perform(store, saga_id, action)
    status = (await _view(store, saga_id)).state.status.value
    return {"saga_id": saga_id, "action": action.kind, "outcome": outcome, "status": status}


@router.post("/sagas/{saga_id}/retry", response_model=ActionOut, responses=_ACT)
async def retry(board: Acting, saga_id: str, body: RetryIn) -> dict[str, Any]:
    """Try a needs_attention saga's failed calls again (``from_step``: from that step)."""
    action = _actions.Action("retry", operator_name(body.by), body.note, body.from_step or None)
    return await _act(board.store, saga_id, action)


@router.post("/sagas/{saga_id}/skip", response_model=ActionOut, responses=_ACT)
async def skip(board: Acting, saga_id: str, body: SkipIn) -> dict[str, Any]:
    """Mark a failed forward step done by hand, ``result`` standing for its result."""
    if not body.step.strip():
        raise InvalidArgumentError("skip needs the step to mark done")
    note = _actions.noted("skip", body.note)
    action = _actions.Action("skip", operator_name(body.by), note, body.step, body.result)
    return await _act(board.store, saga_id, action)


@router.post("/sagas/{saga_id}/resolve", response_model=ActionOut, responses=_ACT)
async def resolve(board: Acting, saga_id: str, body: ResolveIn) -> dict[str, Any]:
    """Record that a needs_attention saga was finished by hand (a note is required)."""
    action = _actions.Action(
        "resolve", operator_name(body.by), _actions.noted("resolve", body.note)
    )
    return await _act(board.store, saga_id, action)


@router.post("/sagas/{saga_id}/cancel", response_model=ActionOut, responses=_ACT)
async def cancel(board: Acting, saga_id: str, body: CancelIn) -> dict[str, Any]:
    """Ask an unfinished saga that has not passed its pivot to compensate."""
    action = _actions.Action("cancel", operator_name(body.by), body.reason.strip())
    return await _act(board.store, saga_id, action)


@router.post("/sagas/{saga_id}/signal", response_model=ActionOut, responses=_ACT)
async def signal(board: Acting, saga_id: str, body: SignalIn) -> dict[str, Any]:
    """Send a message to an unfinished saga; a step waiting for ``name`` goes on with it."""
    if not body.name.strip():
        raise InvalidArgumentError("a signal needs a name")
    action = _actions.Action("signal", "dashboard", name=body.name, payload=body.payload)
    return await _act(board.store, saga_id, action)
