"""Thought signatures carried in OpenAI tool-call ids."""

from __future__ import annotations

import base64

import orjson
import pytest

from gateway.providers.gemini.ids import decode_call_id, encode_call_id
from tests.providers.gemini.helpers import (
    FIXTURES,
    SIG1,
    P,
    ctx,
)

# ================================================================ thought-signature ids


@pytest.mark.parametrize(
    "signature",
    [
        SIG1,
        "T/VZm7plubbEt5uTzxO9ZOjp+b2ymGMtPnYwi0Oh",
        "AAEC",
        base64.b64encode(bytes(255)).decode(),
    ],
)
def test_call_id_carries_signature_byte_exact(signature: str) -> None:
    call_id = encode_call_id("gid_abc", signature)
    assert call_id.startswith("gid_abc__sig_")
    assert decode_call_id(call_id) == ("abc", signature)


def test_call_id_without_signature_and_foreign_ids() -> None:
    assert decode_call_id("call_0123abcd") == (None, None)
    assert decode_call_id("toolu_01A") == (None, None)
    assert decode_call_id("call_x__sig_!!") == (None, None)
    assert encode_call_id("call_1", None) == "call_1"
    assert encode_call_id("call_1", "A" * 20000) == "call_1"  # too long to carry


def test_synthesized_ids_are_deterministic_and_distinct() -> None:
    body = (FIXTURES / "tool_call.json").read_bytes()
    a = orjson.loads(P.parse_response(body, ctx()).body)
    b = orjson.loads(P.parse_response(body, ctx()).body)
    assert a["choices"][0]["message"]["tool_calls"] == b["choices"][0]["message"]["tool_calls"]
    assert a["choices"][0]["message"]["tool_calls"][0]["id"].startswith("call_")
