"""The event envelope that choreographed services exchange over a broker: a CloudEvent.

Every event says what happened (``type``), to which saga (``correlation_id``), because of
which earlier event (``causation_id``), who said so (``source``) and when (``time``), so a
tracker can rebuild a choreographed saga's timeline from events alone: that is the
"hard to trace" cost of choreography, paid once here instead of in every service.

On the wire an event is a CloudEvents 1.0 event in structured-mode JSON, so a service in any
language can join a choreography: the official CloudEvents SDKs (Go, JavaScript, Java, .NET,
Python, ...) read and write it, and a service without one needs only a JSON library. The
attributes, in the order sagakit writes them::

    {"specversion":"1.0","id":"...","source":"payments","type":"PaymentCompleted",
     "time":"2026-12-02T15:10:00.123456Z","datacontenttype":"application/json",
     "correlationid":"...","causationid":"...","traceparent":"00-...-...-01",
     <other extensions>, "data":{...}}

``correlationid``, ``causationid`` and ``traceparent`` (W3C trace context, see
:mod:`sagakit.telemetry`) are extension attributes; the last two are left out when None.
sagakit's profile of CloudEvents requires ``correlationid`` and ``time`` (the tracker orders
a saga's events by it). docs/wire-format.md is the whole contract, broker by broker, and
``event.schema.json`` beside this module its JSON Schema (:func:`event_schema`).

In Python, ``time`` is float seconds since the Unix epoch (UTC), like the saga log's
timestamps, kept to whole microseconds as the wire carries it, so an event survives
``Event.parse(event.to_json())`` exactly. :meth:`Event.parse` is strict about what sagakit
relies on, because a consumer must tell a malformed message (dead-letter it at once) from
one its handler failed on (retry it); whatever is wrong, it raises
:class:`MalformedEventError` saying what. It is tolerant of what a foreign producer may add:
other extension attributes (and ``dataschema``, ``subject``, which the CloudEvents spec
defines and sagakit does not use) are kept in :attr:`Event.extensions` and written back.
"""

from __future__ import annotations

import json
import math
import os
import re
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from types import MappingProxyType
from typing import Any

from sagakit.errors import MalformedEventError
from sagakit.log._codec import ENCODE_ERRORS, encode

SPECVERSION = "1.0"
"""The CloudEvents version sagakit writes and reads; another one is refused, not guessed."""

ExtensionValue = str | int | bool
"""What an extension attribute may hold: CloudEvents' String, Integer and Boolean types."""

_NO_EXTENSIONS: Mapping[str, ExtensionValue] = MappingProxyType({})


def new_event_id() -> str:
    """A fresh id: 12 hex digits of milliseconds since the epoch, then 80 random bits.

    Time-ordered ids keep an inbox table's primary key appending at its right edge and let
    an operator read the order of events from their ids.
    """
    return f"{_time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of sagakit's profile of the CloudEvents envelope.

    A fresh copy on each call. For services in other languages and for tests: it checks what
    :meth:`Event.parse` checks, except that a JSON Schema cannot see a calendar date that
    does not exist (``2026-02-30``), an integer written as ``5.0``, or duplicate keys.
    """
    text = resources.files("sagakit.bus").joinpath("event.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable fact, as published to a stream.

    ``data`` is any JSON value (dicts, lists, str, int, float, bool, None); build events
    with :meth:`new` so ids, time, correlation and causation are filled in consistently.
    """

    id: str
    type: str
    correlation_id: str
    causation_id: str | None
    source: str
    time: float
    """Seconds since the Unix epoch (UTC), rounded to whole microseconds as on the wire."""
    data: Any
    traceparent: str | None = None
    """The W3C trace context of the span that emitted the event (OpenTelemetry installed
    and configured), which the handler's span continues; absent on the wire when None."""
    extensions: Mapping[str, ExtensionValue] = field(default_factory=lambda: _NO_EXTENSIONS)
    """Extension attributes sagakit does not use, as a foreign producer sent them (read-only).

    Names are CloudEvents names (``a``-``z``, ``0``-``9``, at most 20); values are strings,
    32-bit integers or booleans. ``dataschema`` and ``subject`` land here too."""

    def __post_init__(self) -> None:
        # One expression for the usual case, a loop that names the field for the other.
        if not (
            isinstance(self.id, str)
            and self.id
            and isinstance(self.type, str)
            and self.type
            and isinstance(self.correlation_id, str)
            and self.correlation_id
            and isinstance(self.source, str)
            and self.source
            and (
                self.causation_id is None
                or (isinstance(self.causation_id, str) and self.causation_id)
            )
            and (
                self.traceparent is None or (isinstance(self.traceparent, str) and self.traceparent)
            )
        ):
            self._refuse_text()
        object.__setattr__(self, "time", self._checked_time())
        if self.extensions is not _NO_EXTENSIONS:
            object.__setattr__(self, "extensions", self._checked_extensions())

    @classmethod
    def new(
        cls,
        type: str,
        data: Any = None,
        *,
        source: str,
        correlation_id: str | None = None,
        caused_by: Event | None = None,
        traceparent: str | None = None,
    ) -> Event:
        """A new event, now (to the microsecond, the precision of the wire).

        With ``caused_by``, the event joins its cause's saga (its ``correlation_id``) and
        records the cause's id as ``causation_id``. Without either, the event starts a new
        saga whose correlation id is the event's own id.
        """
        event_id = new_event_id()
        if caused_by is not None:
            if correlation_id is not None and correlation_id != caused_by.correlation_id:
                raise MalformedEventError(
                    f"event {type!r}: correlation_id {correlation_id!r} differs from that of "
                    f"the event that caused it ({caused_by.correlation_id!r})"
                )
            correlation_id = caused_by.correlation_id
        return cls(
            id=event_id,
            type=type,
            correlation_id=correlation_id or event_id,
            causation_id=caused_by.id if caused_by else None,
            source=source,
            time=_time.time_ns() // 1000 / 1_000_000,
            data=data,
            traceparent=traceparent,
        )

    def to_json(self) -> bytes:
        """The event as compact UTF-8 CloudEvents JSON; data that is not JSON is malformed.

        Built by hand in wire order rather than through a dict: this runs for every event
        a relay publishes.
        """
        try:
            parts = [
                '{"specversion":"1.0","id":',
                _quote(self.id),
                ',"source":',
                _quote(self.source),
                ',"type":',
                _quote(self.type),
                ',"time":"',
                _format_time(self.time),
                '","datacontenttype":"application/json","correlationid":',
                _quote(self.correlation_id),
            ]
            if self.causation_id is not None:
                parts += (',"causationid":', _quote(self.causation_id))
            if self.traceparent is not None:
                parts += (',"traceparent":', _quote(self.traceparent))
            for name, value in self.extensions.items():
                parts += (',"', name, '":', encode(value))
            parts += (',"data":', encode(self.data), "}")
            return "".join(parts).encode()
        except UnicodeEncodeError as exc:  # a lone surrogate, in data or an attribute
            raise MalformedEventError(f"{self._label()}: not encodable as UTF-8: {exc}") from exc
        except ENCODE_ERRORS as exc:
            raise MalformedEventError(f"{self._label()}: data is not JSON: {exc}") from exc

    @classmethod
    def parse(cls, data: bytes | str) -> Event:
        """The event in ``data``, or :class:`MalformedEventError` saying what is wrong."""
        obj = _decode(data)
        if not isinstance(obj, dict):
            raise MalformedEventError(f"not an event: expected a JSON object, got {_kind(obj)}")
        if None in obj.values():  # "unset", to CloudEvents
            obj = {name: value for name, value in obj.items() if value is not None}
        return cls._from_wire(obj)

    @classmethod
    def _from_wire(cls, wire: dict[str, Any]) -> Event:
        """``wire`` (a JSON object whose nulls, "unset" to CloudEvents, are gone) checked."""
        _check_specversion(wire.get("specversion"))
        label = _wire_label(wire)
        missing = [name for name in _REQUIRED if name not in wire]
        if missing:
            raise MalformedEventError(
                f"{label}: missing required attribute(s) " + ", ".join(map(repr, missing))
            )
        _check_content_type(label, wire.get("datacontenttype"))
        extensions = _extensions(label, wire)
        try:
            return cls(
                id=wire["id"],
                type=wire["type"],
                correlation_id=wire["correlationid"],
                causation_id=wire.get("causationid"),
                source=wire["source"],
                time=_parse_time(label, wire["time"]),
                data=wire.get("data"),
                traceparent=wire.get("traceparent"),
                extensions=extensions,
            )
        except MalformedEventError:
            # The constructor names Python fields; a foreign producer knows the wire names.
            # Checked only now, so that a valid event is not checked twice.
            _refuse_wire_text(label, wire)
            raise

    def _refuse_text(self) -> None:
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            problem = None if value is None and name in _OPTIONAL else _text(value)
            if problem:
                raise MalformedEventError(f"{self._label()}: field {name!r} {problem}")

    def _checked_time(self) -> float:
        """``time`` rounded to the microsecond, if it is a number RFC 3339 can write."""
        problem = _time_problem(self.time)
        if problem is None:
            seconds = _to_microseconds(self.time)
            if MIN_TIME <= seconds < END_TIME:
                return seconds
            problem = f"is out of range: {_RANGE}"
        raise MalformedEventError(f"{self._label()}: field 'time' {problem}")

    def _checked_extensions(self) -> Mapping[str, ExtensionValue]:
        """A read-only copy of ``extensions``, each name and value one CloudEvents allows."""
        if not isinstance(self.extensions, Mapping):
            raise MalformedEventError(f"{self._label()}: field 'extensions' must be a mapping")
        copied = dict(self.extensions)
        for name, value in copied.items():
            problem = _extension_problem(name, value)
            if problem:
                raise MalformedEventError(f"{self._label()}: {problem}")
        return MappingProxyType(copied) if copied else _NO_EXTENSIONS

    def _label(self) -> str:
        event_id = self.id if isinstance(self.id, str) else "?"
        event_type = self.type if isinstance(self.type, str) else "?"
        return f"event {event_id!r} ({event_type})"


# ------------------------------------------------------------------ attributes

_TEXT_FIELDS = ("id", "type", "correlation_id", "causation_id", "source", "traceparent")
_OPTIONAL = ("causation_id", "traceparent")

_REQUIRED = ("specversion", "id", "source", "type", "time", "correlationid")
"""The attributes sagakit's profile requires, CloudEvents' four and correlationid and time."""
_WIRE_TEXT = ("id", "source", "type", "correlationid", "causationid", "traceparent")
"""String attributes: non-empty, the first four required."""
_SPEC_TEXT = ("dataschema", "subject")
"""Optional CloudEvents attributes sagakit does not use: kept in extensions, non-empty text."""
ATTRIBUTES = frozenset((*_REQUIRED, "datacontenttype", "causationid", "traceparent", "data"))
"""The attribute names sagakit itself reads and writes; an extension may not take one."""

_NAME = re.compile(r"[a-z0-9]{1,20}")
_INT32 = range(-(2**31), 2**31)
_quote = json.encoder.encode_basestring


def _check_specversion(version: object) -> None:
    if version is None:
        raise MalformedEventError(
            "not a CloudEvent: missing required attribute 'specversion' "
            f"(sagakit reads CloudEvents {SPECVERSION!r})"
        )
    if version != SPECVERSION:
        raise MalformedEventError(
            f"CloudEvents specversion {version!r} is not supported "
            f"(this sagakit reads specversion {SPECVERSION!r} only)"
        )


def _wire_label(wire: dict[str, Any]) -> str:
    """The event as an error message names it: by id and type, whichever it has."""
    event_id, event_type = wire.get("id"), wire.get("type")
    if not isinstance(event_id, str) and not isinstance(event_type, str):
        return "not an event"
    event_id = event_id if isinstance(event_id, str) else "?"
    event_type = event_type if isinstance(event_type, str) else "?"
    return f"event {event_id!r} ({event_type})"


_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
JSON_CONTENT_TYPE = re.compile(
    rf"{_TOKEN}/(?:{_TOKEN}\+)?[Jj][Ss][Oo][Nn]"
    rf'(?:[ \t]*;[ \t]*{_TOKEN}=(?:"[^"]*"|{_TOKEN}))*[ \t]*'
)
"""A media type that declares JSON data (``*/json``, ``*/*+json``), parameters allowed."""
_OTHER_CHARSET = re.compile(
    r';[ \t]*[Cc][Hh][Aa][Rr][Ss][Ee][Tt]=(?!"?[Uu][Tt][Ff]-8"?(?:[ \t]*;|[ \t]*$))'
)
"""A ``charset`` parameter other than UTF-8, which JSON text cannot have (RFC 8259)."""


def _check_content_type(label: str, content_type: object) -> None:
    """``datacontenttype``, when present, must declare JSON, the only data sagakit reads."""
    if content_type is None or content_type == "application/json":
        return
    if (
        not isinstance(content_type, str)
        or not JSON_CONTENT_TYPE.fullmatch(content_type)
        or _OTHER_CHARSET.search(content_type)
    ):
        raise MalformedEventError(
            f"{label}: attribute 'datacontenttype' is {content_type!r}: sagakit reads JSON "
            "data only (application/json, a +json type, charset utf-8 if any)"
        )


def _refuse_wire_text(label: str, wire: dict[str, Any]) -> None:
    """Raise for the first string attribute of ``wire`` that is not a non-empty string."""
    for name in _WIRE_TEXT:
        value = wire.get(name)
        problem = None if value is None and name not in _REQUIRED else _text(value)
        if problem:
            raise MalformedEventError(f"{label}: attribute {name!r} {problem}")


def _extensions(label: str, wire: dict[str, Any]) -> Mapping[str, Any]:
    """The attributes sagakit does not read, in wire order; ``data_base64`` is refused.

    The constructor checks their names and values.
    """
    if wire.keys() <= ATTRIBUTES:
        return _NO_EXTENSIONS
    if "data_base64" in wire:
        raise MalformedEventError(
            f"{label}: attribute 'data_base64' (binary data) is not supported: "
            "sagakit events carry JSON in 'data'"
        )
    return {name: value for name, value in wire.items() if name not in ATTRIBUTES}


def _extension_problem(name: object, value: object) -> str | None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return (
            f"attribute name {name!r} is not a CloudEvents name "
            "(lowercase a-z and 0-9, at most 20 characters)"
        )
    if name in ATTRIBUTES:
        return f"{name!r} is an attribute sagakit sets itself, not an extension"
    if name in _SPEC_TEXT:
        problem = _text(value)
        return f"attribute {name!r} {problem}" if problem else None
    if isinstance(value, str | bool):
        return None
    if isinstance(value, int):
        if value in _INT32:
            return None
        return f"extension attribute {name!r} is {value}, outside CloudEvents' 32-bit Integer"
    return f"extension attribute {name!r} must be a string, integer or boolean, got {_kind(value)}"


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {_kind(value)}"
    return None if value else "must not be empty"


def _kind(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# ------------------------------------------------------------------ JSON


def _decode(data: bytes | str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise MalformedEventError(f"not an event: expected bytes or text, got {type(data)}")
    try:
        text = data if isinstance(data, str) else bytes(data).decode()
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise MalformedEventError(f"not UTF-8 text: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedEventError(f"not JSON: {exc}") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse ``{"id": 1, "id": 2}``: json.loads would silently keep the last."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# ------------------------------------------------------------------ time

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = _EPOCH.toordinal()
MIN_TIME = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()
"""0001-01-01T00:00:00Z, the first instant an RFC 3339 timestamp can write."""
END_TIME = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH).total_seconds() + 86_400
"""10000-01-01T00:00:00Z, the first instant after the last one RFC 3339 can write."""

_RANGE = "years 0001 to 9999 (UTC), what RFC 3339 can write"

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def _time_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number (seconds since the epoch), got {_kind(value)}"
    try:
        return None if math.isfinite(float(value)) else "must be finite"
    except OverflowError:
        return f"is out of range: {_RANGE}"


def _microseconds(seconds: float) -> int:
    """``seconds`` to the nearest whole microsecond (ties to even), exactly.

    In integers, from the float's exact ratio: ``round(seconds * 1e6)`` would round the
    product first, and be a microsecond off for some times.
    """
    numerator, denominator = seconds.as_integer_ratio()
    quotient, remainder = divmod(numerator * 1_000_000, denominator)
    twice = 2 * remainder
    return quotient + (twice > denominator or (twice == denominator and quotient & 1))


def _to_microseconds(seconds: float) -> float:
    """``seconds`` rounded to the microsecond; the same float for one already rounded."""
    return _microseconds(seconds) / 1_000_000


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00.")
"""The prefix written for the most recent whole second: events come in bursts of one."""


def _format_time(seconds: float) -> str:
    """``seconds`` as RFC 3339 in UTC with microseconds, ``2026-12-02T15:10:00.123456Z``.

    A per-second cache of the date and time of day: formatting through ``datetime`` costs
    four times as much, on every event a relay publishes.
    """
    global _last_second
    second, micro = divmod(_microseconds(seconds), 1_000_000)
    cached = _last_second
    if cached[0] != second:
        at = _EPOCH + timedelta(seconds=second)
        prefix = f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at:%H:%M:%S}."
        cached = _last_second = (second, prefix)
    return f"{cached[1]}{micro:06d}Z"


def _parse_time(label: str, value: object) -> float:
    """An RFC 3339 timestamp (any offset, any number of fraction digits) as epoch seconds.

    A leap second (``23:59:60``) counts as the first instant of the next minute.
    """
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise MalformedEventError(
            f"{label}: attribute 'time' must be an RFC 3339 timestamp "
            f"(2026-12-02T15:10:00.123456Z), got {value!r}"
        )
    try:
        micros = _timestamp_micros(match)
    except ValueError as exc:
        raise MalformedEventError(f"{label}: attribute 'time' {value!r}: {exc}") from None
    seconds = micros / 1_000_000
    if not MIN_TIME <= seconds < END_TIME:
        raise MalformedEventError(f"{label}: attribute 'time' {value!r} is out of range: {_RANGE}")
    return seconds


_last_parsed: tuple[str, int] = ("", 0)
"""The whole seconds of the timestamp parsed last, by its text without the fraction."""


def _timestamp_micros(match: re.Match[str]) -> int:
    """The timestamp's microseconds since the epoch; a burst of events shares its seconds."""
    global _last_parsed
    fraction = match.group(7)
    text = match.string
    whole = text if fraction is None else text[: match.start(7)] + text[match.end(7) :]
    cached = _last_parsed
    if cached[0] != whole:
        cached = _last_parsed = (whole, _whole_seconds(match))
    return cached[1] * 1_000_000 + _fraction_micros(fraction or "")


def _whole_seconds(match: re.Match[str]) -> int:
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    days = date(year, month, day).toordinal() - _EPOCH_DAY  # ValueError names the field
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("hour, minute or second out of range")
    return days * 86_400 + hour * 3_600 + minute * 60 + second - _offset(match)


def _offset(match: re.Match[str]) -> int:
    sign, hours, minutes = match.group(8, 9, 10)
    if sign is None:
        return 0
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError("offset out of range")
    offset = int(hours) * 3_600 + int(minutes) * 60
    return offset if sign == "+" else -offset


def _fraction_micros(digits: str) -> int:
    """A fraction of a second in microseconds, rounded half up; only 7 digits are read."""
    micros = int(digits[:6].ljust(6, "0"))
    return micros + (len(digits) > 6 and digits[6] >= "5")
