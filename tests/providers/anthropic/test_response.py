"""Anthropic answers: recorded Messages bodies in, OpenAI chat.completion out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import (
    UpstreamError,
    UpstreamUnavailable,
)
from tests.providers.anthropic.helpers import (
    CLIENT_MODEL,
    CREATED,
    FIXTURES,
    REQUEST_ID,
    P,
    ctx,
    parse,
)

# ---------------------------------------------------------------- responses


def test_text_response() -> None:
    body, usage = parse("text.json")
    assert body == {
        "id": REQUEST_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": CLIENT_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": (
                        "Paris is the capital of France. It has about 2.1 million inhabitants."
                    ),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 21 + 2048 + 1536,
            "completion_tokens": 17,
            "total_tokens": 21 + 2048 + 1536 + 17,
            "prompt_tokens_details": {"cached_tokens": 2048},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": None,
    }
    assert usage == body["usage"]


def test_tool_use_response() -> None:
    body, _ = parse("tool_use.json")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather and the time for you."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "type": "function",
            "function": {
                "name": "get_weather",
                "arguments": '{"location":"Paris, France","unit":"celsius"}',
            },
        },
        {
            "id": "toolu_01Kd8sWq3nZr5Yb7XcV2mA9e",
            "type": "function",
            "function": {"name": "get_time", "arguments": "{}"},
        },
    ]


def test_thinking_is_surfaced_only_when_configured() -> None:
    plain, usage = parse("thinking_tool_use.json")
    assert "reasoning_content" not in plain["choices"][0]["message"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 61
    assert usage["completion_tokens"] == 154
    shown, _ = parse("thinking_tool_use.json", ctx(reasoning_output=True))
    message = shown["choices"][0]["message"]
    assert message["reasoning_content"].startswith("The user wants the weather")
    assert message["content"] == "Let me look that up."


def test_only_tool_calls_gives_null_content() -> None:
    raw = orjson.loads((FIXTURES / "tool_use.json").read_bytes())
    raw["content"] = raw["content"][1:]
    completion = P.parse_response(orjson.dumps(raw), ctx())
    message = orjson.loads(completion.body)["choices"][0]["message"]
    assert message["content"] is None and len(message["tool_calls"]) == 2


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (
            "json_tool.json",
            {"name": "John Smith", "email": "john@example.com", "demo_requested": True},
        ),
        ("json_value_tool.json", ["red", "green", "blue"]),
    ],
)
def test_json_mode_answer_is_unwrapped_into_content(name: str, content: Any) -> None:
    body, _ = parse(name)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert orjson.loads(choice["message"]["content"]) == content


@pytest.mark.parametrize(
    ("name", "finish"),
    [
        ("refusal.json", "content_filter"),
        ("max_tokens.json", "length"),
        ("stop_sequence.json", "stop"),
    ],
)
def test_finish_reasons(name: str, finish: str) -> None:
    assert parse(name)[0]["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_other_stop_reasons(stop_reason: Any, finish: str) -> None:
    raw = orjson.loads((FIXTURES / "text.json").read_bytes())
    raw["stop_reason"] = stop_reason
    body = orjson.loads(P.parse_response(orjson.dumps(raw), ctx()).body)
    assert body["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    "raw", [b"<html>oops</html>", b"[1]", b'{"type":"message"}', b'{"id":"x"}']
)
def test_garbage_response_is_502(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        P.parse_response(raw, ctx())
    assert info.value.http_status == 502


def test_error_object_in_a_200_is_mapped() -> None:
    with pytest.raises(UpstreamUnavailable):
        P.parse_response((FIXTURES / "error_529.json").read_bytes(), ctx())
