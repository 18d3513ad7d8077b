"""Gemini streams: recorded SSE bytes in, OpenAI chunks out."""

from __future__ import annotations

import random

import pytest

from gateway.errors import (
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.providers.gemini.ids import decode_call_id
from gateway.providers.gemini.stream import GeminiStreamTranslator
from tests.providers.gemini.helpers import (
    FIXTURES,
    SIG1,
    ctx,
    deltas,
    events,
    translate,
)

# ================================================================ streams

TEXT_CHUNKS = [
    (0, {"role": "assistant", "content": ""}, None),
    (0, {"content": "The"}, None),
    (0, {"content": " sky is"}, None),
    (0, {"content": " blue."}, None),
    (0, {}, "stop"),
]


def splits(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 30))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


STREAMS = sorted(p.name for p in FIXTURES.glob("*.sse"))


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("include_usage", [False, True])
def test_any_split_gives_the_same_bytes(name: str, include_usage: bool) -> None:
    raw = (FIXTURES / name).read_bytes()
    c = ctx(stream=True, include_usage=include_usage, reasoning_output=True)
    whole, _ = translate(raw, c)
    assert translate(raw, c, [raw[i : i + 1] for i in range(len(raw))])[0] == whole
    for seed in range(5):
        assert translate(raw, c, splits(raw, seed))[0] == whole


def test_text_stream_chunks() -> None:
    out, t = translate((FIXTURES / "text.sse").read_bytes(), ctx(stream=True))
    assert deltas(out) == TEXT_CHUNKS
    evs = events(out)
    assert evs[-1] == b"[DONE]"
    head = {k: evs[0][k] for k in ("id", "object", "created", "model", "system_fingerprint")}
    assert head == {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": "gem",
        "system_fingerprint": None,
    }
    assert all(e["id"] == "chatcmpl-test" for e in evs[:-1])
    assert t.error is None
    assert t.finished is False  # no end marker upstream: the relay reads to EOF


def test_tool_call_stream_whole_call_in_one_chunk() -> None:
    out, _ = translate((FIXTURES / "tool_call_then_stop.sse").read_bytes(), ctx(stream=True))
    chunks = deltas(out)
    assert chunks[0] == (0, {"role": "assistant", "content": ""}, None)
    call_chunk = chunks[1][1]["tool_calls"][0]
    assert call_chunk["index"] == 0 and call_chunk["type"] == "function"
    assert call_chunk["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris","unit":"c"}',
    }
    assert decode_call_id(call_chunk["id"])[1] == SIG1
    assert chunks[2:] == [(0, {}, "tool_calls")]


def test_parallel_tool_calls_get_ordinal_indexes() -> None:
    out, _ = translate((FIXTURES / "parallel_tools.sse").read_bytes(), ctx(stream=True))
    chunks = deltas(out)
    assert chunks[1] == (0, {"content": "Checking both."}, None)
    assert [d["tool_calls"][0]["index"] for _, d, _ in chunks if "tool_calls" in d] == [0, 1]
    assert chunks[-1] == (0, {}, "tool_calls")


@pytest.mark.parametrize("reasoning", [True, False])
def test_thinking_stream(reasoning: bool) -> None:
    raw = (FIXTURES / "thinking.sse").read_bytes()
    out, _ = translate(raw, ctx(stream=True, reasoning_output=reasoning))
    thoughts = [
        (0, {"reasoning_content": "**Considering the question**\nThe user asks"}, None),
        (0, {"reasoning_content": " for a sum."}, None),
    ]
    assert deltas(out) == [
        (0, {"role": "assistant", "content": ""}, None),
        *(thoughts if reasoning else []),
        (0, {"content": "2 + 2 = 4."}, None),
        (0, {}, "stop"),
    ]


def test_error_after_200_becomes_openai_error_event() -> None:
    out, t = translate((FIXTURES / "error_after_200.sse").read_bytes(), ctx(stream=True))
    evs = events(out)
    assert evs[-1]["error"]["code"] == "UNAVAILABLE"
    assert b"[DONE]" not in evs
    assert isinstance(t.error, UpstreamUnavailable) and t.error.http_status == 503
    assert t.close() == b""


def test_truncated_stream_reports_an_error_from_close() -> None:
    raw = (FIXTURES / "truncated.sse").read_bytes()
    out, t = translate(raw, ctx(stream=True))
    assert events(out)[-1]["error"]["code"] == "upstream_stream_truncated"
    assert t.error is not None and t.error.http_status == 502
    # A finished stream cut in the middle of a later event is truncated too.
    whole = (FIXTURES / "text.sse").read_bytes()
    out, t = translate(whole + b'data: {"usageMetadata":', ctx(stream=True))
    assert t.error is not None and b"[DONE]" not in out


def test_blocked_prompt_stream() -> None:
    out, t = translate((FIXTURES / "blocked.sse").read_bytes(), ctx(stream=True))
    assert deltas(out) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {}, "content_filter"),
    ]
    assert events(out)[-1] == b"[DONE]"
    assert t.usage is not None and t.usage["prompt_tokens"] == 12


def test_two_candidates_interleave_with_their_own_finish() -> None:
    out, _ = translate((FIXTURES / "two_candidates.sse").read_bytes(), ctx(stream=True))
    assert deltas(out) == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "Red"}, None),
        (1, {"role": "assistant", "content": ""}, None),
        (1, {"content": "Blue"}, None),
        (0, {"content": "."}, None),
        (0, {}, "stop"),
        (1, {"content": "!"}, None),
        (1, {}, "length"),
    ]


def test_malformed_function_call_mid_stream_is_an_error_event() -> None:
    out, t = translate((FIXTURES / "malformed_function_call.sse").read_bytes(), ctx(stream=True))
    evs = events(out)
    assert evs[-1]["error"]["code"] == "upstream_malformed_function_call"
    assert t.error is not None


def test_non_json_event_is_an_error() -> None:
    t = GeminiStreamTranslator(ctx(stream=True))
    assert t.feed(b"data: <html>\r\n\r\n") == b""  # the relay writes the error event
    assert t.error is not None and "not a JSON object" in t.error.message


def test_oversized_stream_line_is_an_error_event_not_an_exception() -> None:
    t = GeminiStreamTranslator(ctx(stream=True))
    head = t.feed((FIXTURES / "text.sse").read_bytes().split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert t.feed(b"data: " + b"x" * (16 * 1024 * 1024 + 1)) == b""
    assert isinstance(t.error, UpstreamError) and t.error.http_status == 502
    assert deltas(head)[0] == (0, {"role": "assistant", "content": ""}, None)
    assert "malformed stream" in t.error.message
    assert t.feed(b"\r\n\r\n") == b""
    assert t.close() == b""
