"""The event envelope: building, CloudEvents JSON, and strict parsing that names what is wrong."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import json_values

from sagakit.bus import Event, event_schema
from sagakit.bus._event import ATTRIBUTES, END_TIME, MIN_TIME
from sagakit.errors import MalformedEventError

TRACEPARENT = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
WIRE_ORDER = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "correlationid",
    "causationid",
    "traceparent",
]


def wire(**changes: Any) -> bytes:
    """A valid event's JSON with some attributes changed (``...`` removes one)."""
    obj = json.loads(Event.new("OrderCreated", {"order": 1}, source="orders").to_json())
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def test_new_starts_a_saga_when_nothing_caused_it() -> None:
    event = Event.new("OrderCreated", {"order": 1}, source="orders")
    assert event.correlation_id == event.id and event.causation_id is None
    assert (event.type, event.source, event.data) == ("OrderCreated", "orders", {"order": 1})
    assert isinstance(event.time, float) and dict(event.extensions) == {}


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


def test_new_keeps_time_to_whole_microseconds_so_it_round_trips() -> None:
    for _ in range(200):
        event = Event.new("E", source="s")
        micros = round(event.time * 1_000_000)
        assert event.time == micros / 1_000_000
        assert Event.parse(event.to_json()) == event


def test_a_time_given_finer_than_a_microsecond_is_rounded_to_one() -> None:
    event = dataclasses.replace(Event.new("E", source="s"), time=1796224200.1234567)
    assert event.time == 1796224200.123457
    assert json.loads(event.to_json())["time"] == "2026-12-02T15:10:00.123457Z"


# ------------------------------------------------------------------ writing


def test_to_json_is_compact_utf8_cloudevents_in_wire_order() -> None:
    cause = Event.new("Paid", source="payments")
    event = Event.new(
        "Ünïcode", {"text": "✓"}, source="s", caused_by=cause, traceparent=TRACEPARENT
    )
    data = event.to_json()
    assert isinstance(data, bytes) and b" " not in data and "✓".encode() in data
    obj = json.loads(data)
    assert list(obj) == [*WIRE_ORDER, "data"]
    assert obj["specversion"] == "1.0" and obj["datacontenttype"] == "application/json"
    assert (obj["correlationid"], obj["causationid"]) == (cause.id, cause.id)
    assert obj["traceparent"] == TRACEPARENT and obj["data"] == {"text": "✓"}


def test_optional_extensions_are_left_out_when_none_and_data_is_always_written() -> None:
    obj = json.loads(Event.new("E", source="s").to_json())
    assert list(obj) == [n for n in WIRE_ORDER if n not in ("causationid", "traceparent")] + [
        "data"
    ]
    assert obj["data"] is None


def test_time_is_written_as_rfc3339_utc_with_microseconds() -> None:
    event = Event.new("E", source="s")
    for seconds, written in [
        (1796224200.123456, "2026-12-02T15:10:00.123456Z"),
        (-14182940.0, "1969-07-20T20:17:40.000000Z"),
        (-0.000001, "1969-12-31T23:59:59.999999Z"),
        (MIN_TIME, "0001-01-01T00:00:00.000000Z"),
        (END_TIME - 1, "9999-12-31T23:59:59.000000Z"),
    ]:
        assert json.loads(dataclasses.replace(event, time=seconds).to_json())["time"] == written


def test_extensions_are_written_after_sagakits_own_and_before_data() -> None:
    event = dataclasses.replace(
        Event.new("E", [1], source="s"), extensions={"tenant": "acme", "rank": 3, "vip": False}
    )
    obj = json.loads(event.to_json())
    assert list(obj)[-4:] == ["tenant", "rank", "vip", "data"]
    assert (obj["tenant"], obj["rank"], obj["vip"]) == ("acme", 3, False)


@pytest.mark.parametrize("form", [bytes, bytearray, lambda b: b.decode()])
def test_parse_round_trips_bytes_and_text(form: Any) -> None:
    event = Event.new("E", [1, 2.5, None, True, {"a": "b"}], source="s", traceparent=TRACEPARENT)
    assert Event.parse(form(event.to_json())) == event


def test_a_payload_that_is_not_json_is_malformed_when_encoded() -> None:
    with pytest.raises(MalformedEventError, match=r"event '\w+' \(E\): data is not JSON"):
        Event.new("E", {"when": object()}, source="s").to_json()
    with pytest.raises(MalformedEventError, match="data is not JSON"):
        Event.new("E", float("nan"), source="s").to_json()
    with pytest.raises(MalformedEventError, match="not encodable as UTF-8"):
        Event.new("E", "\ud800", source="s").to_json()


# ------------------------------------------------------------------ building


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ""}, "field 'id' must not be empty"),
        ({"correlation_id": 5}, "field 'correlation_id' must be a string, got number"),
        ({"causation_id": ""}, "field 'causation_id' must not be empty"),
        ({"time": "now"}, "field 'time' must be a number"),
        ({"time": float("inf")}, "field 'time' must be finite"),
        ({"time": 10**400}, "field 'time' is out of range"),
        ({"time": END_TIME}, "field 'time' is out of range: years 0001 to 9999"),
        ({"time": MIN_TIME - 1}, "field 'time' is out of range"),
        ({"extensions": ["x"]}, "field 'extensions' must be a mapping"),
        ({"extensions": {"Tenant": "x"}}, "attribute name 'Tenant' is not a CloudEvents name"),
        ({"extensions": {"a" * 21: "x"}}, "at most 20 characters"),
        ({"extensions": {"correlationid": "x"}}, "'correlationid' is an attribute sagakit sets"),
        ({"extensions": {"n": 1.5}}, "must be a string, integer or boolean, got number"),
        ({"extensions": {"n": 2**31}}, "outside CloudEvents' 32-bit Integer"),
        ({"extensions": {"subject": ""}}, "attribute 'subject' must not be empty"),
    ],
)
def test_an_event_built_wrongly_says_which_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedEventError) as info:
        dataclasses.replace(Event.new("E", source="s"), **changes)
    assert message in str(info.value)


def test_extensions_are_a_read_only_copy() -> None:
    given_extensions = {"tenant": "acme"}
    event = dataclasses.replace(Event.new("E", source="s"), extensions=given_extensions)
    given_extensions["tenant"] = "other"
    assert event.extensions["tenant"] == "acme"
    with pytest.raises(TypeError):
        event.extensions["tenant"] = "x"  # type: ignore[index]


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "expected a JSON object, got array"),
        (b'"hello"', "expected a JSON object, got string"),
        (b"{}", "missing required attribute 'specversion'"),
        (wire(specversion=...), "missing required attribute 'specversion'"),
        (wire(specversion=None), "missing required attribute 'specversion'"),
        (b'{"specversion": "1.0"}', "missing required attribute(s) 'id', 'source', 'type'"),
        (wire(time=...), "missing required attribute(s) 'time'"),
        (wire(correlationid=None), "missing required attribute(s) 'correlationid'"),
        (wire(specversion="0.3"), "specversion '0.3' is not supported"),
        (wire(specversion="2.0", id=...), "(this sagakit reads specversion '1.0' only)"),
        (wire(specversion=1.0), "specversion 1.0 is not supported"),
        (b'{"id": "a", "id": "b"}', "duplicate key 'id'"),
        (wire(data={"x": 1}).replace(b'{"x": 1}', b'{"x": 1, "x": 2}'), "duplicate key 'x'"),
        (wire(data={"x": float("nan")}), "NaN is not valid JSON"),
        (wire(id=5), "attribute 'id' must be a string, got number"),
        (wire(type=[]), "attribute 'type' must be a string, got array"),
        (wire(correlationid=""), "attribute 'correlationid' must not be empty"),
        (wire(causationid=["x"]), "attribute 'causationid' must be a string, got array"),
        (wire(traceparent=True), "attribute 'traceparent' must be a string, got boolean"),
        (wire(source={}), "attribute 'source' must be a string, got object"),
        (wire(time=1796224200.5), "attribute 'time' must be an RFC 3339 timestamp"),
        (wire(time="now"), "attribute 'time' must be an RFC 3339 timestamp"),
        (wire(time="2026-12-02"), "must be an RFC 3339 timestamp"),
        (wire(time="2026-12-02 15:10:00Z"), "must be an RFC 3339 timestamp"),
        (wire(time="2026-12-02T15:10:00"), "must be an RFC 3339 timestamp"),
        (wire(time="2026-12-02T15:10:00+0100"), "must be an RFC 3339 timestamp"),
        (wire(time="2026-12-02T15:10:00.Z"), "must be an RFC 3339 timestamp"),
        (wire(time="\u0662\u0660\u0662\u0666-12-02T15:10:00Z"), "an RFC 3339"),  # not ASCII digits
        (wire(time="2026-02-30T15:10:00Z"), "day is out of range for month"),
        (wire(time="2026-13-02T15:10:00Z"), "month must be in 1..12"),
        (wire(time="2026-12-02T24:00:00Z"), "hour, minute or second out of range"),
        (wire(time="2026-12-02T15:60:00Z"), "hour, minute or second out of range"),
        (wire(time="2026-12-02T15:10:61Z"), "hour, minute or second out of range"),
        (wire(time="2026-12-02T15:10:00+24:00"), "offset out of range"),
        (wire(time="0000-12-31T15:10:00Z"), "year 0 is out of range"),
        (wire(time="0001-01-01T00:00:00+00:01"), "is out of range: years 0001 to 9999"),
        (wire(datacontenttype="text/plain"), "attribute 'datacontenttype' is 'text/plain'"),
        (wire(datacontenttype="application/xml"), "sagakit reads JSON data only"),
        (wire(datacontenttype="application/jsonx"), "sagakit reads JSON data only"),
        (wire(datacontenttype="application/json; charset=latin-1"), "charset utf-8 if any"),
        (wire(datacontenttype=7), "attribute 'datacontenttype' is 7"),
        (wire(data_base64="AAE="), "'data_base64' (binary data) is not supported"),
        (wire(Tenant="x"), "attribute name 'Tenant' is not a CloudEvents name"),
        (wire(com_example="x"), "attribute name 'com_example' is not a CloudEvents name"),
        (wire(abcdefghijklmnopqrstu="x"), "(lowercase a-z and 0-9, at most 20 characters)"),
        (wire(tenant={"a": 1}), "extension attribute 'tenant' must be a string, integer or"),
        (wire(tenant=[1]), "extension attribute 'tenant' must be a string, integer or boolean"),
        (wire(tenant=1.5), "extension attribute 'tenant' must be a string, integer or boolean"),
        (wire(rank=2**31), "extension attribute 'rank' is 2147483648, outside CloudEvents'"),
        (wire(rank=-(2**31) - 1), "outside CloudEvents' 32-bit Integer"),
        (wire(subject=""), "attribute 'subject' must not be empty"),
        (wire(dataschema=5), "attribute 'dataschema' must be a string, got number"),
    ],
)
def test_each_malformed_message_says_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(MalformedEventError) as info:
        Event.parse(data)
    assert message in str(info.value)


def test_a_wrong_attribute_names_the_event_it_belongs_to() -> None:
    with pytest.raises(
        MalformedEventError, match=r"event '\w+' \(OrderCreated\): attribute 'time'"
    ):
        Event.parse(wire(time="now"))


def test_something_that_is_not_bytes_or_text_is_malformed() -> None:
    with pytest.raises(MalformedEventError, match="expected bytes or text"):
        Event.parse(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02T15:10:00Z", "2026-12-02T15:10:00.000000Z"),
        ("2026-12-02T15:10:00.5Z", "2026-12-02T15:10:00.500000Z"),
        ("2026-12-02t15:10:00.123456z", "2026-12-02T15:10:00.123456Z"),
        ("2026-12-02T16:10:00.123456+01:00", "2026-12-02T15:10:00.123456Z"),
        ("2026-12-02T10:40:00.123456-04:30", "2026-12-02T15:10:00.123456Z"),
        ("2026-12-02T15:10:00-00:00", "2026-12-02T15:10:00.000000Z"),
        ("2026-12-02T15:10:00.1234564Z", "2026-12-02T15:10:00.123456Z"),
        ("2026-12-02T15:10:00.1234565Z", "2026-12-02T15:10:00.123457Z"),
        ("2026-12-02T15:10:00.9999995Z", "2026-12-02T15:10:01.000000Z"),
        ("2026-12-02T15:10:00." + "1" * 5000 + "Z", "2026-12-02T15:10:00.111111Z"),
        ("2026-12-31T23:59:60Z", "2027-01-01T00:00:00.000000Z"),
        ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59.000000Z"),
        ("2026-12-02T15:10:00.2026Z", "2026-12-02T15:10:00.202600Z"),
    ],
)
def test_rfc3339_timestamps_of_any_offset_and_precision_are_read(text: str, expected: str) -> None:
    event = Event.parse(wire(time=text))
    assert json.loads(event.to_json())["time"] == expected
    as_datetime = datetime.fromisoformat(expected.replace("Z", "+00:00"))
    assert event.time == round(as_datetime.timestamp(), 6)


def test_two_timestamps_of_one_second_each_keep_their_own_fraction() -> None:
    first = Event.parse(wire(time="2026-12-02T15:10:00.25Z"))
    second = Event.parse(wire(time="2026-12-02T15:10:00.75Z"))
    assert second.time - first.time == 0.5


def test_unknown_extensions_and_unused_spec_attributes_are_kept_and_written_back() -> None:
    data = wire(subject="order-7", dataschema="https://example.com/order.json", tenant="acme")
    event = Event.parse(data)
    assert dict(event.extensions) == {
        "subject": "order-7",
        "dataschema": "https://example.com/order.json",
        "tenant": "acme",
    }
    assert json.loads(event.to_json()) == {**json.loads(data), "data": {"order": 1}}
    assert Event.parse(event.to_json()) == event


def test_integer_and_boolean_extensions_keep_their_type() -> None:
    event = Event.parse(wire(rank=-(2**31), top=2**31 - 1, vip=True, off=False))
    assert dict(event.extensions) == {"rank": -(2**31), "top": 2**31 - 1, "vip": True, "off": False}


def test_a_null_attribute_counts_as_absent_as_cloudevents_says() -> None:
    event = Event.parse(wire(causationid=None, traceparent=None, subject=None, data=None))
    assert (event.causation_id, event.traceparent, event.data) == (None, None, None)
    assert dict(event.extensions) == {}


def test_data_absent_is_none_and_json_content_types_are_accepted() -> None:
    assert Event.parse(wire(data=...)).data is None
    for content_type in (
        "application/json; charset=utf-8",
        'application/json;charset="UTF-8"',
        "application/cloudevents+json",
        "application/vnd.acme.order+json; version=2",
        "APPLICATION/JSON",
        "text/json",
        None,
        ...,
    ):
        assert Event.parse(wire(datacontenttype=content_type)).data == {"order": 1}


def test_a_string_data_is_kept_as_a_string_not_decoded_again() -> None:
    assert Event.parse(wire(data='{"a": 1}')).data == '{"a": 1}'


# ------------------------------------------------------------------ properties

names = st.text(min_size=1, max_size=40)
extension_names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(
    lambda name: name not in ATTRIBUTES
)
extension_values = st.text() | st.booleans() | st.integers(-(2**31), 2**31 - 1)
events = st.builds(
    Event,
    id=names,
    type=names,
    correlation_id=names,
    causation_id=st.none() | names,
    source=names,
    time=st.floats(MIN_TIME, END_TIME, exclude_max=True),
    data=json_values,
    traceparent=st.none() | names,
    extensions=st.dictionaries(extension_names, extension_values, max_size=3),
)


@given(events)
def test_every_event_round_trips(event: Event) -> None:
    assert Event.parse(event.to_json()) == event


@given(st.floats(MIN_TIME, END_TIME - 1))
def test_every_time_is_kept_and_written_as_its_nearest_microsecond(seconds: float) -> None:
    micros = round(Fraction(seconds) * 1_000_000)  # exact, ties to even
    event = dataclasses.replace(Event.new("E", source="s"), time=seconds)
    assert event.time == micros / 1_000_000
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    expected = f"{when.year:04d}-{when:%m-%dT%H:%M:%S.%f}Z"
    assert json.loads(event.to_json())["time"] == expected


@given(st.binary() | st.text())
def test_parse_of_arbitrary_data_is_an_event_or_malformed(data: bytes | str) -> None:
    with contextlib.suppress(MalformedEventError):  # anything else fails the test
        Event.parse(data)


@given(st.dictionaries(st.sampled_from([*sorted(ATTRIBUTES), "other", "Bad"]), json_values))
def test_parse_of_arbitrary_objects_never_raises_anything_else(obj: dict[str, Any]) -> None:
    with contextlib.suppress(MalformedEventError):
        event = Event.parse(json.dumps(obj))
        assert obj["specversion"] == "1.0" and event.id == obj["id"]


def test_event_schema_is_a_fresh_copy_of_the_packaged_schema() -> None:
    schema = event_schema()
    schema["required"].clear()
    assert event_schema()["required"] == [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "correlationid",
    ]
