"""What a broker hands out: a delivery to a handler, and a dead letter for what it gave up on.

These values cross the :class:`~sagakit.bus.Broker` seam both ways: a handler receives a
:class:`Delivery`; a backend stores and lists :class:`DeadLetter` s without reading them.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sagakit.bus._event import Event
from sagakit.errors import MalformedEventError
from sagakit.log._codec import decode, encode


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of an event to a handler; ``attempt`` counts from 1."""

    event: Event
    attempt: int
    raw: bytes
    stream: str
    group: str


Handler = Callable[[Delivery], Awaitable[None]]
"""What a subscription calls for each event; returning acknowledges it, raising retries it."""


ERROR_EXCERPT = 4096
"""Characters of the error a dead letter cut to fit its broker keeps."""
LETTER_ROOM = 256
"""Bytes kept free in a cut dead letter for the note saying it was cut, and escaping."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message given up on: the original bytes and why.

    ``attempts`` is how many times it was delivered (0 if the broker dropped it unseen).
    ``cut_from`` is the original message's size when ``raw`` is only its start (see
    :meth:`within`), else 0.
    """

    stream: str
    group: str
    error: str
    attempts: int
    time: float
    raw: bytes
    cut_from: int = 0

    def within(self, limit: int) -> DeadLetter:
        """This letter, or one keeping only the start of ``raw`` if its JSON is over
        ``limit`` bytes: base64 makes a letter a third bigger than its message, so a
        message near the broker's limit could never be dead-lettered whole, and would be
        redelivered for ever."""
        size = len(self.to_json())
        if size <= limit:
            return self
        error = self.error[:ERROR_EXCERPT]
        rest = size - _b64_len(len(self.raw)) - len(self.error) + len(error) + LETTER_ROOM
        room = max(0, (limit - rest) // 4 * 3)
        note = f"{error} (raw: its first {room:,} of {len(self.raw):,} bytes)"
        return dataclasses.replace(self, error=note, raw=self.raw[:room], cut_from=len(self.raw))

    @property
    def event(self) -> Event | None:
        """The event in ``raw``, or None if the message was malformed."""
        try:
            return Event.parse(self.raw)
        except MalformedEventError:
            return None

    def to_json(self) -> bytes:
        """Compact JSON with ``raw`` in base64 (a malformed message need not be text)."""
        fields: dict[str, Any] = {
            "stream": self.stream,
            "group": self.group,
            "error": self.error,
            "attempts": self.attempts,
            "time": self.time,
            "raw": base64.b64encode(self.raw).decode(),
        }
        if self.cut_from:
            fields["cut_from"] = self.cut_from
        return encode(fields).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> DeadLetter:
        """The dead letter :meth:`to_json` wrote; anything else is shown as it is, not lost.

        Backends store dead letters opaquely, and an operator may have put other data in
        the same place: listing dead letters must never fail because of one entry.
        """
        try:
            obj = decode(data if isinstance(data, str) else data.decode())
            return cls(
                stream=str(obj["stream"]),
                group=str(obj["group"]),
                error=str(obj["error"]),
                attempts=int(obj["attempts"]),
                time=float(obj["time"]),
                raw=base64.b64decode(obj["raw"], validate=True),
                cut_from=int(obj.get("cut_from", 0)),
            )
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raw = data.encode() if isinstance(data, str) else data
            return cls("", "", f"not a sagakit dead letter ({exc!r})", 0, 0.0, raw)


def _b64_len(size: int) -> int:
    return (size + 2) // 3 * 4
