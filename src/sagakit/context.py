"""What an action or a compensation is handed when it is called."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sagakit.codec import decode


class Results(Mapping[str, Any]):
    """The recorded results of earlier steps, decoded from the log on each access.

    Decoding on access keeps the hot path free of JSON work for results nobody reads, and
    hands every reader its own copy, so a step cannot change what another step sees.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw

    def __getitem__(self, step: str) -> Any:
        return decode(self._raw[step])

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"Results({dict(self.items())!r})"


@dataclass(slots=True)
class StepContext:
    """Handed to a step's action.

    ``idempotency_key`` is the same for every attempt of this action, in any process;
    pass it to the remote service so a retried call has no second effect.
    """

    saga_id: str
    saga_name: str
    step: str
    attempt: int
    idempotency_key: str
    input: Any
    results: Results


@dataclass(slots=True)
class CompensationContext:
    """Handed to a step's compensation.

    ``result`` is what the action returned, or None when the action failed and the step has
    ``compensate_on_failure``; then ``error`` describes the failure (``type``, ``message``).
    ``action_key`` is the key the action was called with, so a service can undo whatever
    it did under that key (a partial reservation, say).
    """

    saga_id: str
    saga_name: str
    step: str
    attempt: int
    idempotency_key: str
    action_key: str
    input: Any
    result: Any
    error: Mapping[str, Any] | None
    results: Results
