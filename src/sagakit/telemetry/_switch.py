"""Whether sagakit records telemetry: only if the OpenTelemetry API is installed, and not
switched off. Imported by the engine, the client and services at construction, never on a
hot path; nothing here imports OpenTelemetry unless it is installed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from sagakit.telemetry._otel import Telemetry

_OFF = os.environ.get("SAGAKIT_TELEMETRY", "").strip().lower() in {"0", "off", "false", "no"}
_shared: Telemetry | None = None
_missing = False


def available() -> bool:
    """Whether the OpenTelemetry API (the ``sagakit[otel]`` extra) is installed."""
    return _load() is not None


def enable() -> None:
    """Record spans and metrics in engines, clients and services made from now on (the
    default when the API is installed, unless ``SAGAKIT_TELEMETRY=off``)."""
    global _OFF
    _OFF = False


def disable() -> None:
    """Record nothing in engines, clients and services made from now on, as if the API
    were not installed (``SAGAKIT_TELEMETRY=off`` does the same for a whole process)."""
    global _OFF
    _OFF = True


def configure(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Record to these providers instead of the global ones (``None``: the global one), in
    engines, clients and services made from now on. For a process that keeps sagakit's
    telemetry apart, and for tests; most applications set the global providers instead.
    Raises :class:`ImportError` if the OpenTelemetry API is not installed."""
    global _shared
    from sagakit.telemetry._otel import Telemetry

    _shared = Telemetry(tracer_provider, meter_provider)


def active() -> Telemetry | None:
    """The telemetry a new engine, client or service records to; None when there is none
    (the API is absent or it is switched off): then every hook is skipped."""
    if _OFF:
        return None
    return _load()


def _load() -> Telemetry | None:
    global _shared, _missing
    if _shared is None and not _missing:
        try:
            from sagakit.telemetry._otel import Telemetry
        except ImportError:  # the otel extra is not installed
            _missing = True
        else:
            _shared = Telemetry()
    return _shared
