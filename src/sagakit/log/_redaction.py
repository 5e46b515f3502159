"""Payload fields a saga names as secret, masked wherever a payload is shown.

A saga declares the fields (``Saga("order", redact=["card_number", "customer.address"])``)
and its ``saga_started`` record carries them, so every reader of the log (``sagakit show``,
``list --json``, the dashboard) masks the same fields without importing the definition. The
raw values stay in the store: a compensation still gets the card token it needs.

A field matches at any depth of any payload (the input, a step's result, a message, an
operator's skip result): ``card_number`` masks every ``card_number`` key, and a dotted path
``customer.address`` masks an ``address`` key directly under a ``customer`` key. List items
are looked into as if they were not there, so ``items.price`` masks the price of each item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

MASK = "***"
"""What a masked value is shown as."""


def redaction_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """``paths`` checked: each a non-empty dotted name without empty parts.

    Raises :class:`ValueError` naming the bad path; callers wrap it in their own error.
    """
    checked = []
    for path in paths:
        if not isinstance(path, str) or not all(path.split(".")):
            raise ValueError(f"a redacted field is a dotted name like 'card.number', not {path!r}")
        checked.append(path)
    return tuple(checked)


class Redaction:
    """The masking of one saga's secret fields; calling it masks a payload (a copy)."""

    __slots__ = ("_suffixes", "paths")

    def __init__(self, paths: Sequence[str] = ()) -> None:
        self.paths = tuple(paths)
        self._suffixes = [tuple(path.split(".")) for path in self.paths]

    def __bool__(self) -> bool:
        return bool(self.paths)

    def __call__(self, value: Any) -> Any:
        return self._walk(value, ()) if self.paths else value

    def _walk(self, value: Any, at: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            masked = {}
            for key, item in value.items():
                path = (*at, str(key))
                masked[key] = MASK if self._secret(path) else self._walk(item, path)
            return masked
        if isinstance(value, list):
            return [self._walk(item, at) for item in value]
        return value

    def _secret(self, path: tuple[str, ...]) -> bool:
        return any(path[-len(suffix) :] == suffix for suffix in self._suffixes)


NO_REDACTION = Redaction()
"""A saga that names no secret field: payloads are shown as they are."""
