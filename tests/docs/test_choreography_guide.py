"""What docs/choreography.md claims, checked against its examples and the code behind them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from doc_examples import EXAMPLES, ROOT, load
from sagakit import (
    Choreography,
    ChoreographyStep,
    Client,
    Event,
    MalformedEventError,
    MemoryBroker,
    MemoryStore,
    OperatorActionError,
    Relay,
    Retry,
    SagaDefinitionError,
    SagaState,
    SagaStatus,
    Service,
    Store,
    Tracker,
    Transaction,
    UnsupportedBrokerError,
    open_broker,
    open_store,
)
from sagakit.bus import Delivery

PAGE = ROOT / "docs" / "choreography.md"
HERE = EXAMPLES / "choreography"


def rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(query).fetchall()


async def state_of(store: Store, saga_id: str) -> SagaState:
    stored = await store.load(saga_id)
    assert stored is not None
    return SagaState.from_records(saga_id, stored.records)


async def until(condition: Any, what: str, within: float = 10.0) -> None:
    """Poll ``condition()`` (a test's own helper: the examples await events instead)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ the ticket sale


async def test_the_ticket_sale_ends_in_the_saga_log_and_in_every_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sale = load("choreography/ticket_sale.py")
    await sale.main()
    await sale.main()  # runs again in the same directory: it starts from nothing

    store = await open_store(f"sqlite:///{tmp_path / 'tickets.db'}", create=False)
    try:
        paid, declined = await state_of(store, "B-1001"), await state_of(store, "B-1002")
        listed = {i.id: i for i in await store.instances()}
    finally:
        await store.close()
    assert set(listed) == {"B-1001", "B-1002"}
    assert {i.name for i in listed.values()} == {"ticket_sale"}
    assert paid.status is SagaStatus.COMPLETED
    assert declined.status is SagaStatus.COMPENSATED
    # the start event's payload is the saga's input
    assert paid.input == sale.BOOKINGS[0]
    assert declined.input == sale.BOOKINGS[1]
    # each record names the event behind it, and the events chain by causation
    events = [json.loads(r.data) for r in declined.records if r.data and '"event_id"' in r.data]
    assert [e["event"] for e in events] == ["SeatHeld", "PaymentFailed", "SeatReleased"]
    assert [e["source"] for e in events] == ["seats", "payments", "seats"]
    assert events[0]["causation_id"] is None
    assert events[1]["causation_id"] == events[0]["event_id"]
    assert events[2]["causation_id"] == events[1]["event_id"]
    types = [r.type.value for r in declined.records]
    assert types == [
        "saga_started",
        "step_started",
        "step_succeeded",
        "step_started",
        "step_failed",
        "saga_compensating",
        "compensation_started",
        "compensation_succeeded",
        "saga_compensated",
    ]
    # every outbox row was published and marked sent; every inbox holds what it handled
    for name in ("seats", "payments", "tickets_issued"):
        unsent = rows(
            tmp_path / f"{name}.db", "SELECT id FROM sagakit_outbox WHERE sent_at IS NULL"
        )
        assert unsent == []
    handled = rows(tmp_path / "payments.db", "SELECT consumer FROM sagakit_inbox")
    assert handled == [("payments",), ("payments",)]  # the two SeatHeld events


async def test_the_tracker_holds_its_sagas_until_they_end() -> None:
    sale = load("choreography/ticket_sale.py")
    store = MemoryStore()
    tracker = Tracker(store, MemoryBroker(), [sale.TICKET_SALE])
    held = Event.new("SeatHeld", {"booking_id": "L"}, source="seats", correlation_id="L")
    await tracker.track(held)
    stored = await store.load("L")
    assert stored is not None
    assert stored.instance.lease_owner == "sagakit-tracker"
    assert stored.instance.lease_expires is not None
    assert stored.instance.lease_expires > time.time() + 3600 * 24 * 365 * 1000
    # orchestration workers never claim it: it is not theirs, and it is held
    assert await store.claim("worker", 10, 30.0, due_only=False, known={"ticket_sale@1"}) == []


def test_the_sale_prints_what_its_out_file_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    asyncio.run(load("choreography/ticket_sale.py").main())
    assert capsys.readouterr().out == (HERE / "ticket_sale.out").read_text()


async def test_a_payload_that_is_not_json_fails_at_emit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sale = load("choreography/ticket_sale.py")
    seats = sale.seat_service(MemoryBroker())
    with pytest.raises(MalformedEventError, match="not JSON"):
        async with seats.transaction() as tx:
            tx.emit("SeatHeld", {"when": object()})
    assert await seats.db.backlog() == 0  # the transaction rolled back
    await seats.close()


async def test_types_without_a_handler_are_acknowledged_and_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sale = load("choreography/ticket_sale.py")
    payments = sale.payment_service(MemoryBroker())
    other = Event.new("SomethingElse", {}, source="x")
    await payments.handle(Delivery(other, 1, other.to_json(), sale.STREAM, "payments"))
    assert (payments.handled, payments.duplicates) == (0, 0)
    assert rows(tmp_path / "payments.db", "SELECT * FROM sagakit_inbox") == []
    await payments.close()


# ------------------------------------------------------------------ the envelope


def test_the_envelope_has_the_fields_the_page_lists() -> None:
    table = PAGE.read_text().split("## The event envelope", 1)[1].split("Build events", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (?:`(\w+)`|\(each its own\)) \|", table, flags=re.MULTILINE)
    assert [python for python, _ in rows] == [f.name for f in dataclasses.fields(Event)]
    event = Event.new("SeatHeld", {"a": 1}, source="seats")
    assert re.fullmatch(r"[0-9a-f]{32}", event.id)
    assert event.correlation_id == event.id and event.causation_id is None
    assert isinstance(event.time, float) and dict(event.extensions) == {}
    paid = Event.new(
        "Paid",
        5,
        source="pay",
        caused_by=event,
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )
    paid = dataclasses.replace(paid, extensions={"tenant": "acme"})
    wire = json.loads(paid.to_json())
    on_wire = {python: name for python, name in rows if name}
    assert set(wire) == {*on_wire.values(), "specversion", "datacontenttype", "tenant"}
    rfc3339 = datetime.fromtimestamp(paid.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for python, name in on_wire.items():
        assert wire[name] == (rfc3339 if python == "time" else getattr(paid, python)), name
    assert Event.parse(paid.to_json()) == paid
    assert wire["tenant"] == "acme" and wire["specversion"] == "1.0"


@pytest.mark.parametrize(
    "change",
    [
        lambda w: w.pop("source"),
        lambda w: w.pop("correlationid"),
        lambda w: w.update(Extra=1),
        lambda w: w.update(specversion="2.0"),
        lambda w: w.update(time=1796224200.5),
        lambda w: w.update(data_base64="AAE="),
    ],
    ids=["missing", "no-saga", "bad-name", "other-specversion", "epoch-time", "binary"],
)
def test_parsing_is_strict(change: Any) -> None:
    wire = json.loads(Event.new("SeatHeld", None, source="seats").to_json())
    change(wire)
    with pytest.raises(MalformedEventError):
        Event.parse(json.dumps(wire))
    with pytest.raises(MalformedEventError, match="duplicate key"):
        Event.parse('{"id": "a", "id": "b"}')
    with pytest.raises(MalformedEventError):
        Event.parse('{"payload": NaN}')


def test_parsing_keeps_extensions_it_does_not_know() -> None:
    wire = {**json.loads(Event.new("SeatHeld", None, source="seats").to_json()), "extra": 1}
    assert dict(Event.parse(json.dumps(wire)).extensions) == {"extra": 1}


# ------------------------------------------------------------------ inbox and outbox


async def test_the_inbox_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await load("choreography/inbox_dedup.py").main()
    assert rows(tmp_path / "payments.db", "SELECT count(*) FROM charges") == [(1,)]


async def test_an_event_published_twice_through_the_broker_is_charged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sale = load("choreography/ticket_sale.py")
    broker = MemoryBroker()
    payments = sale.payment_service(broker)
    stop = asyncio.Event()
    running = asyncio.create_task(payments.run(stop))
    await payments.ready.wait()
    booking = {"booking_id": "B-9", "seat": "Z1", "card": "tok_visa", "cents": 100}
    held = Event.new("SeatHeld", booking, source="seats", correlation_id="B-9")
    await broker.publish(sale.STREAM, held)
    await broker.publish(sale.STREAM, held)  # as a relay that crashed before marking it sent
    await until(lambda: payments.handled + payments.duplicates == 2, "two deliveries")
    stop.set()
    await running
    assert (payments.handled, payments.duplicates) == (1, 1)
    assert rows(tmp_path / "payments.db", "SELECT booking_id FROM charges") == [("B-9",)]
    await payments.close()
    await broker.close()


async def test_the_outbox_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await load("choreography/outbox_ordering.py").main()
    sent = rows(tmp_path / "seats.db", "SELECT count(*) FROM sagakit_outbox WHERE sent_at > 0")
    assert sent == [(5,)]  # kept as a record of what was published


async def test_sent_rows_are_pruned_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sale = load("choreography/ticket_sale.py")
    seats = sale.seat_service(MemoryBroker())
    await seats.publish("SeatHeld", {"booking_id": "P"}, correlation_id="P")
    await seats.relay.publish_pending()
    assert await seats.db.prune(time.time() + 1) == 1
    assert rows(tmp_path / "seats.db", "SELECT count(*) FROM sagakit_outbox") == [(0,)]
    await seats.close()


class CountingBroker(MemoryBroker):
    """Closed from the start, counting the publishes tried on it."""

    tries = 0

    async def publish(self, stream: str, event: Event) -> None:
        self.tries += 1
        await super().publish(stream, event)


async def test_a_relay_backs_off_while_the_broker_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sale = load("choreography/ticket_sale.py")
    down = CountingBroker()
    await down.close()
    seats = sale.seat_service(down)
    await seats.publish("SeatHeld", {"booking_id": "Q"}, correlation_id="Q")
    relay = Relay(seats.db, down, retry=Retry(attempts=None, backoff=0.05, jitter=0))
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    await until(lambda: down.tries >= 2, "a second try")
    await asyncio.sleep(0.3)  # a spinning relay would try thousands of times meanwhile
    stop.set()
    await running
    assert 2 <= down.tries <= 6  # 0.05 s, 0.1 s, 0.2 s, ... between passes
    assert await seats.db.backlog() == 1  # and the event is still there
    await seats.close()


async def test_each_service_orders_its_own_outbox_only_per_saga(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay publishes different sagas' chains concurrently: within a saga, in order."""
    monkeypatch.chdir(tmp_path)
    sale = load("choreography/ticket_sale.py")
    broker = MemoryBroker()
    seats = sale.seat_service(broker)
    heard: list[Event] = []

    async def audit(delivery: Delivery) -> None:
        heard.append(delivery.event)

    await broker.subscribe(sale.STREAM, "audit", audit)
    for n in range(20):
        saga = f"S{n % 4}"
        await seats.publish("Step", {"n": n}, correlation_id=saga)
    result = await seats.relay.publish_pending()
    assert result.sent == 20
    await until(lambda: len(heard) == 20, "20 events")
    for saga in ("S0", "S1", "S2", "S3"):
        ns = [e.data["n"] for e in heard if e.correlation_id == saga]
        assert ns == sorted(ns)
    await seats.close()
    await broker.close()


async def test_an_event_the_broker_refuses_holds_up_the_other_sagas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's behaviour, as the page says: no outbox dead letter, and after the first failed
    pass the relay probes with the oldest saga, so the others wait. (Reported: DESIGN.md
    wants such a row dead-lettered without blocking anyone.)"""
    monkeypatch.chdir(tmp_path)

    class Picky(MemoryBroker):
        async def publish(self, stream: str, event: Event) -> None:
            if event.type == "TooBig":
                raise ValueError("message too large")
            await super().publish(stream, event)

    sale = load("choreography/ticket_sale.py")
    broker = Picky()
    seats = sale.seat_service(broker)
    await seats.publish("TooBig", {}, correlation_id="A")
    assert (await seats.relay.publish_pending()).sent == 0
    await seats.publish("SeatHeld", {}, correlation_id="B")
    for _ in range(3):
        outcome = await seats.relay.publish_pending()
        assert outcome.sent == 0
        assert outcome.failed is not None and outcome.failed.event.type == "TooBig"
    assert await seats.db.backlog() == 2
    await seats.close()


# ------------------------------------------------------------------ brokers and definitions


async def test_broker_urls() -> None:
    broker = await open_broker("memory://")
    assert isinstance(broker, MemoryBroker)
    await broker.close()
    with pytest.raises(UnsupportedBrokerError):
        await open_broker("kafka://127.0.0.1:9092")


def test_choreography_mistakes_fail_when_declared() -> None:
    sale = load("choreography/ticket_sale.py")
    steps = list(sale.TICKET_SALE.steps)
    twice = [*steps, ChoreographyStep("again", succeeded="SeatHeld")]
    with pytest.raises(SagaDefinitionError, match="declared twice"):
        Choreography("x", steps=twice, starts="SeatHeld", completes="TicketIssued")
    with pytest.raises(SagaDefinitionError, match="not events of a step"):
        Choreography("x", steps=steps, starts="SeatHeld", completes="Nope")
    with pytest.raises(SagaDefinitionError, match="never compensated"):
        Choreography(
            "x",
            steps=[ChoreographyStep("p", succeeded="A", compensated="B", kind="pivot")],
            starts="A",
            completes="A",
        )


# ------------------------------------------------------------------ the tracker


async def test_the_late_event_example() -> None:
    await load("choreography/late_event.py").main()


async def test_a_saga_first_heard_of_through_a_later_event() -> None:
    sale = load("choreography/ticket_sale.py")
    store = MemoryStore()
    tracker = Tracker(store, MemoryBroker(), [sale.TICKET_SALE])
    held = Event.new("SeatHeld", {"booking_id": "O"}, source="seats", correlation_id="O")
    failed = Event.new("PaymentFailed", {"reason": "declined"}, source="payments", caused_by=held)
    released = Event.new("SeatReleased", {}, source="seats", caused_by=failed)
    assert await tracker.track(failed)  # overtook the SeatHeld that caused it
    assert (await state_of(store, "O")).input is None
    assert await tracker.track(held)
    assert await tracker.track(released)
    state = await state_of(store, "O")
    assert state.status is SagaStatus.COMPENSATED
    assert state.input is None  # unknown, and it stays so
    ignored = Event.new("NotDeclared", {}, source="x", correlation_id="O")
    assert not await tracker.track(ignored)


async def test_a_saga_stuck_while_compensating_names_what_is_not_undone() -> None:
    sale = load("choreography/ticket_sale.py")
    store = MemoryStore()
    tracker = Tracker(store, MemoryBroker(), [sale.TICKET_SALE])
    assert tracker.check_every == 15.0  # a quarter of max_gap
    held = Event.new("SeatHeld", {}, source="seats", correlation_id="C")
    failed = Event.new("PaymentFailed", {"reason": "declined"}, source="payments", caused_by=held)
    await tracker.track(held)
    await tracker.track(failed)
    assert (await state_of(store, "C")).status is SagaStatus.COMPENSATING
    assert await tracker.check_stuck(now=time.time() + 61) == ["C"]
    state = await state_of(store, "C")
    assert state.status is SagaStatus.NEEDS_ATTENTION
    assert state.reason is not None and state.reason.endswith("waiting for SeatReleased")
    stuck = json.loads(state.records[-1].data or "{}")
    assert stuck["failed"] == ["hold_seat"]
    # the late undo still ends it
    released = Event.new("SeatReleased", {}, source="seats", caused_by=failed)
    await tracker.track(released)
    assert (await state_of(store, "C")).status is SagaStatus.COMPENSATED


async def test_resolve_works_on_a_choreographed_saga_and_worker_actions_are_refused() -> None:
    sale = load("choreography/ticket_sale.py")
    store = MemoryStore()
    tracker = Tracker(store, MemoryBroker(), [sale.TICKET_SALE])
    await tracker.track(Event.new("SeatHeld", {}, source="seats", correlation_id="R"))
    client = Client(store, operator="test")
    for running in (client.cancel("R"), client.signal("R", "go")):
        with pytest.raises(OperatorActionError, match="choreographed saga"):
            await running
    await tracker.check_stuck(now=time.time() + 3600)
    before = (await state_of(store, "R")).records
    stuck = (client.retry("R"), client.skip("R", "hold_seat", result={}, note="by hand"))
    for refused in stuck:
        with pytest.raises(OperatorActionError, match="choreographed saga"):
            await refused
    assert (await state_of(store, "R")).records == before
    await client.resolve("R", note="refunded by hand")
    assert (await state_of(store, "R")).status is SagaStatus.COMPLETED


# ------------------------------------------------------------------ what can go wrong


async def test_the_poison_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await load("choreography/poison_event.py").main()


async def test_a_handler_that_fails_twice_then_works_has_one_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    broker = MemoryBroker()
    tickets = Service(
        "tickets", "t.db", broker, schema="CREATE TABLE IF NOT EXISTS tickets (b TEXT);"
    )
    seen: list[int] = []

    @tickets.on("PaymentTaken")
    def issue(event: Event, tx: Transaction) -> None:
        tx.db.execute("INSERT INTO tickets VALUES ('x')")
        tx.emit("TicketIssued", {})
        seen.append(1)
        if len(seen) < 3:
            raise RuntimeError("jammed")

    stop = asyncio.Event()
    running = asyncio.create_task(tickets.run(stop))
    await tickets.ready.wait()
    await broker.publish("events", Event.new("PaymentTaken", {}, source="payments"))
    await until(lambda: tickets.handled == 1, "the third attempt")
    stop.set()
    await running
    assert len(seen) == 3
    assert rows(tmp_path / "t.db", "SELECT count(*) FROM tickets") == [(1,)]
    events = rows(tmp_path / "t.db", "SELECT event FROM sagakit_outbox")
    assert [Event.parse(e).type for (e,) in events] == ["TicketIssued"]
    assert await broker.dead_letters("events") == []
    await tickets.close()
    await broker.close()


async def test_a_dead_letter_replayed_is_handled_only_by_the_group_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    broker = MemoryBroker()
    fixed = asyncio.Event()
    calls = {"ok": 0, "flaky": 0}
    ok = Service("ok", "ok.db", broker, max_attempts=2)
    flaky = Service("flaky", "flaky.db", broker, max_attempts=2)

    @ok.on("Happened")
    def fine(event: Event, tx: Transaction) -> None:
        calls["ok"] += 1

    @flaky.on("Happened")
    def breaks(event: Event, tx: Transaction) -> None:
        calls["flaky"] += 1
        if not fixed.is_set():
            raise RuntimeError("bug")

    stop = asyncio.Event()
    running = [asyncio.create_task(s.run(stop)) for s in (ok, flaky)]
    await asyncio.gather(ok.ready.wait(), flaky.ready.wait())
    event = Event.new("Happened", {}, source="x")
    await broker.publish("events", event)
    await until(lambda: calls["flaky"] == 2 and calls["ok"] == 1, "both groups")
    await until(lambda: bool(broker.hub.stream("events").dead), "the dead letter")
    [letter] = await broker.dead_letters("events")
    assert (letter.group, letter.attempts, letter.event) == ("flaky", 2, event)
    fixed.set()
    assert letter.event is not None
    await broker.publish("events", letter.event)  # the replay: same event, same id
    await until(lambda: flaky.handled == 1 and ok.duplicates == 1, "the replay")
    stop.set()
    await asyncio.gather(*running)
    assert calls == {"ok": 1, "flaky": 3}
    for service in (ok, flaky):
        await service.close()
    await broker.close()


async def test_a_malformed_message_is_dead_lettered_on_its_first_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    broker = MemoryBroker()
    service = Service("s", "s.db", broker)

    @service.on("Happened")
    def nothing(event: Event, tx: Transaction) -> None:
        return None

    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    await service.ready.wait()
    broker.hub.append("events", b"not json")
    await until(lambda: bool(broker.hub.stream("events").dead), "the dead letter")
    stop.set()
    await running
    [letter] = await broker.dead_letters("events")
    assert letter.attempts == 1 and letter.event is None and "malformed" in letter.error
    await service.close()


async def test_the_service_down_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await load("choreography/service_down.py").main()


async def test_a_group_that_never_subscribed_misses_what_came_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    broker = MemoryBroker()
    await broker.publish("events", Event.new("Early", {}, source="x"))
    late = Service("late", "late.db", broker)
    seen: list[str] = []

    @late.on("Early")
    def early(event: Event, tx: Transaction) -> None:
        seen.append(event.type)

    @late.on("Later")
    def later(event: Event, tx: Transaction) -> None:
        seen.append(event.type)

    stop = asyncio.Event()
    running = asyncio.create_task(late.run(stop))
    await late.ready.wait()
    await broker.publish("events", Event.new("Later", {}, source="x"))
    await until(lambda: bool(seen), "the later event")
    stop.set()
    await running
    assert seen == ["Later"]
    await late.close()


# ------------------------------------------------------------------ processes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    return {**env, **extra}


def _copy(tmp_path: Path) -> Path:
    here = tmp_path / "choreography"
    here.mkdir()
    for source in HERE.glob("*.py"):
        (here / source.name).write_text(source.read_text())
    return here


def test_a_service_process_without_a_broker_url_checks_its_wiring(tmp_path: Path) -> None:
    here = _copy(tmp_path)
    done = subprocess.run(
        [sys.executable, "ticket_service_process.py", "seats"],
        cwd=here,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ready seats\nstopped seats after handling 0 event(s)\n"
    assert (here / "seats.db").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_service_process_stops_cleanly_on_a_signal(tmp_path: Path, signum: int) -> None:
    here = _copy(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "ticket_service_process.py", "payments"],
        cwd=here,
        env=_env(SAGAKIT_BROKER="memory://"),  # given: it stays up until told to stop
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready payments\n"
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out == "stopped payments after handling 0 event(s)\n"


def test_the_demo_processes_take_the_url_from_the_environment() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sagakit.demo.processes", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 0
    assert "SAGAKIT_BROKER" in done.stdout
    for service in ("orders", "payments", "inventory", "shipping"):
        assert service in done.stdout


# ------------------------------------------------------------------ the page


def included(page: Path) -> set[str]:
    return set(re.findall(r'--8<-- "docs/examples/([^":]+)', page.read_text()))


def test_the_page_shows_every_example_of_its_directory() -> None:
    shown = included(PAGE)
    mine = {f"choreography/{p.name}" for p in HERE.iterdir() if p.suffix in {".py", ".sh"}}
    assert mine - shown == set()


def test_the_page_links_the_flavour_choice() -> None:
    assert "(choosing.md)" in PAGE.read_text()
