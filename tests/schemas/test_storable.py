"""Text the ledger can store: NULs and lone surrogates are found wherever a body holds them, and escaped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import UnstorableText, parse_event
from schemas.json_codec import loads
from schemas.storable import escape, unstorable_at
from tests.support.builders import connection_event

TEXT = st.text(st.characters() | st.sampled_from("\x00\ud800\udbff"))
"""Any text, NULs and lone surrogates included (never a low surrogate after a high one: that is a pair)."""


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({"a": "x\x00y"}, "a holds a NUL character (\\u0000)"),
        ({"a": [{"b": "ok"}, {"b": "\udc00"}]}, "a[1].b holds a lone UTF-16 surrogate (\\udc00)"),
        ({"a": {"k\x00": 1}}, 'the key "k\\u0000" of a holds a NUL character (\\u0000)'),
        ("\ud800", "the body holds a lone UTF-16 surrogate (\\ud800)"),
        ({"a": "😀 \\u0000 is six characters"}, None),
    ],
)
def test_the_first_unstorable_string_is_named_by_its_place(body: Any, found: str | None) -> None:
    text = json.dumps(body)
    assert unstorable_at(loads(text), text) == found
    assert unstorable_at(loads(text), text.encode()) == found


@given(st.recursive(TEXT, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner)))
def test_reading_the_text_first_never_misses_what_the_walk_finds(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert unstorable_at(loads(text), text) == unstorable_at(loads(text))


@given(TEXT)
def test_escaped_text_is_storable_and_reads_back_as_the_original_json_string(text: str) -> None:
    escaped = escape(text)
    assert unstorable_at(escaped) is None
    escaped.encode("utf-8")
    assert json.loads(f'"{escape(json.dumps(text, ensure_ascii=False)[1:-1])}"') == text


def test_a_body_holding_unstorable_text_anywhere_is_not_an_event_to_fold() -> None:
    body = connection_event()
    body["payload"]["connection"]["platformName"] = "Lloyds \ud83d Bank"
    with pytest.raises(UnstorableText, match=r"payload\.connection\.platformName holds a lone UTF-16 surrogate"):
        parse_event(json.dumps(body), "msg_1", datetime(2026, 11, 25, tzinfo=UTC))
