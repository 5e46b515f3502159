"""The JSON API's shapes, as pydantic models: what ``/openapi.json`` promises and what
every answer is checked against before it leaves (a mismatch is a bug, caught in tests by
schemathesis's conformance checks).

The fields are those of ``sagakit list --json`` and ``sagakit show --json``; payloads
(``input``, ``result``, a record's ``data``) are any JSON, as
:func:`~sagakit.dashboard._payloads.shown` gives them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from sagakit.log import SagaStatus


class Problem(BaseModel):
    """Why a request was refused: one line."""

    detail: str


class ErrorOut(BaseModel):
    type: str
    message: str
    traceback: str | None = None


class NoteOut(BaseModel):
    by: str
    note: str


class CancelOut(BaseModel):
    by: str
    reason: str


class WaitingOut(BaseModel):
    signal: str
    until: float | None
    role: str = "action"


class StepWaitingOut(WaitingOut):
    step: str


class StepOut(BaseModel):
    name: str
    kind: str
    status: str
    attempts: int
    compensation_attempts: int
    result: Any = None
    error: ErrorOut | None = None
    compensation_error: ErrorOut | None = None
    retry_at: float | None = None
    waiting: WaitingOut | None = None
    skipped_by: NoteOut | None = None


class SagaOut(BaseModel):
    """One saga: its state folded from the log, and its row's scheduling facts."""

    id: str
    name: str
    version: int
    status: SagaStatus
    input: Any = None
    reason: str | None = None
    failed_compensations: list[str]
    cancel: CancelOut | None = None
    resolution: NoteOut | None = None
    started_at: float | None = None
    updated_at: float | None = None
    steps: list[StepOut]
    due_at: float | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    waiting: StepWaitingOut | None = None
    progress_at: float


class EventOut(BaseModel):
    seq: int
    type: str
    at: float
    step: str | None = None
    attempt: int = 0
    data: Any = None


class SagaDetailOut(SagaOut):
    """One saga with every record of its log and its Mermaid flowchart."""

    events: list[EventOut]
    graph: str = Field(description="The instance as a Mermaid flowchart, coloured by status.")


class SagaPageOut(BaseModel):
    sagas: list[SagaOut]
    next: str | None = Field(description="Pass as `after` for the next page; null: last page.")


class CountOut(BaseModel):
    name: str
    version: int
    status: SagaStatus
    total: int


class HourOut(BaseModel):
    start: float = Field(description="The hour's start, epoch seconds.")
    statuses: dict[str, int] = Field(description="Sagas started in that hour, by status now.")


class ActionOut(BaseModel):
    saga_id: str
    action: str
    outcome: str
    status: SagaStatus


class RetryIn(BaseModel):
    note: str = ""
    from_step: str | None = Field(None, description="The failed step to run again.")
    by: str = "dashboard"


class ResolveIn(BaseModel):
    note: str = Field(description="What was done by hand (required).")
    by: str = "dashboard"


class SkipIn(BaseModel):
    step: str
    result: Any = Field(None, description="What the step would have returned (any JSON).")
    note: str = Field(description="What was done instead (required).")
    by: str = "dashboard"


class CancelIn(BaseModel):
    reason: str = ""
    by: str = "dashboard"


class SignalIn(BaseModel):
    name: str
    payload: Any = Field(None, description="What `ctx.wait_for(name)` returns (any JSON).")
