"""The operator's actions, as the saga page's forms and the JSON API ask for them.

Each is one call of :class:`sagakit.orchestration.Client`, exactly as ``sagakit retry``,
``skip``, ``resolve``, ``cancel`` and ``signal`` make it: the client checks the saga's state
under its lease and refuses (recording nothing) where the action would be unsafe, and the
record it appends names who acted and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sagakit.dashboard._payloads import shown
from sagakit.errors import InvalidArgumentError
from sagakit.operations import SagaView
from sagakit.orchestration import Client
from sagakit.store import Store

ACTIONS = ("retry", "skip", "resolve", "cancel", "signal")


@dataclass(frozen=True, slots=True)
class Action:
    """One action on one saga, its fields checked (see :func:`from_form`)."""

    kind: str
    by: str
    note: str = ""
    step: str | None = None
    result: Any = None
    name: str = ""
    payload: Any = None

    def describe(self, saga_id: str) -> str:
        """What the action will do, in a sentence, for the confirmation step."""
        said = {
            "retry": "try its failed calls again"
            + ("" if self.step is None else f", from step {self.step!r}"),
            "skip": f"mark step {self.step!r} done by hand, with the result below",
            "resolve": "record that it was finished by hand",
            "cancel": "ask it to compensate what it did",
            "signal": f"send it the message {self.name!r}, with the payload below",
        }[self.kind]
        return f"{self.kind} saga {saga_id!r}: {said}"

    def fields(self) -> dict[str, str]:
        """The form fields that ask for this action again (the confirmation's hidden ones)."""
        out = {"note": self.note, "step": self.step or ""}
        if self.kind == "skip":
            out["result"] = json.dumps(self.result)
        if self.kind == "signal":
            out |= {"name": self.name, "payload": json.dumps(self.payload)}
        return out


def from_form(kind: str, form: Mapping[str, str], by: str) -> Action:
    """The action a form asks for; :class:`InvalidArgumentError` for what cannot work."""
    if kind not in ACTIONS:
        raise InvalidArgumentError(f"unknown action {kind!r}; use one of: {', '.join(ACTIONS)}")
    note = form.get("note", "").strip()
    step = form.get("step", "").strip() or None
    if kind == "skip":
        if step is None:
            raise InvalidArgumentError("skip needs the step to mark done")
        return Action(kind, by, noted(kind, note), step, _json("result", form.get("result")))
    if kind == "signal":
        name = form.get("name", "").strip()
        if not name:
            raise InvalidArgumentError("a signal needs a name")
        return Action(kind, by, name=name, payload=_json("payload", form.get("payload")))
    if kind == "resolve":
        note = noted(kind, note)
    return Action(kind, by, note, step if kind == "retry" else None)


def shown_payload(view: SagaView, action: Action) -> str | None:
    """The JSON an action hands the saga (a skip's result, a signal's payload), as the
    confirmation shows it; None for an action that hands it none."""
    if action.kind == "skip":
        return json.dumps(shown(view, action.result), indent=2, ensure_ascii=False)
    if action.kind == "signal":
        return json.dumps(shown(view, action.payload), indent=2, ensure_ascii=False)
    return None


async def perform(store: Store, saga_id: str, action: Action) -> str:
    """Carry ``action`` out; what happened, in a sentence (refusals raise sagakit's errors)."""
    client = Client(store, operator=action.by)
    if action.kind == "retry":
        await client.retry(saga_id, from_step=action.step, note=action.note, by=action.by)
        where = "" if action.step is None else f" from step {action.step!r}"
        return f"retry{where} recorded; a worker will carry it on"
    if action.kind == "skip":
        step = action.step or ""
        await client.skip(saga_id, step, result=action.result, note=action.note, by=action.by)
        return f"step {step!r} marked done; a worker carries the saga on"
    if action.kind == "resolve":
        await client.resolve(saga_id, note=action.note, by=action.by)
        return "resolved"
    if action.kind == "cancel":
        if await client.cancel(saga_id, reason=action.note, by=action.by):
            return "cancelled; it compensates now (a worker undoes what was done)"
        return "cancel sent to the worker driving it: it compensates at its next step, or refuses"
    await client.signal(saga_id, action.name, action.payload)
    return f"{action.name!r} sent"


def noted(kind: str, note: str) -> str:
    """``note``, stripped; refused if there is none (resolve and skip say what was done)."""
    note = note.strip()
    if not note:
        raise InvalidArgumentError(f"{kind} needs a note: say what was done")
    return note


def _json(name: str, text: str | None) -> Any:
    if text is None or not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidArgumentError(f"the {name} is not JSON: {error}") from None
