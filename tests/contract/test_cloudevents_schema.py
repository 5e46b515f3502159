"""The events sagakit's services really publish are CloudEvents, by sagakit's schema and the spec's.

The order demo's choreography runs on the in-memory broker (its four services, a tracker and
the demo's three orders); every message the broker carried, which is also every row of the
services' outboxes, is then validated twice: against the package's ``event.schema.json``
with ``jsonschema``, and against the official CloudEvents JSON schema, as the ``cloudevents``
npm package ships it, with Node.js (``tests/contract/cloudevents``; ``make test`` installs it
from its lock file). A deliberately broken event must fail both, so neither check can pass by
checking nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sagakit import MemoryStore, SagaStatus
from sagakit.bus import Event, MemoryBroker, event_schema
from sagakit.choreography import Service, Tracker
from sagakit.demo._choreographed import scenarios, seed
from sagakit.demo._choreography import (
    ORDER_CHOREOGRAPHY,
    SERVICES,
    STREAM,
    build_service,
    database_path,
    place_orders,
)
from sagakit.errors import MalformedEventError

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = Path(__file__).with_name("cloudevents")
WAIT = 30.0
"""Seconds the demo's orders may take to end."""


async def _ended(store: MemoryStore, saga_ids: list[str]) -> dict[str, SagaStatus]:
    """Each saga's status once all are terminal (watching the log, not sleeping)."""
    ended: dict[str, SagaStatus] = {}
    async with asyncio.timeout(WAIT):
        for saga_id in saga_ids:
            async with store.watch(saga_id) as change:
                while saga_id not in ended:
                    stored = await store.load(saga_id)
                    if stored is not None and stored.instance.status.is_terminal:
                        ended[saga_id] = stored.instance.status
                    else:
                        await change.wait(1.0)
    return ended


@contextlib.asynccontextmanager
async def _running(
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]], ready: asyncio.Event
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(run(stop))
    try:
        async with asyncio.timeout(WAIT):
            await ready.wait()
        yield
    finally:
        stop.set()
        await task


async def _run_the_demo(directory: Path) -> list[bytes]:
    """Run the demo's orders through its four services; what the broker carried."""
    seed(directory)
    broker, store = MemoryBroker(), MemoryStore()
    services: list[Service] = [
        build_service(name, directory, broker.sibling(), stream=STREAM) for name in SERVICES
    ]
    tracker = Tracker(store, broker.sibling(), [ORDER_CHOREOGRAPHY], streams=[STREAM])
    plan = scenarios("ce")
    try:
        async with contextlib.AsyncExitStack() as stack:
            runners: list[Tracker | Service] = [tracker, *services]
            for runner in runners:
                await stack.enter_async_context(_running(runner.run, runner.ready))
            await place_orders(services[0].db, [s.order for s in plan], stream=STREAM)
            services[0].relay.wake()
            ended = await _ended(store, [s.order["order_id"] for s in plan])
            assert ended == {s.order["order_id"]: s.expect for s in plan}
    finally:
        for service in services:
            await service.close()
    return list(broker.hub.stream(STREAM).log)


@pytest.fixture(scope="module")
def demo_events(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Every event of the demo's three orders, as the broker carried it."""
    directory = tmp_path_factory.mktemp("demo")
    carried = asyncio.run(_run_the_demo(directory))
    outboxes = []
    for name in SERVICES:
        with contextlib.closing(sqlite3.connect(database_path(directory, name))) as db:
            outboxes += [row[0].encode() for row in db.execute("SELECT event FROM sagakit_outbox")]
    assert sorted(carried) == sorted(outboxes)  # what the relays published, byte for byte
    return carried


def test_the_demo_publishes_every_kind_of_event_it_has(demo_events: list[bytes]) -> None:
    types = {Event.parse(raw).type for raw in demo_events}
    assert types == {
        "OrderCreated",
        "PaymentCompleted",
        "PaymentDeclined",
        "StockReserved",
        "StockReservationFailed",
        "PaymentRefunded",
        "OrderCancelled",
        "ShipmentCreated",
    }


# ------------------------------------------------------------------ sagakit's schema


def schema_errors(event: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        event_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [error.message for error in validator.iter_errors(event)]


def test_the_packaged_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(event_schema())
    assert event_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_demo_event_is_valid_by_sagakits_schema(demo_events: list[bytes]) -> None:
    for raw in demo_events:
        assert schema_errors(json.loads(raw)) == [], raw


@pytest.mark.parametrize(
    "changes",
    [
        {"specversion": ...},
        {"correlationid": ...},
        {"time": ...},
        {"id": ""},
        {"specversion": "0.3"},
        {"time": "2026-12-02 15:10:00Z"},
        {"time": 1796224200.5},
        {"datacontenttype": "text/plain"},
        {"data_base64": "AAE="},
        {"Tenant": "acme"},
        {"rank": 2**31},
        {"tenant": {"a": 1}},
    ],
)
def test_sagakits_schema_refuses_what_parse_refuses(
    demo_events: list[bytes], changes: dict[str, Any]
) -> None:
    event = {**json.loads(demo_events[0]), **changes}
    broken = {name: value for name, value in event.items() if value is not ...}
    assert schema_errors(broken), broken
    with pytest.raises(MalformedEventError):
        Event.parse(json.dumps(broken))


ACCEPTED_CONTENT_TYPES: list[str | None] = [
    "application/json",
    "application/json; charset=utf-8",
    'application/json;charset="UTF-8"',
    "application/cloudevents+json",
    "application/vnd.acme.order+json; version=2",
    "text/json",
    None,
]
REFUSED_CONTENT_TYPES: list[str | None] = [
    "text/plain",
    "application/jsonx",
    "application/json; charset=latin-1",
    'application/json; charset="utf-16"',
    "json",
    "",
]


@pytest.mark.parametrize("content_type", ACCEPTED_CONTENT_TYPES + REFUSED_CONTENT_TYPES)
def test_the_schema_and_parse_agree_on_content_types(
    demo_events: list[bytes], content_type: str | None
) -> None:
    event = {**json.loads(demo_events[0]), "datacontenttype": content_type}
    by_schema = not schema_errors(event)
    try:
        Event.parse(json.dumps(event))
    except MalformedEventError:
        by_parse = False
    else:
        by_parse = True
    assert by_schema == by_parse == (content_type in ACCEPTED_CONTENT_TYPES)


# ------------------------------------------------------------------ the official schema, in Node.js


def official_verdicts(lines: list[bytes]) -> list[dict[str, Any]]:
    """Each line's verdict from the CloudEvents SDK for JavaScript (validate.js)."""
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (apt-get install nodejs npm)"
    assert (VALIDATOR / "node_modules" / "cloudevents").is_dir(), (
        "run `make test`, or `npm ci --prefix tests/contract/cloudevents --ignore-scripts`"
    )
    done = subprocess.run(
        [node, str(VALIDATOR / "validate.js")],
        input=b"".join(line + b"\n" for line in lines),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    verdicts = [json.loads(line) for line in done.stdout.splitlines()]
    assert [v["line"] for v in verdicts] == list(range(1, len(lines) + 1))
    return verdicts


def test_the_validator_is_the_pinned_cloudevents_sdk() -> None:
    lock = json.loads((VALIDATOR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/cloudevents"]["version"] == "10.0.0"


def test_every_demo_event_is_valid_by_the_official_cloudevents_schema(
    demo_events: list[bytes],
) -> None:
    verdicts = official_verdicts(demo_events)
    invalid = [(v, raw) for v, raw in zip(verdicts, demo_events, strict=True) if not v["valid"]]
    assert invalid == []


def test_the_official_schema_finds_a_broken_event(demo_events: list[bytes]) -> None:
    event = json.loads(demo_events[0])
    no_specversion = {k: v for k, v in event.items() if k != "specversion"}
    bad_name = {**event, "Tenant": "acme"}
    lines = [demo_events[0], *(json.dumps(e).encode() for e in (no_specversion, bad_name))]
    good, missing, named = official_verdicts(lines)
    assert good == {"line": 1, "valid": True, "errors": []}
    assert not missing["valid"] and "specversion" in " ".join(missing["errors"])
    assert not named["valid"] and "Tenant" in " ".join(named["errors"])


def test_the_guides_wire_examples_are_valid_by_the_official_schema() -> None:
    examples = sorted((ROOT / "docs" / "examples" / "wire").glob("*.json"))
    events = [json.loads(path.read_text()) for path in examples]
    events = [e for e in events if "specversion" in e]  # not the dead letter
    assert len(events) >= 2
    verdicts = official_verdicts([json.dumps(e).encode() for e in events])
    assert all(v["valid"] for v in verdicts), verdicts
