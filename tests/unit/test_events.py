"""The event envelope: building, encoding, and strict parsing that names what is wrong."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagakit.bus import Event
from sagakit.bus._event import FIELDS, SCHEMA_VERSION
from sagakit.errors import MalformedEventError


def wire(**changes: Any) -> bytes:
    """A valid event's JSON with some fields changed (``...`` removes one)."""
    obj = json.loads(Event.new("OrderCreated", {"order": 1}, source="orders").to_json())
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def test_new_starts_a_saga_when_nothing_caused_it() -> None:
    event = Event.new("OrderCreated", {"order": 1}, source="orders")
    assert event.correlation_id == event.id and event.causation_id is None
    assert (event.type, event.source, event.data) == ("OrderCreated", "orders", {"order": 1})
    assert event.schema_version == SCHEMA_VERSION and isinstance(event.time, float)


def test_new_joins_the_saga_of_its_cause() -> None:
    order = Event.new("OrderCreated", {"order": 1}, source="orders", correlation_id="saga-1")
    paid = Event.new("PaymentCompleted", None, source="payments", caused_by=order)
    stocked = Event.new("StockReserved", None, source="inventory", caused_by=paid)
    assert paid.correlation_id == stocked.correlation_id == "saga-1"
    assert (paid.causation_id, stocked.causation_id) == (order.id, paid.id)


def test_a_cause_from_another_saga_is_refused() -> None:
    order = Event.new("OrderCreated", source="orders", correlation_id="saga-1")
    with pytest.raises(MalformedEventError, match="differs from that of the event that caused"):
        Event.new("PaymentCompleted", source="payments", caused_by=order, correlation_id="other")


def test_ids_are_unique_and_ordered_by_time() -> None:
    ids = [Event.new("E", source="s").id for _ in range(500)]
    assert len(set(ids)) == len(ids)
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)


def test_to_json_is_compact_utf8_with_exactly_the_envelope_fields() -> None:
    event = Event.new("Ünïcode", {"text": "✓"}, source="s")
    data = event.to_json()
    assert isinstance(data, bytes) and b" " not in data and "✓".encode() in data
    assert tuple(json.loads(data)) == FIELDS


@pytest.mark.parametrize("form", [bytes, bytearray, lambda b: b.decode()])
def test_parse_round_trips_bytes_and_text(form: Any) -> None:
    event = Event.new("E", [1, 2.5, None, True, {"a": "b"}], source="s")
    assert Event.parse(form(event.to_json())) == event


def test_a_payload_that_is_not_json_is_malformed_when_encoded() -> None:
    with pytest.raises(MalformedEventError, match=r"event '\w+' \(E\): data is not JSON"):
        Event.new("E", {"when": object()}, source="s").to_json()
    with pytest.raises(MalformedEventError, match="data is not JSON"):
        Event.new("E", float("nan"), source="s").to_json()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "expected a JSON object, got array"),
        (b'"hello"', "expected a JSON object, got string"),
        (b"{}", "missing field(s) 'id', 'type'"),
        (wire(data=...), "missing field(s) 'data'"),
        (wire(extra=1), "unexpected field(s) 'extra'"),
        (b'{"id": "a", "id": "b"}', "duplicate key 'id'"),
        (wire(data={"x": float("nan")}), "NaN is not valid JSON"),
        (wire(schema_version=2), "schema_version 2 is not supported"),
        (wire(schema_version=2, extra=1), "schema_version 2 is not supported"),
        (wire(schema_version="1"), "field 'schema_version' must be an integer, got string"),
        (wire(schema_version=True), "field 'schema_version' must be an integer, got boolean"),
        (wire(id=5), "field 'id' must be a string, got number"),
        (wire(type=None), "field 'type' must be a string, got null"),
        (wire(correlation_id=""), "field 'correlation_id' must not be empty"),
        (wire(causation_id=["x"]), "field 'causation_id' must be a string, got array"),
        (wire(source={}), "field 'source' must be a string, got object"),
        (wire(time="now"), "field 'time' must be a number"),
        (wire(time=False), "field 'time' must be a number"),
        (wire(time=10**400), "field 'time' is out of range"),
    ],
)
def test_each_malformed_message_says_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(MalformedEventError) as info:
        Event.parse(data)
    assert message in str(info.value)


def test_a_wrong_field_names_the_event_it_belongs_to() -> None:
    with pytest.raises(MalformedEventError, match=r"event '\w+' \(OrderCreated\): field 'time'"):
        Event.parse(wire(time="now"))


def test_an_infinite_time_is_malformed() -> None:
    data = wire(time=1.5).replace(b'"time": 1.5', b'"time": 1e999')  # json reads inf
    with pytest.raises(MalformedEventError, match="field 'time' must be finite"):
        Event.parse(data)


def test_something_that_is_not_bytes_or_text_is_malformed() -> None:
    with pytest.raises(MalformedEventError, match="expected bytes or text"):
        Event.parse(5)  # type: ignore[arg-type]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
names = st.text(min_size=1, max_size=40)
events = st.builds(
    Event,
    id=names,
    type=names,
    correlation_id=names,
    causation_id=st.none() | names,
    source=names,
    time=st.floats(allow_nan=False, allow_infinity=False),
    schema_version=st.just(SCHEMA_VERSION),
    data=json_values,
)


@given(events)
def test_every_event_round_trips(event: Event) -> None:
    assert Event.parse(event.to_json()) == event


@given(st.binary() | st.text())
def test_parse_of_arbitrary_data_is_an_event_or_malformed(data: bytes | str) -> None:
    with contextlib.suppress(MalformedEventError):  # anything else fails the test
        Event.parse(data)


@given(st.dictionaries(st.sampled_from([*FIELDS, "other"]), json_values))
def test_parse_of_arbitrary_objects_never_raises_anything_else(obj: dict[str, Any]) -> None:
    try:
        event = Event.parse(json.dumps(obj))
    except MalformedEventError as exc:
        message = str(exc)
    else:
        message = ""
        assert event.schema_version == SCHEMA_VERSION
    assert message or set(obj) == set(FIELDS)
