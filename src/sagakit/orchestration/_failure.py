"""A failed call as the saga log keeps it: the error's type, its message and where it was
raised (an :class:`~sagakit.log.ErrorInfo`)."""

from __future__ import annotations

import itertools
import linecache
import traceback
from types import TracebackType

from sagakit.errors import StepTimeoutError

TRACEBACK_LIMIT = 4000
"""Characters of a traceback the log keeps: its end is what an operator reads, and a deep
recursion or a huge message must not make a record of megabytes."""
_TRACEBACK_LINE = 500
"""Characters kept of one line of it, so a huge message leaves room for the frames."""


def describe(error: BaseException) -> dict[str, str]:
    """``error`` as the log keeps it (an :class:`~sagakit.log.ErrorInfo`)."""
    name = _type_name(type(error), ("builtins",))
    described = {"type": name, "message": _text(error) or name}
    stack = _traceback(error)
    if stack is not None:
        described["traceback"] = stack
    return described


def _traceback(error: BaseException) -> str | None:
    """Where ``error`` was raised, from below the driver's frame that caught it.

    An error sagakit makes without raising it (a result that is not JSON, a saga past its
    deadline) gets none: no user code was on its stack, and its message says it all. A
    timeout gets the stack of the call it cut off, the one clue to where that call hung.
    """
    raised = error.__context__ if isinstance(error, StepTimeoutError) else error
    if raised is None or raised.__traceback__ is None:
        return None
    return _bounded(_formatted(error, raised.__traceback__.tb_next))


def _formatted(error: BaseException, stack: TracebackType | None) -> str:
    """What ``traceback.format_exception`` writes, less the carets of Python 3.11.

    To place its carets under the failing expression, the traceback module parses each
    frame's source line again: a compensating saga on MemoryStore took 224 us of CPU with
    it, 134 without (its traceback has four frames). A lone error is written
    here, frame by frame; one with a cause or context to show, notes, sub-errors, or a
    frame repeated (a recursion, which the module abridges) is left to the module.
    """
    frames = list(traceback.walk_tb(stack))
    places = [(frame.f_code.co_filename, line, frame.f_code.co_name) for frame, line in frames]
    lone = error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    if not lone or _unusual(error) or any(a == b for a, b in itertools.pairwise(places)):
        return "".join(traceback.format_exception(type(error), error, stack))
    lines = ["Traceback (most recent call last):\n"] if frames else []
    for (frame, _), (filename, line, name) in zip(frames, places, strict=True):
        lines.append(f'  File "{filename}", line {line}, in {name}\n')
        source = linecache.getline(filename, line, frame.f_globals).strip()
        if source:
            lines.append(f"    {source}\n")
    lines.append(_last_line(error))
    return "".join(lines)


def _last_line(error: BaseException) -> str:
    """The traceback module's last line for a plain error: its type, then its message."""
    name = _type_name(type(error), ("__main__", "builtins"))
    text = _text(error)
    return f"{name}: {text}\n" if text else f"{name}\n"


def _type_name(kind: type[BaseException], unqualified: tuple[str, ...]) -> str:
    """The type's name, after its module's unless that is one of ``unqualified``."""
    if kind.__module__ in unqualified:
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _text(error: BaseException) -> str:
    """The error's message; an error whose ``__str__`` fails must still be recorded."""
    try:
        return str(error)
    except Exception:
        return "<exception str() failed>"


def _unusual(error: BaseException) -> bool:
    """An error whose last lines the traceback module writes its own way."""
    return (
        isinstance(error, (BaseExceptionGroup, SyntaxError))
        or getattr(error, "__notes__", None) is not None
    )


def _bounded(text: str) -> str:
    """``text`` if it is short enough; else its last lines (a long one cut) after a line
    saying how many characters were left out."""
    if len(text) <= TRACEBACK_LIMIT:
        return text
    budget = TRACEBACK_LIMIT - 40  # the first line's room
    kept: list[str] = []
    for line in reversed(text.splitlines(keepends=True)):
        shown = line if len(line) <= _TRACEBACK_LINE else line[: _TRACEBACK_LINE - 2] + "…\n"
        if len(shown) > budget:
            break
        kept.append(shown)
        budget -= len(shown)
    cut = len(text) - sum(map(len, kept))
    return f"... {cut} characters cut\n" + "".join(reversed(kept))
