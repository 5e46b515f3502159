"""The Broker protocol and the values that cross it: deliveries and dead letters.

Semantics every broker keeps (and :class:`sagakit.testing.BrokerContract`
checks against the real servers):

- ``publish`` returns only once the broker has the event durably.
- A *group* is a service: the subscriptions of one group compete for the events (each is
  handled by one of them), and every group gets every event (fan-out). A group receives the
  events published after it was first subscribed; earlier ones are not replayed.
- Delivery is at least once. A handler that returns acknowledges the event; one that raises
  gets it again (``attempt`` 2, 3, ...) until ``max_attempts``, after which the event goes to
  the stream's dead letters with the error. A message that is not a valid event goes there
  at once. An event held by a consumer that died is given to another consumer of the group
  after ``redeliver_after`` seconds (RabbitMQ: as soon as the connection drops).
- Consumers should de-duplicate by ``event.id`` (an inbox), as the DESIGN says.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sagakit.bus._event import Event
from sagakit.errors import BrokerNameError, MalformedEventError
from sagakit.log._codec import decode, encode

if TYPE_CHECKING:
    from sagakit.bus._consumer import Subscription

_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")


def check_name(kind: str, name: str) -> str:
    """``name`` if every broker can use it as is (Redis key, NATS subject and stream, AMQP).

    Letters, digits, ``-`` and ``_`` only: NATS forbids dots and wildcards in stream names,
    and the backends build their own names with ``.`` and ``:`` as separators.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BrokerNameError(
            f"invalid {kind} name {name!r}: use 1 to 100 letters, digits, '-' or '_'"
        )
    return name


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


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message given up on: the original bytes and why.

    ``attempts`` is how many times it was delivered (0 if the broker dropped it unseen).
    """

    stream: str
    group: str
    error: str
    attempts: int
    time: float
    raw: bytes

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
            )
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raw = data.encode() if isinstance(data, str) else data
            return cls("", "", f"not a sagakit dead letter ({exc!r})", 0, 0.0, raw)


class Broker(Protocol):
    """Durable publish/subscribe with consumer groups, retries and dead letters."""

    url: str
    """The broker's URL, without any password (safe to log)."""

    async def publish(self, stream: str, event: Event) -> None:
        """Append ``event`` to ``stream``; returns once the broker has it durably.

        Retries a lost connection with bounded exponential back-off, then raises
        :class:`~sagakit.errors.BrokerConnectionError`.
        """
        ...

    async def subscribe(
        self,
        stream: str,
        group: str,
        handler: Handler,
        *,
        max_attempts: int = 5,
        prefetch: int = 10,
    ) -> Subscription:
        """Start calling ``handler`` for the events of ``stream`` given to ``group``.

        Handlers of one subscription run one at a time, in stream order; ``prefetch`` is
        how many unacknowledged events it may hold at once.
        """
        ...

    async def dead_letters(self, stream: str) -> list[DeadLetter]:
        """The messages of ``stream`` given up on, oldest first (left in place)."""
        ...

    async def close(self) -> None:
        """Stop every subscription (letting running handlers finish) and disconnect."""
        ...
