"""Sagas as the JSON API answers with them: the shapes of ``sagakit list --json`` and
``show --json``, with every payload passed through :func:`shown` on the way."""

from __future__ import annotations

import json
from typing import Any

from sagakit._graph import instance_graph
from sagakit.dashboard._payloads import shown
from sagakit.log import Record, RecordType, SagaState
from sagakit.operations import SagaView

_TRACKED = frozenset({"event", "source", "event_id", "causation_id"})


def saga_json(view: SagaView) -> dict[str, Any]:
    """A saga as the list gives it: its state without events, and its row's facts."""
    out = view.as_dict()
    out["input"] = shown(view, out["input"])
    for step in out["steps"]:
        step["result"] = shown(view, step["result"])
    return out


def saga_detail_json(view: SagaView) -> dict[str, Any]:
    """A saga with every record of its log (payloads shown) and its Mermaid flowchart."""
    state = view.state
    return {
        **saga_json(view),
        "events": [_event(state, record) for record in state.records],
        "graph": instance_graph(state),
    }


def _event(state: SagaState, record: Record) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "type": record.type.value,
        "at": record.at,
        "step": record.step,
        "attempt": record.attempt,
        "data": _data(state, record),
    }


def _data(state: SagaState, record: Record) -> Any:
    """A record's data with its payload, wherever the record kind keeps one, shown."""
    if record.data is None:
        return None
    data = json.loads(record.data)
    kind = record.type
    if kind is RecordType.STEP_SUCCEEDED:
        return shown(state, data)
    if not isinstance(data, dict):
        return data
    if kind is RecordType.SAGA_STARTED and "input" in data:
        data["input"] = shown(state, data["input"])
    if kind is RecordType.OPERATOR_SKIPPED and "result" in data:
        data["result"] = shown(state, data["result"])
    if kind is RecordType.MESSAGE_RECEIVED and isinstance(data.get("payload"), str):
        data["payload"] = shown(state, _decoded(data["payload"]))
    if data.keys() >= _TRACKED and "payload" in data:
        data["payload"] = shown(state, data["payload"])
    return data


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
