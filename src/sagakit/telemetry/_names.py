"""The names sagakit's spans, attributes and metrics go by: stable, documented, and free of
any OpenTelemetry import (so they can be read without the ``otel`` extra)."""

from __future__ import annotations

from typing import Final

INSTRUMENTATION: Final = "sagakit"
"""The tracer's and the meter's name."""

DRIVE_SPAN: Final = "saga.drive"
"""``saga.drive <saga name>``: one drive of an instance (a worker or an engine taking it as
far as it goes now); its step and compensation spans are its children."""
STEP_SPAN: Final = "saga.step"
"""``saga.step <step>``: one attempt of a step's action."""
COMPENSATION_SPAN: Final = "saga.compensation"
"""``saga.compensation <step>``: one attempt of a step's compensation."""
START_SPAN: Final = "saga.start"
"""``saga.start <saga name>``: the root of a saga's trace when it was started outside any
span (otherwise the caller's span is its root)."""
HANDLE_SPAN: Final = "saga.handle"
"""``saga.handle <event type>``: a choreographed service handling one event."""
PUBLISH_SPAN: Final = "saga.publish"
"""``saga.publish <event type>``: the root of a choreographed saga's trace when its first
event was emitted outside any span."""

METRICS: Final = {
    "sagakit.sagas.started": "counter: instances started, by saga.name and saga.version",
    "sagakit.sagas.completed": "counter: instances that completed in a drive",
    "sagakit.sagas.compensated": "counter: instances that compensated in a drive",
    "sagakit.sagas.needs_attention": "counter: instances that ended needing attention",
    "sagakit.step.duration": (
        "histogram (s): a step action's call, by saga.name, saga.step and saga.outcome"
    ),
    "sagakit.compensation.duration": (
        "histogram (s): a compensation's call, by saga.name, saga.step and saga.outcome"
    ),
    "sagakit.retries": "counter: calls made again (attempt 2 and on), by saga.name, saga.step "
    "and saga.role (action or compensation)",
    "sagakit.drives.active": "up-down counter: drives in flight, by saga.name and saga.version",
    "sagakit.lease.takeovers": "counter: calls another holder started, made again by this one "
    "(call_taken_over), by saga.name and saga.version",
    "sagakit.events.handled": "counter: events a choreographed service handled (committed), "
    "by sagakit.service and sagakit.event.type",
    "sagakit.events.dead_letters": "counter: events whose last allowed delivery failed in a "
    "handler, by sagakit.service and messaging.destination.name",
}
"""Every metric sagakit records, and what it counts. A Prometheus exporter writes the dots
as underscores, adds ``_total`` to counters and ``_seconds`` to the durations."""
