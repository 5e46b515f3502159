"""The results a saga's steps recorded, as the steps after them and the compensations see them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from sagakit.log._codec import decode


class Results(Mapping[str, Any]):
    """The recorded results of the steps that had succeeded when it was made.

    Each result is decoded from the log when it is read, so the hot path does no JSON work
    for results nobody reads and every reader gets its own copy: a step cannot change what
    another step sees. It is a view of the first ``count`` entries of the engine's results,
    which only ever grow, so it is cheap to make and never shows later steps' results.
    """

    __slots__ = ("_count", "_raw")

    def __init__(self, raw: Mapping[str, str], count: int | None = None) -> None:
        self._raw = raw
        self._count = len(raw) if count is None else count

    def __getitem__(self, step: str) -> Any:
        if step in self._raw and step in self._names():
            return decode(self._raw[step])
        raise KeyError(step)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return self._count

    def _names(self) -> list[str]:
        return list(islice(self._raw, self._count))

    def __repr__(self) -> str:
        return f"Results({dict(self.items())!r})"
