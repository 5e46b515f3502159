"""The one door every payload goes through on its way to a page or an API answer.

A saga's input, its steps' results, the payloads of the signals it took and the results an
operator gave a skipped step may hold what a screen must not show (a card number, an
address). Every template and every JSON shape of the dashboard gets them only from
:func:`shown`, so that redacting them is a change to this one function, never a hunt
through templates. The rules are the saga's own: the fields its definition named in
``redact=``, which its ``saga_started`` record carries (see :mod:`sagakit.log._redaction`).
"""

from __future__ import annotations

from typing import Any

from sagakit.log import SagaState
from sagakit.operations import SagaView


def shown(view_or_state: SagaView | SagaState, value: Any) -> Any:
    """``value``, one of the saga's payloads, as the dashboard may show it.

    ``view_or_state`` says whose payload it is: its secret fields are shown as ``***``.
    """
    state = view_or_state.state if isinstance(view_or_state, SagaView) else view_or_state
    return state.redaction(value)
