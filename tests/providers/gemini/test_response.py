"""Gemini answers: recorded generateContent bodies in, OpenAI chat.completion out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import (
    GatewayError,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.providers.base import CallContext
from tests.providers.gemini.helpers import (
    FIXTURES,
    P,
    ctx,
    events,
    translate,
)

# ================================================================ non-streamed responses


def parse(name: str, c: CallContext | None = None) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(
        P.parse_response((FIXTURES / name).read_bytes(), c or ctx()).body
    )
    return out


def test_text_response() -> None:
    completion = P.parse_response((FIXTURES / "text.json").read_bytes(), ctx())
    out = orjson.loads(completion.body)
    assert out == {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1730000000,
        "model": "gem",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The sky is blue because of Rayleigh scattering.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 9,
            "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "system_fingerprint": None,
    }
    assert completion.usage == out["usage"]


def test_tool_call_response_and_usage_counts_tool_prompt_and_thoughts() -> None:
    out = parse("tool_call.json")
    message = out["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris","unit":"c"}',
    }
    usage = out["usage"]
    assert usage["prompt_tokens"] == 33 and usage["completion_tokens"] == 52
    assert usage["total_tokens"] == 85
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 40


def test_parallel_calls_keep_text_gemini_ids_and_empty_args() -> None:
    out = parse("parallel_tools.json")
    message = out["choices"][0]["message"]
    assert message["content"] == "Checking both."
    ids = [c["id"] for c in message["tool_calls"]]
    assert ids[0].startswith("gid_k3r9a1bz__sig_") and ids[1] == "gid_m0x7q2cd"
    assert message["tool_calls"][1]["function"]["arguments"] == "{}"


@pytest.mark.parametrize("reasoning", [True, False])
def test_thought_parts_only_with_reasoning_output(reasoning: bool) -> None:
    message = parse("thinking.json", ctx(reasoning_output=reasoning))["choices"][0]["message"]
    assert message["content"] == "2 + 2 = 4."
    assert ("reasoning_content" in message) is reasoning
    if reasoning:
        assert message["reasoning_content"] == "**Adding**\nTwo and two."


def test_blocked_prompt_is_content_filter_with_null_content() -> None:
    out = parse("blocked.json")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]
    assert out["usage"]["prompt_tokens"] == 12


def test_candidates_become_choices_with_their_own_finish() -> None:
    out = parse("two_candidates.json")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "Red.", "stop"),
        (1, "Blue", "length"),
    ]


def test_safety_finish_is_content_filter() -> None:
    out = parse("safety.json")
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["choices"][0]["message"]["content"] == ""


def test_logprobs_result_maps_to_openai_logprobs() -> None:
    logprobs = parse("logprobs.json")["choices"][0]["logprobs"]
    assert logprobs["content"][0] == {
        "token": "Hi",
        "logprob": -0.1,
        "bytes": [72, 105],
        "top_logprobs": [
            {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
            {"token": "Hello", "logprob": -2.4, "bytes": list(b"Hello")},
        ],
    }
    assert len(logprobs["content"]) == 2


def test_malformed_function_call_is_an_upstream_error_not_an_empty_success() -> None:
    with pytest.raises(UpstreamError) as info:
        parse("malformed_function_call.json")
    assert info.value.http_status == 502
    assert info.value.code == "upstream_malformed_function_call"


def test_error_object_in_a_200_body_is_mapped() -> None:
    body = b'{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}'
    with pytest.raises(UpstreamUnavailable) as info:
        P.parse_response(body, ctx())
    assert info.value.http_status == 503


@pytest.mark.parametrize("body", [b"not json", b"[1]", b"{}"])
def test_garbage_bodies_are_upstream_errors(body: bytes) -> None:
    with pytest.raises(UpstreamError):
        P.parse_response(body, ctx())


def candidate(*parts: Any, **fields: Any) -> dict[str, Any]:
    return {"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP", **fields}


# Upstream JSON with wrong types in candidates, parts, logprobs, usageMetadata and errors.
ODD: list[tuple[str, dict[str, Any]]] = [
    ("candidates_not_a_list", {"candidates": {"0": candidate({"text": "a"})}}),
    ("candidates_not_objects", {"candidates": [1, None, "x"]}),
    ("content_not_an_object", {"candidates": [{"content": "hi", "finishReason": "STOP"}]}),
    ("parts_not_a_list", {"candidates": [{"content": {"parts": {"text": "a"}}}]}),
    ("parts_not_objects", {"candidates": [candidate(1, "a", None, [], {"text": "ok"})]}),
    ("text_not_a_string", {"candidates": [candidate({"text": 5}, {"text": None, "thought": 1})]}),
    (
        "function_call_of_odd_types",
        {
            "candidates": [
                candidate(
                    {"functionCall": {"name": 7, "args": [1], "id": {}}, "thoughtSignature": 5},
                    {"functionCall": "f"},
                    {"functionCall": {"name": ["g"], "args": "x", "id": 3}},
                )
            ]
        },
    ),
    ("finish_reason_not_a_string", {"candidates": [candidate({"text": "a"}, finishReason=3)]}),
    ("index_not_an_int", {"candidates": [candidate({"text": "a"}, index="0")]}),
    ("index_a_bool", {"candidates": [candidate({"text": "a"}, index=True)]}),
    (
        "logprobs_not_lists",
        {
            "candidates": [
                candidate(
                    {"text": "a"},
                    logprobsResult={"chosenCandidates": 5, "topCandidates": {"a": 1}},
                )
            ]
        },
    ),
    (
        "logprob_tokens_of_odd_types",
        {
            "candidates": [
                candidate(
                    {"text": "a"},
                    logprobsResult={
                        "chosenCandidates": [{"token": 5, "logProbability": "x"}, 3, {}],
                        "topCandidates": [{"candidates": {"token": "a"}}, 1, {"candidates": 2}],
                    },
                )
            ]
        },
    ),
    ("usage_not_an_object", {"candidates": [candidate({"text": "a"})], "usageMetadata": [1]}),
    (
        "usage_counts_of_odd_types",
        {
            "candidates": [candidate({"text": "a"})],
            "usageMetadata": {
                "promptTokenCount": "3",
                "candidatesTokenCount": -5,
                "thoughtsTokenCount": 2**64 - 1,
                "toolUsePromptTokenCount": 2**63,
                "cachedContentTokenCount": True,
                "promptTokensDetails": {"modality": "AUDIO", "tokenCount": 1},
                "candidatesTokensDetails": [1, {"modality": "AUDIO", "tokenCount": 1.5}],
            },
        },
    ),
    ("prompt_feedback_not_an_object", {"promptFeedback": "SAFETY"}),
    ("error_of_odd_types", {"error": {"code": "x", "message": 5, "status": [], "details": "y"}}),
    ("error_a_string", {"error": "boom"}),
    ("error_a_list", {"error": [{"code": 429}]}),
]


def assert_openai_types(choice: dict[str, Any]) -> None:
    """A choice (or chunk choice) whose fields have the types OpenAI clients expect."""
    assert isinstance(choice["index"], int)
    message = choice.get("message") or choice["delta"]
    for key in ("content", "reasoning_content"):
        assert isinstance(message.get(key), str | None)
    for call in message.get("tool_calls") or ():
        assert isinstance(call["id"], str)
        assert isinstance(call["function"]["name"], str)
        assert isinstance(orjson.loads(call["function"]["arguments"]), dict)
    for token in (choice.get("logprobs") or {}).get("content") or ():
        for entry in (token, *token["top_logprobs"]):
            assert isinstance(entry["token"], str) and isinstance(entry["logprob"], float)


def assert_usage_types(usage: dict[str, Any] | None) -> None:
    if usage is None:
        return
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert isinstance(usage[key], int) and 0 <= usage[key] < 2**33
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("obj", [o for _, o in ODD], ids=[n for n, _ in ODD])
def test_odd_upstream_json_is_read_leniently_or_a_502_never_a_crash(obj: dict[str, Any]) -> None:
    raw = orjson.dumps(obj)
    try:
        completion = P.parse_response(raw, ctx(reasoning_output=True))
    except GatewayError as error:
        assert error.http_status == 502, error
    else:
        out = orjson.loads(completion.body)
        assert out["choices"]
        for choice in out["choices"]:
            assert_openai_types(choice)
        assert_usage_types(out["usage"])
    c = ctx(stream=True, include_usage=True, reasoning_output=True)
    streamed, t = translate(b"data: " + raw + b"\r\n\r\n", c)
    evs = events(streamed)
    if t.error is not None:
        assert t.error.http_status == 502 and "error" in evs[-1]
        assert t.close() == b""
    else:
        assert evs[-1] == b"[DONE]"
    for ev in evs:
        if isinstance(ev, dict) and "choices" in ev:
            for choice in ev["choices"]:
                assert_openai_types(choice)
            assert_usage_types(ev.get("usage"))
    assert_usage_types(t.usage)


def test_arguments_too_deep_to_serialize_are_a_502() -> None:
    # orjson reads 1024 levels but writes 254: the arguments cannot become a JSON string.
    args = b'{"a":' * 300 + b"1" + b"}" * 300
    part = b'{"functionCall":{"name":"f","args":' + args + b"}}"
    raw = b'{"candidates":[{"content":{"parts":[' + part + b']},"finishReason":"STOP"}]}'
    with pytest.raises(UpstreamError) as info:
        P.parse_response(raw, ctx())
    assert info.value.http_status == 502
    out, t = translate(b"data: " + raw + b"\r\n\r\n", ctx(stream=True))
    assert t.error is not None and t.error.http_status == 502
    assert "unexpected shape" in events(out)[-1]["error"]["message"]


def test_usage_counts_that_are_not_int32_count_zero() -> None:
    obj = dict(ODD)["usage_counts_of_odd_types"]
    usage = P.parse_response(orjson.dumps(obj), ctx()).usage
    assert usage is not None
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (0, 0, 0)
    assert usage["completion_tokens_details"]["audio_tokens"] == 0
