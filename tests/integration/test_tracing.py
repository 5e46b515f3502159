"""OpenTelemetry traces of sagas: one trace per instance, from the caller's span to every
step and compensation, in-process, across a real worker process, and across choreographed
services.

Spans are recorded with the SDK's in-memory exporter here, and, in the worker process, by
an exporter its app module configures that writes each finished span as a JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span

from sagakit import (
    Client,
    Engine,
    Event,
    MemoryBroker,
    MemoryStore,
    Retry,
    Saga,
    SagaStatus,
    Service,
    open_store,
    telemetry,
)
from sagakit.bus import open_broker
from sagakit.choreography import Transaction
from servers import REDIS

SAGAKIT = str(Path(sys.executable).with_name("sagakit"))
DEADLINE = 60

ORDER_SAGA = """
from sagakit import Retry, Saga

order = Saga("traced_order", 2)


async def refund_payment(ctx):
    return None


async def release_inventory(ctx):
    return None


@order.step(compensate=refund_payment, retry=Retry(attempts=3, backoff=0.001, jitter=0))
async def charge_payment(ctx):
    if ctx.attempt == 1:
        raise ConnectionError("payments hiccup")
    return {"payment_id": "p-1"}


@order.step(compensate=release_inventory)
async def reserve_inventory(ctx):
    return {"reservation": "r-1"}


@order.pivot(retry=Retry(attempts=1))
async def create_shipment(ctx):
    raise RuntimeError("no courier today")


sagas = [order]
"""

WORKER_APP = """
import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from order_saga import sagas


class JsonLines(SpanExporter):
    def export(self, spans):
        with open(os.environ["SPANS"], "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(json.loads(span.to_json())) + "\\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
trace.set_tracer_provider(provider)
"""

EXPECTED_CALLS = [
    ("saga.step charge_payment", 1, "failed"),
    ("saga.step charge_payment", 2, "succeeded"),
    ("saga.step reserve_inventory", 1, "succeeded"),
    ("saga.step create_shipment", 1, "failed"),
    ("saga.compensation reserve_inventory", 1, "succeeded"),
    ("saga.compensation charge_payment", 1, "succeeded"),
]
"""Every call of the compensated order, in the order it is made."""
KINDS = {
    "charge_payment": "compensatable",
    "reserve_inventory": "compensatable",
    "create_shipment": "pivot",
}


def order_saga() -> Saga:
    """The order saga, defined afresh from the same text the worker's app imports."""
    space: dict[str, Any] = {}
    exec(ORDER_SAGA, space)
    saga: Saga = space["order"]
    return saga


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """sagakit records to a provider of this test's own, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(tracer_provider=provider)
    try:
        yield exporter
    finally:
        telemetry.configure()  # the global providers again
        provider.shutdown()


def parent_span(name: str) -> Any:
    """A span of the caller's (an HTTP request's, say), made current."""
    provider = TracerProvider()
    return provider.get_tracer("the-web-app").start_as_current_span(name)


def check_calls(calls: list[dict[str, Any]], saga_id: str, drive_ids: set[str]) -> None:
    """The calls' spans (as dicts), in order, children of a drive, with every attribute."""
    made = [
        (c["name"], c["attributes"]["saga.attempt"], c["attributes"]["saga.outcome"]) for c in calls
    ]
    assert made == EXPECTED_CALLS
    for call in calls:
        attributes = call["attributes"]
        step = attributes["saga.step"]
        role = "action" if call["name"].startswith("saga.step") else "compensation"
        assert call["parent"] in drive_ids
        assert attributes["saga.id"] == saga_id
        assert attributes["saga.name"] == "traced_order"
        assert attributes["saga.version"] == 2
        assert attributes["saga.step.kind"] == KINDS[step]
        assert attributes["saga.idempotency_key"] == f"{saga_id}:{step}:{role}"
        if attributes["saga.outcome"] == "failed":
            assert call["status"] == "ERROR"
            assert attributes["error.type"] in ("ConnectionError", "RuntimeError")
        else:
            assert call["status"] == "UNSET"
            assert "error.type" not in attributes


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    """A finished span in the shape of the SDK's JSON (``ReadableSpan.to_json``)."""
    loaded: dict[str, Any] = json.loads(span.to_json())
    return loaded


def shaped(span: dict[str, Any]) -> dict[str, Any]:
    """The facts the checks read from a span's JSON."""
    return {
        "name": span["name"],
        "trace": span["context"]["trace_id"],
        "id": span["context"]["span_id"],
        "parent": span["parent_id"],
        "start": span["start_time"],
        "attributes": span["attributes"],
        "status": span["status"]["status_code"],
        "links": [link["context"]["span_id"] for link in span.get("links", [])],
    }


def trace_of(span: Span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"0x{context.trace_id:032x}", f"0x{context.span_id:016x}"


async def test_an_engine_run_in_a_span_is_one_trace_with_a_span_per_call(
    spans: InMemorySpanExporter,
) -> None:
    saga = order_saga()
    engine = Engine(MemoryStore(), [saga])
    with parent_span("POST /orders") as request:
        result = await engine.run(saga, {"order_id": "o-1"}, saga_id="s-in-process")
    assert result.status is SagaStatus.COMPENSATED
    trace_id, request_id = trace_of(request)

    finished = sorted((shaped(as_dict(s)) for s in spans.get_finished_spans()), key=_start)
    assert {s["trace"] for s in finished} == {trace_id}
    drives = [s for s in finished if s["name"] == "saga.drive traced_order"]
    assert len(drives) == 1
    drive = drives[0]
    assert drive["parent"] == request_id
    assert drive["attributes"]["saga.id"] == "s-in-process"
    assert drive["attributes"]["saga.status"] == "compensated"
    calls = [s for s in finished if s["name"].startswith(("saga.step", "saga.compensation"))]
    check_calls(calls, "s-in-process", {drive["id"]})
    stored = await engine.status("s-in-process")
    assert stored.trace == f"00-{trace_id[2:]}-{request_id[2:]}-03"


async def test_a_drive_resumed_after_an_operator_retry_links_to_the_drive_before(
    spans: InMemorySpanExporter,
) -> None:
    saga = Saga("notify", 1)
    down = [True]

    @saga.pivot()
    async def charge(ctx: Any) -> str:
        return "charged"

    @saga.retriable(retry=Retry(attempts=1))
    async def send_email(ctx: Any) -> str:
        if down[0]:
            raise ConnectionError("smtp down")
        return "sent"

    store = MemoryStore()
    engine = Engine(store, [saga])
    first = await engine.run(saga, saga_id="s-retried")
    assert first.status is SagaStatus.NEEDS_ATTENTION
    down[0] = False
    await Client(store, operator="ops").retry("s-retried", note="smtp is back")
    second = await engine.resume_saga("s-retried")
    assert second.status is SagaStatus.COMPLETED

    finished = sorted((shaped(as_dict(s)) for s in spans.get_finished_spans()), key=_start)
    drives = [s for s in finished if s["name"] == "saga.drive notify"]
    assert len(drives) == 2
    assert len({s["trace"] for s in finished}) == 1  # a saga.start root: one trace
    (root,) = [s for s in finished if s["name"] == "saga.start notify"]
    assert [d["parent"] for d in drives] == [root["id"], root["id"]]
    assert drives[0]["status"] == "ERROR"  # it ended needing attention
    assert drives[1]["links"] == [drives[0]["id"]]
    assert drives[1]["attributes"]["saga.resumed"] is True
    emails = [s for s in finished if s["name"] == "saga.step send_email"]
    assert [e["parent"] for e in emails] == [drives[0]["id"], drives[1]["id"]]
    assert [e["attributes"]["saga.outcome"] for e in emails] == ["failed", "succeeded"]


async def test_a_saga_started_in_a_request_and_run_by_a_worker_process_is_one_trace(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "order_saga.py").write_text(ORDER_SAGA)
    (app / "traced_app.py").write_text(WORKER_APP)
    exported = tmp_path / "spans.jsonl"
    url = f"sqlite:///{tmp_path / 'sagas.db'}"

    store = await open_store(url)
    try:
        client = Client(store)
        with parent_span("POST /orders") as request:
            saga_id = await client.start(order_saga(), {"order_id": "o-2"})
    finally:
        await store.close()
    trace_id, request_id = trace_of(request)

    worker = await asyncio.to_thread(
        subprocess.run,
        [SAGAKIT, "worker", "--once", "--app", "traced_app:sagas", "--db", url],
        cwd=app,
        env={**os.environ, "SPANS": str(exported)},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr

    lines = exported.read_text(encoding="utf-8").splitlines()
    finished = sorted((shaped(json.loads(line)) for line in lines), key=_start)
    assert {s["trace"] for s in finished} == {trace_id}  # the request's, end to end
    drives = [s for s in finished if s["name"] == "saga.drive traced_order"]
    assert [d["parent"] for d in drives] == [request_id]
    assert drives[0]["attributes"]["saga.status"] == "compensated"
    calls = [s for s in finished if s["name"].startswith(("saga.step", "saga.compensation"))]
    check_calls(calls, saga_id, {drives[0]["id"]})
    assert spans.get_finished_spans() == ()  # the client made no span: it used the request's


async def test_choreographed_services_continue_the_trace_of_the_first_event(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    broker = MemoryBroker()
    orders = Service("orders", tmp_path / "orders.db", broker, stream="shop", relay_poll=0.01)
    payments = Service("payments", tmp_path / "payments.db", broker, stream="shop", relay_poll=0.01)
    paid = asyncio.Event()

    @payments.on("OrderCreated")
    def charge(event: Event, tx: Transaction) -> None:
        tx.emit("PaymentCompleted", {"order_id": event.data["order_id"]})

    @orders.on("PaymentCompleted")
    def confirm(event: Event, tx: Transaction) -> None:
        paid.set()

    stop = asyncio.Event()
    running = [asyncio.create_task(s.run(stop)) for s in (orders, payments)]
    try:
        await asyncio.wait_for(asyncio.gather(orders.ready.wait(), payments.ready.wait()), DEADLINE)
        with parent_span("POST /orders") as request:
            created = await orders.publish("OrderCreated", {"order_id": "o-3"})
        await asyncio.wait_for(paid.wait(), DEADLINE)
    finally:
        stop.set()
        await asyncio.gather(*running)
        await orders.close()
        await payments.close()
    trace_id, request_id = trace_of(request)
    assert created.traceparent == f"00-{trace_id[2:]}-{request_id[2:]}-03"

    finished = sorted((shaped(as_dict(s)) for s in spans.get_finished_spans()), key=_start)
    assert {s["trace"] for s in finished} == {trace_id}
    handled = [(s["name"], s["attributes"]["sagakit.service"]) for s in finished]
    assert handled == [
        ("saga.handle OrderCreated", "payments"),
        ("saga.handle PaymentCompleted", "orders"),
    ]
    first, second = finished
    assert first["parent"] == request_id
    assert second["parent"] == first["id"]
    assert {s["attributes"]["saga.id"] for s in finished} == {created.correlation_id}


def test_an_event_round_trips_its_traceparent_and_is_read_without_one() -> None:
    traced = Event.new(
        "E", {"n": 1}, source="s", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    )
    assert Event.parse(traced.to_json()) == traced
    plain = Event.new("E", source="s")
    assert b"traceparent" not in plain.to_json()
    assert Event.parse(plain.to_json()).traceparent is None


def _start(span: dict[str, Any]) -> str:
    return str(span["start"])


SERVICE_PROCESS = """
import asyncio
import json
import os
import signal
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from sagakit import Service
from sagakit.bus import open_broker

NAME, STREAM, LISTENS, EMITS = sys.argv[1:5]


class JsonLines(SpanExporter):
    def export(self, spans):
        with open(f"{NAME}.spans.jsonl", "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(json.loads(span.to_json())) + "\\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
trace.set_tracer_provider(provider)


async def main():
    broker = await open_broker(os.environ["BROKER"])
    service = Service(NAME, f"{NAME}.db", broker, stream=STREAM, relay_poll=0.05)

    @service.on(LISTENS)
    def react(event, tx):
        tx.emit(EMITS, event.data)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    running = asyncio.create_task(service.run(stop))
    await service.ready.wait()
    print("ready", flush=True)
    await running
    await service.close()
    await broker.close()
    provider.shutdown()


asyncio.run(main())
"""


async def service_process(
    directory: Path, name: str, stream: str, listens: str, emits: str
) -> asyncio.subprocess.Process:
    """A choreographed service in a process of its own, once it says it is subscribed."""
    with (directory / f"{name}.err").open("wb") as err:  # the child keeps its own copy
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(directory / "service_process.py"),
            *(name, stream, listens, emits),
            cwd=directory,
            env={**os.environ, "BROKER": REDIS},
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
    assert line == b"ready\n", (directory / f"{name}.err").read_text()
    return process


@pytest.mark.redis
async def test_services_in_processes_on_redis_are_one_trace(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    (tmp_path / "service_process.py").write_text(SERVICE_PROCESS)
    stream = f"tracing-{uuid.uuid4().hex[:12]}"
    processes = [
        await service_process(tmp_path, "payments", stream, "OrderCreated", "PaymentCompleted"),
        await service_process(tmp_path, "shipping", stream, "PaymentCompleted", "ShipmentCreated"),
    ]
    broker = await open_broker(REDIS)
    orders = Service("orders", tmp_path / "orders.db", broker, stream=stream, relay_poll=0.05)
    shipped = asyncio.Event()

    @orders.on("ShipmentCreated")
    def done(event: Event, tx: Transaction) -> None:
        shipped.set()

    stop = asyncio.Event()
    running = asyncio.create_task(orders.run(stop))
    try:
        await asyncio.wait_for(orders.ready.wait(), DEADLINE)
        with parent_span("POST /orders") as request:
            created = await orders.publish("OrderCreated", {"order_id": "o-4"})
        await asyncio.wait_for(shipped.wait(), DEADLINE)
    finally:
        stop.set()
        await running
        await orders.close()
        for process in processes:
            if process.returncode is None:
                process.terminate()
            await asyncio.wait_for(process.wait(), DEADLINE)
        await broker.delete_stream(stream, ["orders", "payments", "shipping"])
        await broker.close()
    assert [p.returncode for p in processes] == [0, 0]
    trace_id, request_id = trace_of(request)

    def handled(service: str) -> dict[str, Any]:
        lines = (tmp_path / f"{service}.spans.jsonl").read_text().splitlines()
        (span,) = [shaped(json.loads(line)) for line in lines]
        return span

    payments, shipping = handled("payments"), handled("shipping")
    (last,) = [shaped(as_dict(s)) for s in spans.get_finished_spans()]
    chain = [payments, shipping, last]
    assert [s["name"] for s in chain] == [
        "saga.handle OrderCreated",
        "saga.handle PaymentCompleted",
        "saga.handle ShipmentCreated",
    ]
    assert {s["trace"] for s in chain} == {trace_id}  # one trace, across three processes
    assert [s["parent"] for s in chain] == [request_id, payments["id"], shipping["id"]]
    assert {s["attributes"]["saga.id"] for s in chain} == {created.correlation_id}
    assert {s["attributes"]["messaging.destination.name"] for s in chain} == {stream}


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "00-" + "0" * 32 + "-" + "2" * 16 + "-01",  # an all-zero trace id is invalid
        "00-" + "1" * 32 + "-" + "0" * 16 + "-01",
        "ff-" + "1" * 32 + "-" + "2" * 16 + "-01",  # version ff is forbidden
        "00-" + "1" * 32 + "-" + "2" * 16 + "-01-extra",  # version 00 has four parts
        "00-" + "A" * 32 + "-" + "2" * 16 + "-01",  # upper case is not W3C
        "00-" + "1" * 31 + "-" + "2" * 16 + "-01",
        42,
    ],
)
def test_a_traceparent_that_is_not_w3c_continues_nothing(text: object) -> None:
    from sagakit.telemetry._otel import parse_traceparent

    assert parse_traceparent(text) is None


def test_a_w3c_traceparent_round_trips() -> None:
    from sagakit.telemetry._otel import format_traceparent, parse_traceparent

    text = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    parsed = parse_traceparent(text)
    assert parsed is not None and parsed.is_remote and parsed.trace_flags.sampled
    assert format_traceparent(parsed) == text
    later = parse_traceparent("01-" + "ab" * 16 + "-" + "cd" * 8 + "-00-future")
    assert later is not None and not later.trace_flags.sampled


async def test_switched_off_nothing_is_recorded_or_kept(spans: InMemorySpanExporter) -> None:
    saga = order_saga()
    telemetry.disable()
    try:
        engine = Engine(MemoryStore(), [saga])
    finally:
        telemetry.enable()
    with parent_span("POST /orders"):
        result = await engine.run(saga, saga_id="s-off")
    assert result.status is SagaStatus.COMPENSATED
    assert spans.get_finished_spans() == ()
    assert (await engine.status("s-off")).trace is None
    assert telemetry.available()
