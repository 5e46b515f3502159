"""What an action or a compensation is handed when it is called."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagakit.errors import SignalTimeoutError
from sagakit.log import Results
from sagakit.log._codec import decode

_UNREAD: Any = object()


class WaitForMessage(BaseException):
    """Raised by ``ctx.wait_for`` when the message has not come: the engine records the
    wait and parks the call (a worker is freed) until the message or the timeout.

    A ``BaseException``, so that a step's own ``except Exception`` cannot swallow it.
    """

    def __init__(self, name: str, until: float | None) -> None:
        super().__init__(name, until)
        self.name = name
        self.until = until


class _Context:
    """What both contexts do: decode the input lazily, and wait for messages."""

    __slots__ = ()
    saga_name: str
    step: str
    input_json: str
    _input: Any
    _signals: Mapping[str, str]
    _waiting: Mapping[str, Any] | None

    @property
    def input(self) -> Any:
        """The saga's input, decoded from the log on first use: this call's own copy."""
        if self._input is _UNREAD:
            self._input = decode(self.input_json)
        return self._input

    async def wait_for(self, name: str, timeout: float | None = None) -> Any:
        """The payload of the message ``name`` sent to this saga (``client.signal``).

        If it has not come yet, the call is parked without holding a worker and made
        again, with the same idempotency key, once it comes; so code before ``wait_for``
        must be safe to repeat, as all step code is. After ``timeout`` seconds (counted
        from the first wait, across restarts) it raises :class:`SignalTimeoutError`.
        """
        if name in self._signals:
            return decode(self._signals[name])
        waiting = self._waiting
        if waiting is not None and waiting.get("signal") == name:
            until = waiting["until"]
        else:
            until = None if timeout is None else time.time() + timeout
        if until is not None and time.time() >= until:
            raise SignalTimeoutError(self.saga_name, self.step, name)
        raise WaitForMessage(name, until)


@dataclass(slots=True)
class StepContext(_Context):
    """Handed to a step's action.

    ``idempotency_key`` is the same for every attempt of this action, in any process;
    pass it to the remote service so a retried call has no second effect.
    """

    saga_id: str
    saga_name: str
    step: str
    attempt: int
    idempotency_key: str
    input_json: str = field(repr=False)
    results: Results
    _signals: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    _waiting: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    _input: Any = field(default=_UNREAD, init=False, repr=False, compare=False)


@dataclass(slots=True)
class CompensationContext(_Context):
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
    input_json: str = field(repr=False)
    result: Any
    error: Mapping[str, Any] | None
    results: Results
    _signals: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    _waiting: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    _input: Any = field(default=_UNREAD, init=False, repr=False, compare=False)
