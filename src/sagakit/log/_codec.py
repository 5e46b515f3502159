"""Strict, fast JSON for the saga log.

Every payload is JSON text (never pickle). ``json.dumps``/``json.loads`` rebuild their C
encoder and re-check their arguments on every call, which costs three times the encoding of
a small result; the saga log encodes a few values per step, so we build the C encoder once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from json import scanner as _scanner
from typing import Any

ENCODE_ERRORS = (TypeError, ValueError, RecursionError)
"""What :func:`encode` raises for a value that is not JSON (RecursionError: a cycle)."""


def _refuse(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[Any], str]:
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython without its _json accelerator
        return json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
    chunks = make(None, _refuse, _encoder.encode_basestring, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return _encoder.encode_basestring(value)
        return "".join(chunks(value, 0))

    return encode


encode: Callable[[Any], str] = _make_encoder()
"""Compact JSON text for ``value``; no NaN or Infinity, no cycles, no unknown types."""

_scan_once = _scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
"""The C scanner itself: ``json.loads`` and ``raw_decode`` reach it through two Python
frames and a whitespace regex, a fifth of decoding a saga's input. (typeshed types its
argument as a scanner, not as the decoder whose settings it reads.)"""


def decode(text: str) -> Any:
    """The value of one JSON document (the log's own compact text, or any valid JSON)."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:  # empty, led by whitespace, or not JSON: json says which
        return json.loads(text)
    if end != len(text):  # trailing whitespace is allowed, anything else is an error
        return json.loads(text)
    return value


def is_last_value(text: str, start: int) -> bool:
    """Whether one JSON value begins at ``start`` and ends right before the last character
    of ``text`` (the closing brace of the object it is the last value of)."""
    try:
        _, end = _scan_once(text, start)
    except (StopIteration, ValueError):  # not JSON there: whoever decodes it says why
        return False
    return end == len(text) - 1 and text[-1] == "}"
