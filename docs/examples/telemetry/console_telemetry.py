"""Traces and metrics of a saga, printed by the OpenTelemetry SDK's console exporters.

Needs ``sagakit[otel]`` and ``opentelemetry-sdk``. In a worker, the set-up goes in the app
module that ``sagakit worker --app`` imports; in a web app, at its start.
"""

import asyncio

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from sagakit import CompensationContext, Engine, MemoryStore, Saga, StepContext


def one_line(span: ReadableSpan) -> str:
    """A span as a line: its name, its outcome and the step's attempt."""
    attributes = span.attributes or {}
    outcome = attributes.get("saga.outcome", attributes.get("saga.status", ""))
    attempt = attributes.get("saga.attempt")
    line = f"span {span.name}" + (f": {outcome}" if outcome else "")
    return line + (f" (attempt {attempt})" if attempt else "") + "\n"


def counters(data: MetricsData) -> str:
    """The sagakit counters as ``name{saga} value`` lines, as Prometheus would show them."""
    lines = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if not metric.name.startswith("sagakit.sagas."):
                    continue
                for point in metric.data.data_points:
                    if not isinstance(point, NumberDataPoint):
                        continue
                    name = (point.attributes or {}).get("saga.name")
                    lines.append(f"metric {metric.name}{{saga.name={name}}} {point.value}\n")
    return "".join(lines)


# --8<-- [start:setup]
resource = Resource.create({"service.name": "shop-worker"})

tracer_provider = TracerProvider(resource=resource)  # production: BatchSpanProcessor + OTLP
tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
trace.set_tracer_provider(tracer_provider)

reader = PeriodicExportingMetricReader(ConsoleMetricExporter(formatter=counters))
meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
metrics.set_meter_provider(meter_provider)
# --8<-- [end:setup]

order = Saga("order", 1)


async def refund(ctx: CompensationContext) -> None:
    return None


@order.step(compensate=refund)
async def charge_payment(ctx: StepContext) -> dict[str, str]:
    return {"payment_id": "pay-1"}


@order.pivot()
async def create_shipment(ctx: StepContext) -> None:
    raise RuntimeError("no courier today")


async def main() -> None:
    engine = Engine(MemoryStore(), [order])
    tracer = trace.get_tracer("shop")
    with tracer.start_as_current_span("POST /orders"):  # the web request's span
        result = await engine.run(order, {"order_id": "o-1"})
    print(f"saga {result.status.value}")


asyncio.run(main())
tracer_provider.shutdown()
meter_provider.shutdown()  # exports the metrics one last time
