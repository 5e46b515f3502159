"""OpenTelemetry traces and metrics for sagas (the ``sagakit[otel]`` extra).

With ``opentelemetry-api`` installed, every engine, client and choreographed service
records to the global tracer and meter providers (named ``sagakit``); configure the SDK
(``opentelemetry-sdk``) to export them. Without the API, or with ``SAGAKIT_TELEMETRY=off``,
nothing is recorded and nothing is imported: the hooks are skipped on one ``is None`` test.

- one trace per saga instance: the caller's span at ``Client.start`` / ``Engine.run`` (its
  W3C ``traceparent`` is kept in the ``saga_started`` record), or a ``saga.start`` root;
- a ``saga.drive`` span per drive, its children a ``saga.step`` / ``saga.compensation``
  span per call; a resumed drive links to the drive before it;
- choreographed events carry ``traceparent``; a handler runs in a ``saga.handle`` span
  continuing it.

:data:`METRICS` names every metric.
"""

from sagakit.telemetry._names import (
    COMPENSATION_SPAN,
    DRIVE_SPAN,
    HANDLE_SPAN,
    INSTRUMENTATION,
    METRICS,
    PUBLISH_SPAN,
    START_SPAN,
    STEP_SPAN,
)
from sagakit.telemetry._switch import available, configure, disable, enable

__all__ = [
    "COMPENSATION_SPAN",
    "DRIVE_SPAN",
    "HANDLE_SPAN",
    "INSTRUMENTATION",
    "METRICS",
    "PUBLISH_SPAN",
    "START_SPAN",
    "STEP_SPAN",
    "available",
    "configure",
    "disable",
    "enable",
]
