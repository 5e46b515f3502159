"""The log's JSON decoding reads one document exactly as ``json.loads`` does, errors too."""

from __future__ import annotations

import json

import pytest

from sagakit.log._codec import decode


@pytest.mark.parametrize(
    "text",
    ['{"a":[1,2.5,null,true]}', '{"a": 1}', " [1] ", "1\n", '"x"', "NaN", '{"k":"\\u00e9"}'],
)
def test_a_document_decodes_as_json_loads_decodes_it(text: str) -> None:
    assert repr(decode(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["", " ", "{", "1 x", "[1,]", "nul", '{"a":1}{}'])
def test_what_is_not_one_document_is_refused_as_json_loads_refuses_it(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        decode(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)
