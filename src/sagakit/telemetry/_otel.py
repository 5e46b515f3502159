"""The OpenTelemetry side of sagakit's hooks; imported only when the API is installed.

The engine asks :meth:`Telemetry.drive` for a :class:`Drive` as it begins driving an
instance; it is None while no tracer or meter provider is configured (the API alone is a
no-op), so a drive then costs one ``isinstance`` check. A :class:`Drive` holds the drive's
span and times each call the driver makes; the driver reports every call's outcome to it.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import opentelemetry.metrics._internal as _metrics_api
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.environment_variables import (
    OTEL_PYTHON_METER_PROVIDER,
    OTEL_PYTHON_TRACER_PROVIDER,
)
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)

from sagakit.bus import Delivery
from sagakit.errors import SagaDeadlineError, StepTimeoutError
from sagakit.log import SagaState
from sagakit.log._codec import decode
from sagakit.log._fast import RecordTypes, SagaStatuses
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

try:  # the API's stand-in until an SDK's provider is set; private, hence the fallback
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _UNSET_METERS
except ImportError:  # pragma: no cover - a future API: then metrics are always recorded
    _UNSET_METERS = ()  # type: ignore[assignment, misc]

_UNKNOWN = object()
"""What the API's private globals read as if a future API renames them: then the public
(slower) look is taken on every check."""
_GLOBALS_KNOWN = (
    getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is not _UNKNOWN
    and getattr(_metrics_api, "_METER_PROVIDER", _UNKNOWN) is not _UNKNOWN
)
"""Whether the API keeps its global providers where :meth:`Telemetry.recording` reads them
(a module global each, None until one is set)."""
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TIMED_OUT = (StepTimeoutError, SagaDeadlineError)
_STARTED = (RecordTypes.STEP_STARTED, RecordTypes.COMPENSATION_STARTED)
_ENDED = {
    SagaStatuses.COMPLETED: "sagakit.sagas.completed",
    SagaStatuses.COMPENSATED: "sagakit.sagas.compensated",
    SagaStatuses.NEEDS_ATTENTION: "sagakit.sagas.needs_attention",
}


def format_traceparent(ctx: SpanContext) -> str:
    """``ctx`` as a W3C ``traceparent`` header value."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"


def parse_traceparent(text: object) -> SpanContext | None:
    """The remote span context a ``traceparent`` value names; None if it is not a valid one."""
    if not isinstance(text, str):
        return None
    match = _TRACEPARENT.fullmatch(text.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    context = SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16) & 1))
    return context if context.is_valid else None


def _parent(text: str | None) -> otel_context.Context | None:
    found = parse_traceparent(text)
    return None if found is None else trace.set_span_in_context(NonRecordingSpan(found))


class Telemetry:
    """sagakit's tracer, meter and instruments (one per process, or per :func:`configure`)."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._fixed_tracing = tracer_provider is not None
        self._fixed_metering = meter_provider is not None
        self._tracing = self._fixed_tracing
        self._metering = self._fixed_metering
        self._tracer_by_env = OTEL_PYTHON_TRACER_PROVIDER in os.environ
        self._meter_by_env = OTEL_PYTHON_METER_PROVIDER in os.environ
        self._fast_unset = _GLOBALS_KNOWN and not (self._tracer_by_env or self._meter_by_env)
        self.tracer = (
            trace.get_tracer(INSTRUMENTATION)
            if tracer_provider is None
            else tracer_provider.get_tracer(INSTRUMENTATION)
        )
        meter = (
            metrics.get_meter(INSTRUMENTATION)
            if meter_provider is None
            else meter_provider.get_meter(INSTRUMENTATION)
        )
        self.started = meter.create_counter(
            "sagakit.sagas.started", "{saga}", METRICS["sagakit.sagas.started"]
        )
        self.ended = {
            status: meter.create_counter(name, "{saga}", METRICS[name])
            for status, name in _ENDED.items()
        }
        self.step_duration = meter.create_histogram(
            "sagakit.step.duration", "s", METRICS["sagakit.step.duration"]
        )
        self.compensation_duration = meter.create_histogram(
            "sagakit.compensation.duration", "s", METRICS["sagakit.compensation.duration"]
        )
        self.retries = meter.create_counter("sagakit.retries", "{call}", METRICS["sagakit.retries"])
        self.active_drives = meter.create_up_down_counter(
            "sagakit.drives.active", "{drive}", METRICS["sagakit.drives.active"]
        )
        self.takeovers = meter.create_counter(
            "sagakit.lease.takeovers", "{call}", METRICS["sagakit.lease.takeovers"]
        )
        self.handled = meter.create_counter(
            "sagakit.events.handled", "{event}", METRICS["sagakit.events.handled"]
        )
        self.dead_letters = meter.create_counter(
            "sagakit.events.dead_letters", "{event}", METRICS["sagakit.events.dead_letters"]
        )
        self._attributes: dict[tuple[Any, ...], dict[str, Any]] = {}
        """Metric attributes, made once per saga (and step, role, outcome) and reused."""

    def recording(self) -> bool:
        """Whether anything is recorded: a tracer or a meter provider is configured.

        The engine asks once per saga, so with the API alone (no provider yet) this is one
        call reading two module globals; the public ``get_tracer_provider()`` looks the
        environment up on every call, which costs microseconds."""
        if self._tracing or self._metering:
            return True
        if (
            self._fast_unset
            and trace._TRACER_PROVIDER is None
            and _metrics_api._METER_PROVIDER is None
        ):
            return False
        return self.tracing() | self.metering()

    def tracing(self) -> bool:
        """Whether spans are recorded: a tracer provider is configured (set once, for good).

        Until one is, this runs once per drive: the API's global is read first, since
        ``get_tracer_provider()`` looks the environment up each time (microseconds)."""
        if not self._tracing:
            unset = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None
            if unset and not self._tracer_by_env:
                return False
            self._tracing = not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
        return self._tracing

    def metering(self) -> bool:
        """Whether metrics are recorded: a meter provider is configured."""
        if not self._metering:
            unset = getattr(_metrics_api, "_METER_PROVIDER", _UNKNOWN) is None
            if unset and not self._meter_by_env:
                return False
            self._metering = not isinstance(metrics.get_meter_provider(), _UNSET_METERS)
        return self._metering

    def saga_attributes(self, name: str, version: int) -> dict[str, Any]:
        key = (name, version)
        found = self._attributes.get(key)
        if found is None:
            found = self._attributes[key] = {"saga.name": name, "saga.version": version}
        return found

    def call_attributes(self, name: str, step: str, what: str) -> dict[str, Any]:
        """``what``: the outcome (durations) or the role (retries)."""
        key = (name, step, what)
        found = self._attributes.get(key)
        if found is None:
            label = "saga.role" if what in ("action", "compensation") else "saga.outcome"
            found = {"saga.name": name, "saga.step": step, label: what}
            self._attributes[key] = found
        return found

    # -- orchestration -------------------------------------------------------------------

    def start_trace(self, name: str, saga_id: str) -> str | None:
        """The ``traceparent`` a new instance keeps in its ``saga_started`` record: the
        caller's current span, or a ``saga.start`` root made for it; None if not tracing."""
        if not self.tracing():
            return None
        current = trace.get_current_span().get_span_context()
        if not current.is_valid:
            root = self.tracer.start_span(
                f"{START_SPAN} {name}", attributes={"saga.id": saga_id, "saga.name": name}
            )
            root.end()
            current = root.get_span_context()
            if not current.is_valid:
                return None
        return format_traceparent(current)

    def saga_started(self, name: str, version: int) -> None:
        if self.metering():
            self.started.add(1, self.saga_attributes(name, version))

    def saga_ended(self, state: SagaState) -> None:
        counter = self.ended.get(state.status)
        if counter is not None and self.metering():
            counter.add(1, self.saga_attributes(state.name, state.version))

    def takeover(self, state: SagaState) -> None:
        if self.metering():
            self.takeovers.add(1, self.saga_attributes(state.name, state.version))

    def drive(self, state: SagaState, resumed: bool) -> Drive | None:
        """A drive of ``state`` begins; None when neither traces nor metrics are recorded."""
        tracing = self.tracing()
        if not tracing and not self.metering():
            return None
        return Drive(self, state, tracing, resumed)

    # -- choreography --------------------------------------------------------------------

    def event_traceparent(self, event_type: str) -> str | None:
        """The ``traceparent`` an emitted event carries: the current span (a handler's,
        or the caller's), or a ``saga.publish`` root made for it; None if not tracing."""
        if not self.tracing():
            return None
        current = trace.get_current_span().get_span_context()
        if not current.is_valid:
            root = self.tracer.start_span(f"{PUBLISH_SPAN} {event_type}", kind=SpanKind.PRODUCER)
            root.end()
            current = root.get_span_context()
            if not current.is_valid:
                return None
        return format_traceparent(current)

    def handling(self, service: str, delivery: Delivery) -> Handling | None:
        """A service begins handling ``delivery``; None when nothing is recorded."""
        tracing = self.tracing()
        if not tracing and not self.metering():
            return None
        return Handling(self, service, delivery, tracing)


class Drive:
    """One drive: its span (when tracing), and the call in flight, timed."""

    __slots__ = (
        "_call",
        "_from",
        "_role",
        "_saga",
        "_span",
        "_started",
        "_step",
        "_tel",
        "_token",
        "traceparent",
    )

    def __init__(self, tel: Telemetry, state: SagaState, tracing: bool, resumed: bool) -> None:
        self._tel = tel
        self._from = state.status
        self._saga = tel.saga_attributes(state.name, state.version)
        self._call: Span | None = None
        self._token: object = None
        self._role = self._step = ""
        self._started = 0.0
        self._span: Span | None = None
        self.traceparent: str | None = None
        """The drive span's context, kept in the ``*_started`` records made in this drive,
        so that the next drive (after a crash or a hand-back) can link to it."""
        tel.active_drives.add(1, self._saga)
        if tracing:
            links = _previous_drive(state) if resumed else None
            self._span = span = tel.tracer.start_span(
                f"{DRIVE_SPAN} {state.name}",
                context=_parent(state.trace),
                links=links,
                attributes={
                    "saga.id": state.id,
                    "saga.name": state.name,
                    "saga.version": state.version,
                    "saga.resumed": resumed,
                },
            )
            own = span.get_span_context()
            if own.is_valid:
                self.traceparent = format_traceparent(own)

    def call(self, role: str, step: str, kind: str, attempt: int, key: str, saga_id: str) -> None:
        """A call (``role``: action or compensation) of ``step`` is about to be made."""
        tel = self._tel
        self._role, self._step = role, step
        name = self._saga["saga.name"]
        if attempt > 1:
            tel.retries.add(1, tel.call_attributes(name, step, role))
        drive = self._span
        if drive is not None:
            label = STEP_SPAN if role == "action" else COMPENSATION_SPAN
            span = tel.tracer.start_span(
                f"{label} {step}",
                context=trace.set_span_in_context(drive),
                attributes={
                    "saga.id": saga_id,
                    "saga.name": name,
                    "saga.version": self._saga["saga.version"],
                    "saga.step": step,
                    "saga.step.kind": kind,
                    "saga.role": role,
                    "saga.attempt": attempt,
                    "saga.idempotency_key": key,
                },
            )
            self._call = span
            self._token = otel_context.attach(trace.set_span_in_context(span))
        self._started = time.perf_counter()

    def ended(self, outcome: str) -> None:
        """The call succeeded (``"succeeded"``) or waits for a message (``"waiting"``)."""
        self._end(outcome, None, None)

    def failed(self, error: dict[str, str], exception: BaseException | None) -> None:
        """The call failed (or timed out), as ``error`` (an ``ErrorInfo``) says."""
        outcome = "timed_out" if isinstance(exception, _TIMED_OUT) else "failed"
        self._end(outcome, error["type"], error["message"])

    def _end(self, outcome: str, error_type: str | None, message: str | None) -> None:
        tel = self._tel
        seconds = time.perf_counter() - self._started
        histogram = tel.step_duration if self._role == "action" else tel.compensation_duration
        histogram.record(seconds, tel.call_attributes(self._saga["saga.name"], self._step, outcome))
        span = self._call
        if span is None:
            return
        self._call = None
        otel_context.detach(self._token)  # type: ignore[arg-type]
        span.set_attribute("saga.outcome", outcome)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, message))
        span.end()

    def finish(self, state: SagaState, error: BaseException | None = None) -> None:
        """The drive is over (``error``: what stopped it, if it did not end by itself)."""
        if self._call is not None:  # stopped mid-call (a lost lease, a cancel)
            self._end("failed", _type_name(error), str(error or "stopped mid-call"))
        self._tel.active_drives.add(-1, self._saga)
        status = state.status
        if status is not self._from:
            self._tel.saga_ended(state)
        span = self._span
        if span is not None:
            span.set_attribute("saga.status", status.value)
            if error is not None:
                span.set_attribute("error.type", _type_name(error))
                span.set_status(Status(StatusCode.ERROR, str(error)))
            elif status is SagaStatuses.NEEDS_ATTENTION:
                span.set_status(Status(StatusCode.ERROR, state.reason))
            span.end()


def _type_name(error: BaseException | None) -> str:
    """An exception's type as ``error.type`` names it (as the saga log names it too)."""
    kind = RuntimeError if error is None else type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _previous_drive(state: SagaState) -> list[Link] | None:
    """A link to the drive that made the latest call recorded, if its record names it."""
    for record in reversed(state.records):
        if record.type in _STARTED and record.data is not None and '"drive"' in record.data:
            data = decode(record.data)
            found = parse_traceparent(data.get("drive") if isinstance(data, dict) else None)
            if found is not None:
                return [Link(found, {"sagakit.link": "previous drive"})]
            return None
    return None


class Handling:
    """A choreographed service handling one delivery, in a span continuing the event's trace."""

    __slots__ = ("_delivery", "_service", "_span", "_tel", "_token")

    def __init__(self, tel: Telemetry, service: str, delivery: Delivery, tracing: bool) -> None:
        self._tel, self._service, self._delivery = tel, service, delivery
        self._span: Span | None = None
        self._token: object = None
        if tracing:
            event = delivery.event
            self._span = span = tel.tracer.start_span(
                f"{HANDLE_SPAN} {event.type}",
                context=_parent(event.traceparent),
                kind=SpanKind.CONSUMER,
                attributes={
                    "saga.id": event.correlation_id,
                    "sagakit.service": service,
                    "sagakit.event.type": event.type,
                    "sagakit.event.id": event.id,
                    "sagakit.delivery.attempt": delivery.attempt,
                    "messaging.destination.name": delivery.stream,
                    "messaging.message.id": event.id,
                },
            )
            self._token = otel_context.attach(trace.set_span_in_context(span))

    def ended(self, duplicate: bool) -> None:
        """The event was handled (or found handled before: ``duplicate``)."""
        tel = self._tel
        if not duplicate and tel.metering():
            event_type = self._delivery.event.type
            attributes = {"sagakit.service": self._service, "sagakit.event.type": event_type}
            tel.handled.add(1, attributes)
        span = self._span
        if span is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            span.set_attribute("sagakit.duplicate", duplicate)
            span.end()

    def failed(self, error: BaseException, last: bool) -> None:
        """The handler raised; ``last``: it was the last delivery allowed (dead-lettered)."""
        tel = self._tel
        if last and tel.metering():
            attributes = {
                "sagakit.service": self._service,
                "messaging.destination.name": self._delivery.stream,
            }
            tel.dead_letters.add(1, attributes)
        span = self._span
        if span is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            span.set_attribute("error.type", _type_name(error))
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.end()
