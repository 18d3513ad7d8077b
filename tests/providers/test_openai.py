"""The OpenAI(-compatible) provider: recorded upstream bytes in, OpenAI bytes out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import OpenAIOptions
from gateway.errors import (
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.openai.sse import SSEDecoder
from gateway.providers.base import CallContext, Deployment
from gateway.providers.openai import OpenAIProvider, normalise_request
from tests.providers.streams import client_bytes

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai"
P = OpenAIProvider()


def ctx(stream: bool = True, include_usage: bool = False, **dep: Any) -> CallContext:
    deployment = Deployment(
        model_id="m",
        provider_name="up",
        kind="openai",
        upstream_model=dep.pop("upstream_model", "up-model"),
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-upstream",
        options=OpenAIOptions(**dep),
    )
    return CallContext(deployment, stream, include_usage, "chatcmpl-test", 1730000000)


def translate(data: bytes, c: CallContext, step: int | None = None) -> tuple[bytes, Any]:
    """The client's bytes for `data` (fed `step` bytes at a time), and the translator."""
    t = P.new_stream_translator(c)
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    return client_bytes(t, pieces), t


def events(out: bytes) -> list[Any]:
    return [e.data if e.data == b"[DONE]" else orjson.loads(e.data) for e in SSEDecoder().feed(out)]


# ---------------------------------------------------------------- requests


def test_build_request_sets_upstream_model_key_and_never_the_clients() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "foo": {"x": 1}}
    req = P.build_request(body, ctx(stream=False))
    sent = orjson.loads(req.body)
    assert sent["model"] == "up-model"
    assert sent["foo"] == {"x": 1}  # unknown fields pass through untouched
    assert req.headers["authorization"] == "Bearer sk-upstream"
    assert req.url == "http://127.0.0.1:9/v1/chat/completions"
    assert body["model"] == "m"  # the client's body is not mutated


def test_stream_always_asks_upstream_for_usage_keeping_other_options() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_obfuscation": False},
    }
    sent = normalise_request(body, ctx())
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert body["stream_options"] == {"include_obfuscation": False}


def test_stream_usage_off_for_servers_that_reject_stream_options() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert "stream_options" not in normalise_request(body, ctx(stream_usage=False))


def test_developer_role_becomes_system_only_when_upstream_lacks_it() -> None:
    msgs = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]
    body = {"model": "m", "messages": msgs}
    assert normalise_request(body, ctx())["messages"][0]["role"] == "developer"
    out = normalise_request(body, ctx(developer_role=False))
    assert [m["role"] for m in out["messages"]] == ["system", "user"]
    assert msgs[0]["role"] == "developer"


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        ("max_tokens", {"max_completion_tokens": 7}, {"max_tokens": 7}),
        ("max_completion_tokens", {"max_tokens": 7}, {"max_completion_tokens": 7}),
        ("max_tokens", {"max_tokens": 7}, {"max_tokens": 7}),
        (None, {"max_tokens": 7}, {"max_tokens": 7}),
        ("max_tokens", {"max_tokens": 5, "max_completion_tokens": 7}, {"max_tokens": 5}),
    ],
)
def test_max_tokens_field_is_renamed_for_the_upstream(
    field: str | None, given: dict[str, int], expected: dict[str, int]
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **given}
    out = normalise_request(body, ctx(max_tokens_field=field))
    got = {k: out[k] for k in ("max_tokens", "max_completion_tokens") if k in out}
    assert got == expected


# ---------------------------------------------------------------- streams


@pytest.mark.parametrize("step", [None, 1, 7, 64])
def test_text_stream_without_client_usage_drops_usage(step: int | None) -> None:
    out, t = translate((FIXTURES / "text_with_usage.sse").read_bytes(), ctx(), step)
    evs = events(out)
    assert evs[-1] == b"[DONE]"
    chunks = evs[:-1]
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello! How"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert t.usage["total_tokens"] == 15  # still recorded for accounting
    assert t.error is None


@pytest.mark.parametrize("step", [None, 3])
def test_text_stream_with_client_usage_forwards_usage_chunk_last(step: int | None) -> None:
    out, _ = translate(
        (FIXTURES / "text_with_usage.sse").read_bytes(), ctx(include_usage=True), step
    )
    evs = events(out)
    assert evs[-1] == b"[DONE]"
    assert evs[-2]["choices"] == [] and evs[-2]["usage"]["prompt_tokens"] == 12
    assert all(c["usage"] is None for c in evs[:-2])  # OpenAI's own shape when asked


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.sse")))
def test_a_stream_read_an_event_at_a_time_translates_as_when_read_whole(
    name: str, include_usage: bool
) -> None:
    """A token stream's reads are nearly all one event each, which the translator
    forwards without decoding once it knows the chunks' shape: the same bytes, usage
    and ending as the stream fed whole or a byte at a time."""
    raw = (FIXTURES / name).read_bytes()
    c = ctx(include_usage=include_usage)
    whole, t_whole = translate(raw, c)
    by_byte, _ = translate(raw, c, 1)
    t = P.new_stream_translator(c)
    by_event = client_bytes(t, re.findall(rb".*?\n\n|.+", raw, re.S))  # the same bytes
    assert by_event == whole == by_byte
    assert (t.usage, t.events) == (t_whole.usage, t_whole.events)
    assert type(t.error) is type(t_whole.error)


def test_ordinary_chunks_are_forwarded_byte_for_byte() -> None:
    raw = (FIXTURES / "text_with_usage.sse").read_bytes()
    out, _ = translate(raw, ctx(include_usage=True))
    first_content = raw.split(b"\n\n")[1]
    assert first_content in out


def test_parallel_tool_calls_keep_indexes_and_arguments() -> None:
    out, t = translate((FIXTURES / "parallel_tools_with_usage.sse").read_bytes(), ctx(), 5)
    chunks = events(out)[:-1]
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    for c in chunks:
        for call in c["choices"][0]["delta"].get("tool_calls") or []:
            args[call["index"]] = args.get(call["index"], "") + call["function"].get(
                "arguments", ""
            )
            if "name" in call["function"]:
                names[call["index"]] = call["function"]["name"]
    assert names == {0: "get_weather", 1: "get_time"}
    assert orjson.loads(args[0]) == {"city": "Paris"} and orjson.loads(args[1]) == {"tz": "CET"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert t.usage["completion_tokens"] == 40


def test_ollama_tool_call_gets_index_and_tool_calls_finish_reason() -> None:
    out, _ = translate((FIXTURES / "ollama_tool_call.sse").read_bytes(), ctx(include_usage=True))
    evs = events(out)
    call = evs[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 0
    assert evs[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert evs[2]["choices"] == [] and evs[2]["usage"]["total_tokens"] == 29  # choices: null fixed
    assert evs[-1] == b"[DONE]"


@pytest.mark.parametrize("step", [None, 2])
def test_inband_error_after_200_becomes_final_error_event_without_done(step: int | None) -> None:
    out, t = translate((FIXTURES / "vllm_inband_error.sse").read_bytes(), ctx(), step)
    evs = events(out)
    assert b"[DONE]" not in evs
    assert evs[-1]["error"]["message"].endswith("CUDA out of memory")
    assert set(evs[-1]["error"]) == {"message", "type", "param", "code"}
    assert isinstance(t.error, UpstreamError)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in evs[:-1]) == "Par"


def test_truncated_stream_ends_with_error_not_done() -> None:
    out, t = translate((FIXTURES / "truncated.sse").read_bytes(), ctx())
    evs = events(out)
    assert evs[-1]["error"]["code"] == "upstream_stream_truncated"
    assert b"[DONE]" not in evs
    assert t.error is not None


def test_stream_without_done_but_finished_is_complete() -> None:
    raw = (FIXTURES / "text_with_usage.sse").read_bytes().replace(b"data: [DONE]\n\n", b"")
    out, t = translate(raw, ctx())
    assert t.error is None and out.endswith(b"data: [DONE]\n\n")


def test_garbage_event_is_an_error_event() -> None:
    out, t = translate(b"data: {not json\n\n", ctx())
    assert events(out)[-1]["error"]["type"] == "upstream_error"
    assert t.error is not None


# ---------------------------------------------------------------- non-streamed


def test_completion_passes_bytes_through_when_nothing_to_fix() -> None:
    raw = (FIXTURES / "completion.json").read_bytes()
    c = P.parse_response(raw, ctx(stream=False))
    assert c.body is raw
    assert c.usage is not None and c.usage["total_tokens"] == 15


def test_completion_tool_calls_with_stop_become_tool_calls() -> None:
    raw = (FIXTURES / "ollama_tool_completion.json").read_bytes()
    c = P.parse_response(raw, ctx(stream=False))
    assert orjson.loads(c.body)["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("raw", [b"<html>oops</html>", b"[1]", b'{"id": "x"}'])
def test_completion_garbage_is_502(raw: bytes) -> None:
    with pytest.raises(UpstreamError):
        P.parse_response(raw, ctx(stream=False))


# ---------------------------------------------------------------- errors


def test_429_keeps_retry_after_and_message() -> None:
    raw = (FIXTURES / "error_429.json").read_bytes()
    e = P.map_error(429, {"retry-after": "7"}, raw)
    assert isinstance(e, RateLimited)
    assert e.http_status == 429 and e.headers["retry-after"] == "7"
    assert e.message.startswith("Rate limit reached")


def test_4xx_keeps_status_type_code_and_param() -> None:
    e = P.map_error(400, {}, (FIXTURES / "error_400_context.json").read_bytes())
    assert isinstance(e, UpstreamRejected)
    assert (e.http_status, e.type, e.code, e.param) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )


def test_upstream_auth_failure_keeps_its_status_and_never_echoes_the_key() -> None:
    e = P.map_error(401, {}, (FIXTURES / "error_401.json").read_bytes())
    assert (e.http_status, e.type, e.code) == (401, "authentication_error", "upstream_auth_failed")
    assert "sk-" not in e.message and "gateway's own credentials" in e.message


def test_vllm_flat_error_body_is_normalised() -> None:
    e = P.map_error(404, {}, (FIXTURES / "error_vllm_flat.json").read_bytes())
    assert e.http_status == 404 and "does not exist" in e.message


@pytest.mark.parametrize(
    ("status", "cls", "wire"),
    [
        (500, UpstreamError, 502),
        (502, UpstreamError, 502),
        (503, UpstreamUnavailable, 503),
        (529, UpstreamUnavailable, 503),
        (504, UpstreamTimeout, 504),
    ],
)
def test_5xx_mapping(status: int, cls: type, wire: int) -> None:
    e = P.map_error(status, {}, b"<html>bad gateway</html>")
    assert isinstance(e, cls) and e.http_status == wire
    assert e.type == "upstream_error"


# ---------------------------------------------------------------- hostile or odd upstreams


def test_multi_line_data_event_is_re_encoded_on_one_line() -> None:
    raw = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",\n'
        b'data: "choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    )
    out, _ = translate(raw, ctx())
    first = out.split(b"\n\n")[0]
    assert first.count(b"\n") == 0
    assert orjson.loads(first[6:])["choices"][0]["delta"]["content"] == "hi"


def test_error_null_is_not_an_error() -> None:
    raw = (FIXTURES / "text_with_usage.sse").read_bytes().replace(b'"usage":null', b'"error":null')
    out, t = translate(raw, ctx())
    assert t.error is None and out.endswith(b"data: [DONE]\n\n")


def test_parallel_calls_all_sent_with_index_zero_get_their_own_indexes() -> None:
    def chunk(calls: list[dict[str, Any]], reason: str | None = None) -> bytes:
        obj = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "qwen",
            "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": reason}],
        }
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def call(cid: str, name: str, args: str) -> dict[str, Any]:
        fn = {"name": name, "arguments": args}
        return {"index": 0, "id": cid, "type": "function", "function": fn}

    raw = chunk([call("call_a", "f", '{"x":1}'), call("call_b", "g", '{"y":2}')])
    raw += chunk([], "stop") + b"data: [DONE]\n\n"
    out, _ = translate(raw, ctx())
    calls = events(out)[0]["choices"][0]["delta"]["tool_calls"]
    assert [(c["index"], c["id"]) for c in calls] == [(0, "call_a"), (1, "call_b")]
    assert events(out)[1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"choices":5}',
        b'{"choices":[{"index":[],"delta":{},"finish_reason":"stop"}]}',
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":7}]},'
        b'"finish_reason":null}]}',
        b"[1, 2]",
        b'"text"',
    ],
)
def test_chunks_of_unexpected_shape_are_a_502_event_not_a_crash(payload: bytes) -> None:
    out, t = translate(b"data: " + payload + b"\n\n", ctx())
    assert t.error is not None and t.error.http_status == 502
    assert events(out)[-1]["error"]["type"] == "upstream_error"


def test_an_oversized_event_is_refused() -> None:
    out, t = translate(b"data: " + b"x" * (5 * 1024 * 1024), ctx(), step=1 << 20)
    assert t.error is not None and b"malformed stream" in out


def test_done_is_reported_so_the_relay_can_stop_reading() -> None:
    t = P.new_stream_translator(ctx())
    t.feed((FIXTURES / "text_with_usage.sse").read_bytes())
    assert t.finished


def test_stream_usage_false_removes_the_clients_stream_options_too() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "stream_options" not in normalise_request(body, ctx(stream_usage=False))


def test_completion_with_object_arguments_gets_string_arguments() -> None:
    obj = orjson.loads((FIXTURES / "ollama_tool_completion.json").read_bytes())
    obj["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = {"city": "Oslo"}
    c = P.parse_response(orjson.dumps(obj), ctx(stream=False))
    fn = orjson.loads(c.body)["choices"][0]["message"]["tool_calls"][0]["function"]
    assert fn["arguments"] == '{"city":"Oslo"}'


@pytest.mark.parametrize("status", [503, 529, 500, 504])
def test_retry_hints_travel_with_5xx_answers_too(status: int) -> None:
    """SDKs retry 5xx as well as 429; the upstream's hint must reach them."""
    e = P.map_error(status, {"retry-after": "7", "retry-after-ms": "7000"}, b"{}")
    assert e.headers == {"retry-after": "7", "retry-after-ms": "7000"}


def test_429_code_is_openais_whatever_the_upstream_called_it() -> None:
    body = b'{"error": {"message": "slow down", "type": "requests", "code": "tokens"}}'
    assert P.map_error(429, {}, body).code == "rate_limit_exceeded"


def test_upstream_out_of_quota_keeps_its_429_and_says_so() -> None:
    body = b'{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",'
    body += b' "code": "insufficient_quota"}}'
    e = P.map_error(429, {"retry-after": "1"}, body)
    assert e.http_status == 429 and e.code == "insufficient_quota"


# ------------------------------------------- chunks shaped like the last (the fast path)


def _chunk(content: str, *, usage_null: bool, reason: str | None = None, cid: str = "c1") -> bytes:
    obj: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up-model",
        "system_fingerprint": "fp_x",
        "choices": [
            {"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": reason}
        ],
    }
    if usage_null:
        obj["usage"] = None
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _one_by_one(chunks: list[bytes], c: CallContext) -> list[bytes]:
    """What each chunk becomes through a translator that saw only it (the slow checks,
    never a learnt shape)."""
    return [P.new_stream_translator(c).feed(ch) for ch in chunks]


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("usage_null", [True, False])
def test_chunks_shaped_like_the_last_are_what_the_slow_checks_make_of_them(
    include_usage: bool, usage_null: bool
) -> None:
    """A stream's chunks after the first are matched against the first's bytes around
    its content; every one comes out as the full checks would have made it: the same
    bytes, or (a content the checks' needles match, such as "error") the same JSON."""
    contents = ["Hel", "lo", "", " wor", "ld", "error", "usage", "finish_reason"]
    contents += ["tool_calls", 'say "hi"', "back\\slash", "new\nline", "é ü 中文", "\u2028"]
    contents += ["}]},{", "x" * 500]
    chunks = [_chunk(x, usage_null=usage_null) for x in contents]
    chunks.append(_chunk("", usage_null=usage_null, reason="stop"))
    c = ctx(include_usage=include_usage)
    t = P.new_stream_translator(c)
    together = [t.feed(ch) for ch in chunks]
    alone = _one_by_one(chunks, c)
    for got, want in zip(together, alone, strict=True):
        assert got == want or events(got) == events(want)
    assert t._shape is not None  # the fast path was taken
    assert t._finished_choices == {0}  # the finishing chunk was not taken for an ordinary one


def test_a_chunk_of_another_shape_takes_the_full_checks() -> None:
    """Another id, a tool call, a finish: not the learnt shape, so the full checks run
    and the translator's state sees them."""
    c = ctx()
    t = P.new_stream_translator(c)
    assert t.feed(_chunk("a", usage_null=False)) == _chunk("a", usage_null=False)
    assert t.feed(_chunk("b", usage_null=False, cid="c2")) == _chunk(
        "b", usage_null=False, cid="c2"
    )
    call = {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}
    tool = {
        "id": "c2",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up-model",
        "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}],
    }
    t.feed(b"data: " + orjson.dumps(tool) + b"\n\n")
    assert t._tools  # seen by the slow path
    out = t.feed(_chunk("", usage_null=False, reason="stop", cid="c2"))
    assert events(out)[0]["choices"][0]["finish_reason"] == "tool_calls"


def test_bytes_around_a_content_that_hide_another_structure_are_not_taken_for_the_shape() -> None:
    """Same first and last bytes, but between them not one plain string: two choices,
    the first finishing. The quotes in between send it to the full checks, which see
    the finish."""
    c = ctx()
    t = P.new_stream_translator(c)
    t.feed(_chunk("a", usage_null=False))
    hidden = 'a"},"logprobs":null,"finish_reason":"stop"},{"index":1,"delta":{"content":"b'
    crafted = _chunk("a", usage_null=False).replace(
        b'"content":"a"', b'"content":"' + hidden.encode() + b'"'
    )
    t.feed(crafted)
    assert 0 in t._finished_choices
