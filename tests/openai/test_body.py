"""gateway/openai/body.py: parsing a request body within the JSON limits."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequest
from gateway.openai.body import MAX_CONTAINERS, containers, parse_body


def nodes(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(nodes(v) for v in value)
    return 0


tricky_text = st.text(alphabet='[]{}"\\ ab\n\u00e9', max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300)
@given(json_values, st.booleans())
def test_containers_counts_objects_and_arrays_never_brackets_in_strings(
    value: Any, ascii_only: bool
) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert containers(raw) == nodes(value)


def test_a_body_of_too_many_objects_and_arrays_is_400_before_parsing() -> None:
    raw = b'{"model":"m","x":[' + b",".join([b"[]"] * MAX_CONTAINERS) + b"]}"
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw)
    assert info.value.code == "json_too_complex" and info.value.http_status == 400


def test_brackets_inside_strings_do_not_count_against_the_limit() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "{[" * MAX_CONTAINERS}]}
    assert parse_body(orjson.dumps(body)) == body


@pytest.mark.parametrize(("raw", "fragment"), [(b"", "empty"), (b"{", "could not parse")])
def test_empty_or_broken_json_is_400(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        parse_body(raw)
