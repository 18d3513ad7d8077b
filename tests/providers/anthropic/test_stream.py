"""Anthropic streams: recorded SSE bytes in, OpenAI chunks out."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import orjson
import pytest

from gateway.errors import (
    UpstreamUnavailable,
)
from gateway.openai.sse import SSEDecoder
from gateway.providers.base import CallContext
from tests.providers.anthropic.helpers import (
    CLIENT_MODEL,
    CREATED,
    FIXTURES,
    REQUEST_ID,
    P,
    ctx,
    parse,
)
from tests.providers.streams import client_bytes

# ---------------------------------------------------------------- streams


def run(raw: bytes, c: CallContext, splits: list[int] | None = None) -> tuple[bytes, Any]:
    """The client's bytes for `raw` cut at `splits` (None: whole), and the translator."""
    t = P.new_stream_translator(c)
    cuts = [0, *(splits or []), len(raw)]
    return client_bytes(t, (raw[a:b] for a, b in pairwise(cuts))), t


def events(out: bytes) -> list[Any]:
    return [e.data if e.data == b"[DONE]" else orjson.loads(e.data) for e in SSEDecoder().feed(out)]


def chunk(delta: dict[str, Any], finish: str | None = None, usage: bool = False) -> Any:
    out: dict[str, Any] = {
        "id": REQUEST_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": CLIENT_MODEL,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        out["usage"] = None
    return out


def splits_of(raw: bytes, seed: int) -> list[int]:
    rng = random.Random(seed)
    return sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 40))))


STREAMS = sorted(p.name for p in FIXTURES.glob("*.sse"))


@pytest.mark.parametrize("name", STREAMS)
def test_any_split_gives_the_same_output(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    for c in (
        ctx(stream=True),
        ctx(stream=True, include_usage=True, reasoning_output=True),
        ctx(stream=True, response_format="json_schema"),
    ):
        whole, _ = run(raw, c)
        byte_by_byte, _ = run(raw, c, list(range(1, len(raw))))
        assert byte_by_byte == whole
        for seed in range(5):
            assert run(raw, c, splits_of(raw, seed))[0] == whole, seed
        assert whole  # every fixture produces something


TEXT_USAGE = {
    "prompt_tokens": 25 + 1024 + 4096,
    "completion_tokens": 12,
    "total_tokens": 25 + 1024 + 4096 + 12,
    "prompt_tokens_details": {"cached_tokens": 4096},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def test_text_stream_chunks() -> None:
    out, t = run((FIXTURES / "text.sse").read_bytes(), ctx(stream=True))
    assert events(out) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": "! I'm"}),
        chunk({"content": " Claude.\n"}),
        chunk({"content": "How can I help?"}),
        chunk({}, "stop"),
        b"[DONE]",
    ]
    assert t.usage == TEXT_USAGE  # recorded for accounting even when not sent
    assert t.error is None


def test_text_stream_with_usage_chunk() -> None:
    out, _ = run((FIXTURES / "text.sse").read_bytes(), ctx(stream=True, include_usage=True))
    evs = events(out)
    assert evs[-1] == b"[DONE]"
    assert evs[-2] == {
        "id": REQUEST_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": CLIENT_MODEL,
        "system_fingerprint": None,
        "choices": [],
        "usage": TEXT_USAGE,
    }
    assert evs[-3] == chunk({}, "stop", usage=True)
    assert evs[0] == chunk({"role": "assistant", "content": ""}, usage=True)


def test_parallel_tool_calls_stream_with_ordinal_indexes() -> None:
    out, _ = run((FIXTURES / "parallel_tools.sse").read_bytes(), ctx(stream=True))
    assert events(out) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Okay, let me check"}),
        chunk({"content": " both."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        *(
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in ['{"location": "San Fra', 'ncisco, CA", ', '"unit": "fah', 'renheit"}']
        ),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_01Kd8sWq3nZr5Yb7XcV2mA9e",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        b"[DONE]",
    ]


def assembled_calls(evs: list[Any]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for e in evs:
        if isinstance(e, dict) and e.get("choices"):
            for c in e["choices"][0]["delta"].get("tool_calls") or []:
                slot = calls.setdefault(c["index"], {"name": "", "arguments": ""})
                slot["name"] += c["function"].get("name", "")
                slot["arguments"] += c["function"].get("arguments", "")
    return calls


def test_e8_tool_without_arguments_streams_parseable_arguments() -> None:
    evs = events(run((FIXTURES / "parallel_tools.sse").read_bytes(), ctx(stream=True))[0])
    calls = assembled_calls(evs)
    assert orjson.loads(calls[0]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "fahrenheit",
    }
    assert orjson.loads(calls[1]["arguments"]) == {}
    fragments = [
        c["function"]["arguments"]
        for e in evs
        if isinstance(e, dict) and e.get("choices")
        for c in e["choices"][0]["delta"].get("tool_calls") or []
        if "id" not in c
    ]
    assert "" not in fragments  # no empty-argument deltas


def test_thinking_stream_is_dropped_or_surfaced() -> None:
    raw = (FIXTURES / "thinking.sse").read_bytes()
    plain = events(run(raw, ctx(stream=True))[0])
    assert not any("reasoning_content" in e["choices"][0]["delta"] for e in plain[:-1])
    shown = events(run(raw, ctx(stream=True, reasoning_output=True))[0])
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in shown[:-1])
    assert reasoning.startswith("I need to find the GCD") and "2 \u00d7 462" in reasoning
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in shown[:-1])
    assert content == "The greatest common divisor of 1071 and 462 is **21**."
    _, t = run(raw, ctx(stream=True))
    assert t.usage["completion_tokens_details"] == {"reasoning_tokens": 151}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "json_tool.sse",
            {"name": "John Smith", "email": "john@example.com", "demo_requested": True},
        ),
        ("json_value_tool.sse", ["red", "green", "blue"]),
    ],
)
def test_json_mode_streams_as_content(name: str, expected: Any) -> None:
    evs = events(run((FIXTURES / name).read_bytes(), ctx(stream=True))[0])
    deltas = [e["choices"][0]["delta"] for e in evs[:-1]]
    assert not any("tool_calls" in d for d in deltas)
    assert orjson.loads("".join(d.get("content") or "" for d in deltas)) == expected
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"


def streamed_content(evs: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in evs
        if isinstance(e, dict) and e.get("choices")
    )


@pytest.mark.parametrize("fmt", ["json_schema", "json_object"])
def test_json_mode_preamble_is_dropped_in_streams_as_in_answers(fmt: str) -> None:
    """With thinking the JSON tool is not forced: text before it must not leak."""
    c = ctx(stream=True, response_format=fmt)
    evs = events(run((FIXTURES / "json_tool_preamble.sse").read_bytes(), c)[0])
    assert streamed_content(evs) == '{"name": "Ada Lovelace"}'
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"
    body, _ = parse("json_tool_preamble.json", ctx(response_format=fmt))
    message = body["choices"][0]["message"]
    assert orjson.loads(message["content"]) == orjson.loads(streamed_content(evs))


def test_json_mode_text_without_the_tool_is_sent_whole_before_the_finish() -> None:
    raw = (FIXTURES / "text.sse").read_bytes()
    evs = events(run(raw, ctx(stream=True, response_format="json_object"))[0])
    expected = "Hello! I'm Claude.\nHow can I help?"
    assert evs == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": expected}),
        chunk({}, "stop"),
        b"[DONE]",
    ]
    body, _ = parse("text.json", ctx(response_format="json_object"))
    assert body["choices"][0]["message"]["content"] == (
        "Paris is the capital of France. It has about 2.1 million inhabitants."
    )


def test_text_streams_at_once_without_json_mode_or_with_native_json_schema() -> None:
    raw = (FIXTURES / "text.sse").read_bytes()
    plain = events(run(raw, ctx(stream=True))[0])
    native = ctx(stream=True, response_format="json_schema", structured_output="native")
    assert events(run(raw, native)[0]) == plain
    assert plain[1] == chunk({"content": "Hello"})


def test_truncated_wrapped_json_never_shows_the_wrapper() -> None:
    evs = events(run((FIXTURES / "json_value_truncated.sse").read_bytes(), ctx(stream=True))[0])
    assert streamed_content(evs) == '["red", "gre'
    assert evs[-2]["choices"][0]["finish_reason"] == "length"
    raw = (FIXTURES / "json_value_truncated.sse").read_bytes()
    no_stop = raw.replace(
        b'event: content_block_stop\ndata: {"type": "content_block_stop", "index": 0}\n\n', b""
    )
    assert no_stop != raw
    assert events(run(no_stop, ctx(stream=True))[0]) == evs  # flushed at the finish anyway


@pytest.mark.parametrize(
    ("value_input", "content"),
    [({}, ""), ({"value": [1, 2]}, "[1,2]"), ({"other": 1}, ""), ("oops", "")],
)
def test_wrapped_json_answer_without_its_value_never_shows_the_wrapper(
    value_input: Any, content: str
) -> None:
    raw = orjson.loads((FIXTURES / "json_value_tool.json").read_bytes())
    raw["content"][0]["input"] = value_input
    raw["stop_reason"] = "max_tokens"
    body = orjson.loads(P.parse_response(orjson.dumps(raw), ctx()).body)
    assert body["choices"][0]["message"]["content"] == content


def test_answers_and_chunks_name_the_clients_model() -> None:
    body, _ = parse("text.json")
    assert body["model"] == CLIENT_MODEL
    evs = events(run((FIXTURES / "text.sse").read_bytes(), ctx(stream=True, include_usage=True))[0])
    assert {e["model"] for e in evs if isinstance(e, dict)} == {CLIENT_MODEL}


def test_truncated_tool_call_reports_length() -> None:
    evs = events(run((FIXTURES / "max_tokens_tool.sse").read_bytes(), ctx(stream=True))[0])
    assert evs[-2]["choices"][0]["finish_reason"] == "length"
    assert assembled_calls(evs)[0]["arguments"] == '{"query": "lon'


def test_e9_error_event_after_200_becomes_an_openai_error_without_done() -> None:
    out, t = run((FIXTURES / "error_after_200.sse").read_bytes(), ctx(stream=True))
    evs = events(out)
    assert b"[DONE]" not in evs
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in evs[:-1]) == (
        "Once upon a time"
    )
    assert set(evs[-1]["error"]) == {"message", "type", "param", "code"}
    assert evs[-1]["error"]["code"] == "overloaded_error"
    assert isinstance(t.error, UpstreamUnavailable) and t.error.http_status == 503
    assert t.close() == b""  # the relay writes no trailer after an error


def test_eof_before_message_stop_is_a_truncation_error() -> None:
    out, t = run((FIXTURES / "truncated.sse").read_bytes(), ctx(stream=True))
    evs = events(out)
    assert b"[DONE]" not in evs
    assert evs[-1]["error"]["code"] == "upstream_stream_truncated"
    assert t.error is not None and t.usage["prompt_tokens"] == 25


def test_eof_after_the_finish_chunk_but_before_message_stop_is_still_truncated() -> None:
    raw = (FIXTURES / "text.sse").read_bytes()
    cut = raw[: raw.index(b"event: message_stop")]
    evs = events(run(cut, ctx(stream=True))[0])
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"
    assert evs[-1]["error"]["code"] == "upstream_stream_truncated"


def test_e10_usage_is_cumulative_and_never_summed() -> None:
    raw = (FIXTURES / "cumulative_usage.sse").read_bytes()
    out, t = run(raw, ctx(stream=True, include_usage=True))
    usage = events(out)[-2]["usage"]
    assert usage["completion_tokens"] == 44  # the last message_delta, not 3 + 40 + 44
    assert usage["prompt_tokens"] == 1200 + 800
    assert usage["prompt_tokens_details"] == {"cached_tokens": 800}
    assert t.usage == usage
    finishes = [e for e in events(out) if isinstance(e, dict) and e["choices"]]
    assert sum(1 for e in finishes if e["choices"][0]["finish_reason"]) == 1


def test_e11_usage_is_a_separate_chunk_only_when_asked() -> None:
    raw = (FIXTURES / "text.sse").read_bytes()
    without = events(run(raw, ctx(stream=True))[0])
    assert all("usage" not in e for e in without[:-1])
    with_usage = events(run(raw, ctx(stream=True, include_usage=True))[0])
    finish = with_usage[-3]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["usage"] is None
    assert with_usage[-2]["choices"] == [] and with_usage[-2]["usage"]["total_tokens"] == 5157


def test_ping_before_message_start_and_events_after_message_stop_are_ignored() -> None:
    raw = (FIXTURES / "text.sse").read_bytes()
    noisy = (
        b'event: ping\ndata: {"type":"ping"}\n\n' + raw + b'event: ping\ndata: {"type":"ping"}\n\n'
    )
    assert run(noisy, ctx(stream=True))[0] == run(raw, ctx(stream=True))[0]


def test_message_stop_without_message_delta_still_finishes() -> None:
    raw = (FIXTURES / "text.sse").read_bytes()
    start = raw.index(b"event: message_delta")
    cut = raw[:start] + raw[raw.index(b"event: message_stop") :]
    evs = events(run(cut, ctx(stream=True))[0])
    assert evs[-2] == chunk({}, "stop") and evs[-1] == b"[DONE]"


def test_crlf_framing_gives_the_same_chunks() -> None:
    raw = (FIXTURES / "parallel_tools.sse").read_bytes()
    assert run(raw.replace(b"\n", b"\r\n"), ctx(stream=True))[0] == run(raw, ctx(stream=True))[0]


@pytest.mark.parametrize("bad", [b"data: {not json\n\n", b"data: [1,2]\n\n"])
def test_garbage_event_is_an_error_event(bad: bytes) -> None:
    out, t = run(bad, ctx(stream=True))
    assert events(out)[-1]["error"]["type"] == "upstream_error"
    assert t.error is not None
