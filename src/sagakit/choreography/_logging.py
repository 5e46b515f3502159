"""What choreography logs with: one logger, and the fields that tie a record to its saga.

A choreographed saga crosses services, relays and the tracker, often in different processes;
an operator follows it by searching one field, ``saga_id`` (the events' correlation id), as for
an orchestrated saga. So every record about an event carries the orchestration side's field
names plus the event's own (``event_type``, ``event_id``, ``stream``) and ``service``, the
part that logged it (a service, a relay, the tracker's group).
"""

from __future__ import annotations

import logging
from typing import Any

from sagakit.bus import Event

logger = logging.getLogger("sagakit.choreography")


def event_fields(event: Event, stream: str, service: str, attempt: int = 0) -> dict[str, Any]:
    """The ``extra=`` fields of a record about ``event`` on ``stream`` (if known), seen by
    ``service``."""
    fields: dict[str, Any] = {
        "saga_id": event.correlation_id,
        "event_type": event.type,
        "event_id": event.id,
        "service": service,
    }
    if stream:
        fields["stream"] = stream
    if attempt:
        fields["attempt"] = attempt
    return fields


def saga_fields(name: str, version: int, step: str | None = None) -> dict[str, Any]:
    """The fields naming the choreography (and the step) a tracked record belongs to."""
    fields: dict[str, Any] = {"saga_name": name, "saga_version": version}
    if step is not None:
        fields["step"] = step
    return fields


def handling_failed(
    fields: dict[str, Any], error: BaseException, attempt: int, max_attempts: int
) -> None:
    """Log a handler's failure: a warning while the broker will deliver the event again, an
    error (with the traceback) on the last attempt, after which it goes to the dead letters.

    The consume loop makes that choice by the same numbers; saying it here, beside the
    event's fields, is what lets an operator find the dead letter's saga.
    """
    what = f"{fields['event_type']} {fields['event_id']} of saga {fields['saga_id']}"
    if attempt >= max_attempts:
        logger.error(
            "%s: %s dead-lettered after %d attempt(s): %r",
            *(fields["service"], what, attempt, error),
            exc_info=error,
            extra=fields,
        )
    else:
        logger.warning(
            "%s: %s failed (attempt %d of %d), to be delivered again: %r",
            *(fields["service"], what, attempt, max_attempts, error),
            extra=fields,
        )
