"""The Anthropic provider: OpenAI bodies in, Messages bodies out; recorded Anthropic bytes in,
OpenAI objects and chunks out.

Every translated request is also held to the strict fake's checker
(`bench/fakes/anthropic_rules.py`), so a row that passes here is a body the real API
takes.
"""

from __future__ import annotations

import base64
import copy
import random
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.fakes.anthropic_rules import check_request
from gateway.config import AnthropicOptions
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.openai.sse import SSEDecoder
from gateway.providers.anthropic.legacy import (
    JSON_TOOL,
    JSON_VALUE_TOOL,
    AnthropicProvider,
    tool_id,
    translate_request,
)
from gateway.providers.base import CallContext, Deployment, Media

FIXTURES = Path(__file__).parent.parent / "fixtures" / "anthropic"
P = AnthropicProvider()
MODEL = "claude-sonnet-4-5-20250929"
CLIENT_MODEL = "claude"  # the deployment's model id: what answers name
REQUEST_ID = "chatcmpl-test"
CREATED = 1730000000

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def data_url(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64,{b64(raw)}"


def ctx(
    stream: bool = False,
    include_usage: bool = False,
    media: dict[str, Media] | None = None,
    response_format: str | None = None,
    **options: Any,
) -> CallContext:
    deployment = Deployment(
        model_id=CLIENT_MODEL,
        provider_name="anthropic",
        kind="anthropic",
        upstream_model=MODEL,
        api_key="sk-ant-upstream",
        options=AnthropicOptions(**{k: v for k, v in options.items() if k != "max_output_tokens"}),
        max_output_tokens=options.get("max_output_tokens"),
    )
    return CallContext(
        deployment, stream, include_usage, REQUEST_ID, CREATED, media or {}, response_format
    )


def user(content: Any = "hi") -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(cid: str, name: str = "get_weather", arguments: str = '{"city":"Paris"}') -> Any:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant_calls(*calls: Any, content: Any = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def tool(cid: str, content: Any = "sunny") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": cid, "content": content}


def fn_tool(name: str, parameters: Any = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, **extra}
    if parameters is not None:
        spec["parameters"] = parameters
    return {"type": "function", "function": spec}


WEATHER = fn_tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = fn_tool("get_time")


def translate(c: CallContext | None = None, **body: Any) -> dict[str, Any]:
    """The Anthropic body for an OpenAI body; it must pass the strict fake's checks."""
    body.setdefault("model", "claude")
    body.setdefault("messages", [user()])
    out = translate_request(body, c or ctx())
    check_request(out)
    return out


def refused(c: CallContext | None = None, **body: Any) -> InvalidRequest:
    body.setdefault("model", "claude")
    body.setdefault("messages", [user()])
    with pytest.raises(InvalidRequest) as info:
        translate_request(body, c or ctx())
    return info.value


# ---------------------------------------------------------------- request: D1/D2 table

ROUND_TRIP = [
    user("weather?"),
    assistant_calls(call("call_1"), call("call_2", "get_time", "")),
    tool("call_1"),
    tool("call_2", [{"type": "text", "text": "12:00"}]),
    user("thanks"),
]

REQUEST_ROWS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "system and developer go to top-level system, in order",
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                user("hi"),
                {"role": "developer", "content": [{"type": "text", "text": "use French"}]},
            ]
        },
        {
            "system": [
                {"type": "text", "text": "be brief"},
                {"type": "text", "text": "use French"},
            ],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        },
    ),
    ("max_tokens defaults to 4096", {}, {"max_tokens": 4096}),
    ("max_tokens from the client", {"max_tokens": 77}, {"max_tokens": 77}),
    (
        "max_completion_tokens wins over max_tokens",
        {"max_tokens": 77, "max_completion_tokens": 55},
        {"max_tokens": 55},
    ),
    ("null max fields are absent", {"max_tokens": None}, {"max_tokens": 4096}),
    (
        "consecutive user turns are merged",
        {"messages": [user("a"), user([{"type": "text", "text": "b"}])]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        },
    ),
    (
        "tool calls become tool_use after text; empty arguments become {}",
        {"messages": ROUND_TRIP, "tools": [WEATHER, TIME]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_2",
                            "content": [{"type": "text", "text": "12:00"}],
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ]
        },
    ),
    (
        "stop becomes stop_sequences without whitespace-only strings",
        {"stop": ["END", " ", "\n\n"]},
        {"stop_sequences": ["END"]},
    ),
    ("a single stop string", {"stop": "###"}, {"stop_sequences": ["###"]}),
    ("temperature above 1 is clamped", {"temperature": 1.7}, {"temperature": 1.0}),
    ("temperature within range is kept", {"temperature": 0.2}, {"temperature": 0.2}),
    ("top_p alone is kept", {"top_p": 0.9}, {"top_p": 0.9}),
    ("top_k extension is mapped", {"top_k": 40}, {"top_k": 40}),
    ("user becomes metadata.user_id", {"user": "u-123"}, {"metadata": {"user_id": "u-123"}}),
    (
        "safety_identifier wins over user",
        {"user": "u-1", "safety_identifier": "sid-9"},
        {"metadata": {"user_id": "sid-9"}},
    ),
    ("service_tier auto is kept", {"service_tier": "auto"}, {"service_tier": "auto"}),
    (
        "tool_choice auto",
        {"tools": [WEATHER], "tool_choice": "auto"},
        {"tool_choice": {"type": "auto"}},
    ),
    (
        "tool_choice none keeps the tools",
        {"tools": [WEATHER], "tool_choice": "none"},
        {"tool_choice": {"type": "none"}},
    ),
    (
        "tool_choice required becomes any",
        {"tools": [WEATHER], "tool_choice": "required"},
        {"tool_choice": {"type": "any"}},
    ),
    (
        "a named function becomes tool",
        {
            "tools": [WEATHER, TIME],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        },
        {"tool_choice": {"type": "tool", "name": "get_time"}},
    ),
    (
        "allowed_tools filters the tools",
        {
            "tools": [WEATHER, TIME],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
        },
        {
            "tools": [{"name": "get_time", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "any"},
        },
    ),
    (
        "parallel_tool_calls false without a choice adds auto",
        {"tools": [WEATHER], "parallel_tool_calls": False},
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
    ),
    (
        "parallel_tool_calls false with required",
        {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
        {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
    ),
    (
        "parallel_tool_calls false does not touch none",
        {"tools": [WEATHER], "tool_choice": "none", "parallel_tool_calls": False},
        {"tool_choice": {"type": "none"}},
    ),
    (
        "tools: description kept, strict dropped, type object added",
        {
            "tools": [
                fn_tool(
                    "lookup",
                    {"properties": {"q": {"type": "string"}}},
                    description="Look up",
                    strict=True,
                )
            ]
        },
        {
            "tools": [
                {
                    "name": "lookup",
                    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                    "description": "Look up",
                }
            ]
        },
    ),
    (
        "legacy functions and function_call",
        {
            "functions": [{"name": "get_time"}],
            "function_call": {"name": "get_time"},
        },
        {
            "tools": [{"name": "get_time", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "get_time"},
        },
    ),
    (
        "legacy function role answers the function_call",
        {
            "functions": [{"name": "get_time"}],
            "messages": [
                user("time?"),
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "get_time", "arguments": "{}"},
                },
                {"role": "function", "name": "get_time", "content": "noon"},
            ],
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "time?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_function_1",
                            "name": "get_time",
                            "input": {},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_function_1",
                            "content": "noon",
                        }
                    ],
                },
            ]
        },
    ),
    (
        "a history with tool calls but no tools gets definitions and none",
        {"messages": [*ROUND_TRIP]},
        {
            "tools": [
                {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}},
                {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
            ],
            "tool_choice": {"type": "none"},
        },
    ),
    (
        "image data URL becomes a base64 source",
        {
            "messages": [
                user(
                    [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}},
                    ]
                )
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": b64(PNG),
                            },
                        },
                    ],
                }
            ]
        },
    ),
    (
        "a mislabelled image is sent with the type its bytes show",
        {
            "messages": [
                user([{"type": "image_url", "image_url": {"url": data_url("image/jpg", PNG)}}])
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": b64(PNG),
                            },
                        }
                    ],
                }
            ]
        },
    ),
    (
        "image http URL becomes a url source; detail is dropped",
        {
            "messages": [
                user(
                    [
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                        }
                    ]
                )
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                        }
                    ],
                }
            ]
        },
    ),
    (
        "a PDF file becomes a document titled by its filename",
        {
            "messages": [
                user(
                    [
                        {
                            "type": "file",
                            "file": {
                                "filename": "report.pdf",
                                "file_data": data_url("application/pdf", PDF),
                            },
                        }
                    ]
                )
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": b64(PDF),
                            },
                            "title": "report.pdf",
                        }
                    ],
                }
            ]
        },
    ),
    (
        "bare base64 of a PDF is recognised",
        {"messages": [user([{"type": "file", "file": {"file_data": b64(PDF)}}])]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": b64(PDF),
                            },
                        }
                    ],
                }
            ]
        },
    ),
    (
        "a text file becomes a text document",
        {
            "messages": [
                user(
                    [
                        {
                            "type": "file",
                            "file": {"file_data": data_url("text/plain", "héllo".encode())},
                        }
                    ]
                )
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "héllo"},
                        }
                    ],
                }
            ]
        },
    ),
    (
        "reasoning_effort becomes a thinking budget above which max_tokens grows",
        {"reasoning_effort": "medium"},
        {"thinking": {"type": "enabled", "budget_tokens": 4096}, "max_tokens": 8192},
    ),
    (
        "the budget is capped below the client's maximum",
        {"reasoning_effort": "high", "max_completion_tokens": 3000},
        {"thinking": {"type": "enabled", "budget_tokens": 2999}, "max_tokens": 3000},
    ),
    (
        "a final assistant turn loses trailing whitespace",
        {"messages": [user("count"), {"role": "assistant", "content": "1, 2, "}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "count"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "1, 2,"}]},
            ]
        },
    ),
    (
        "an assistant refusal is replayed as text",
        {
            "messages": [
                user("a"),
                {"role": "assistant", "content": None, "refusal": "I can't."},
                user("b"),
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "I can't."}]},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
            ]
        },
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [r[1:] for r in REQUEST_ROWS], ids=[r[0] for r in REQUEST_ROWS]
)
def test_request_translation(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out = translate(**copy.deepcopy(fields))
    for key, value in expected.items():
        assert out[key] == value, key


@pytest.mark.parametrize(
    "fields",
    [
        {"reasoning_effort": "none"},
        {"reasoning_effort": "low", "max_tokens": 1024},  # no room for a 1024 budget
        {"reasoning_effort": "high", "messages": [*ROUND_TRIP[:4]], "tools": [WEATHER, TIME]},
        {"reasoning_effort": "low", "messages": [user(), {"role": "assistant", "content": "Sure"}]},
        {
            "reasoning_effort": "low",
            "messages": [*ROUND_TRIP, {"role": "assistant", "content": "The weather"}],
            "tools": [WEATHER, TIME],
        },
    ],
    ids=["none", "no room", "inside a tool loop", "prefill", "prefill after tools"],
)
def test_thinking_is_left_off(fields: dict[str, Any]) -> None:
    assert "thinking" not in translate(**fields)


def test_thinking_drops_temperature_and_top_k_and_keeps_a_high_top_p() -> None:
    out = translate(reasoning_effort="low", temperature=0.3, top_k=5, top_p=0.97)
    assert "temperature" not in out and "top_k" not in out
    assert out["top_p"] == 0.97
    assert "top_p" not in translate(reasoning_effort="low", top_p=0.5)


def test_dropped_fields_never_reach_anthropic() -> None:
    out = translate(
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"50256": -100},
        seed=7,
        logprobs=False,
        metadata={"k": "v"},
        store=True,
        prediction={"type": "content", "content": "x"},
        web_search_options={},
        prompt_cache_key="k",
        verbosity="low",
        service_tier="flex",
        stream_options=None,
        n=1,
        parallel_tool_calls=True,
        some_vendor_extension={"a": 1},
        messages=[{"role": "user", "content": "hi", "name": "alice"}],
    )
    assert set(out) == {"model", "max_tokens", "messages"}
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


@pytest.mark.parametrize(
    "value", ["alice@example.com", "+1 (555) 010-9999", "555-010-9999", "x" * 300]
)
def test_personal_or_oversized_user_ids_are_not_sent(value: str) -> None:
    assert "metadata" not in translate(user=value)


@pytest.mark.parametrize("value", ["12345678", "user_42", "9f86d081884c7d65"])
def test_opaque_user_ids_are_sent(value: str) -> None:
    assert translate(user=value)["metadata"] == {"user_id": value}


def test_default_max_tokens_option() -> None:
    assert translate(ctx(default_max_tokens=1000))["max_tokens"] == 1000


@pytest.mark.parametrize(
    ("fields", "max_tokens", "budget"),
    [
        ({"reasoning_effort": "max"}, 32000, 32000 - 4096),  # 32768 + 4096 would exceed
        ({"reasoning_effort": "xhigh"}, 16384 + 4096, 16384),  # fits: unchanged
        ({"reasoning_effort": "max", "max_tokens": 50000}, 32000, 31999),
        ({"reasoning_effort": "max", "max_tokens": 20000}, 20000, 19999),
        ({}, 4096, None),
        ({"max_completion_tokens": 40000}, 32000, None),
    ],
    ids=["shrunk", "fits", "client above cap", "client below cap", "default", "client max"],
)
def test_max_output_tokens_caps_max_tokens_budget_included(
    fields: dict[str, Any], max_tokens: int, budget: int | None
) -> None:
    out = translate(ctx(max_output_tokens=32000), **fields)
    assert out["max_tokens"] == max_tokens
    assert out.get("thinking", {}).get("budget_tokens") == budget


def test_max_output_tokens_leaves_thinking_off_when_no_budget_fits() -> None:
    out = translate(ctx(max_output_tokens=4096), reasoning_effort="low")
    assert "thinking" not in out and out["max_tokens"] == 4096
    small = translate(ctx(max_output_tokens=2000, default_max_tokens=8192))
    assert small["max_tokens"] == 2000


def test_model_is_the_upstream_model() -> None:
    assert translate(model="claude")["model"] == MODEL


def test_strict_tools_are_sent_with_native_structured_output() -> None:
    tools = [fn_tool("f", {"type": "object", "properties": {}}, strict=True)]
    assert translate(ctx(structured_output="native"), tools=tools)["tools"][0]["strict"] is True


def test_fetched_media_is_sent_inline() -> None:
    url = "https://img.example.com/a.png"
    media = {url: Media("image/png; charset=binary", PNG)}
    msgs = [user([{"type": "image_url", "image_url": {"url": url}}])]
    out = translate(ctx(fetch_media=True, media=media), messages=msgs)
    source = out["messages"][0]["content"][0]["source"]
    assert source == {"type": "base64", "media_type": "image/png", "data": b64(PNG)}


def test_media_urls_only_when_fetching_is_on() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "https://a.example/x.png"}},
        {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}},
        {"type": "image_url", "image_url": {"url": "https://a.example/x.png"}},
        {"type": "image_url", "image_url": {"url": "http://b.example/y.gif"}},
    ]
    body = {"model": "claude", "messages": [user(parts)]}
    assert P.media_urls(body, ctx()) == []
    assert P.media_urls(body, ctx(fetch_media=True)) == [
        "https://a.example/x.png",
        "http://b.example/y.gif",
    ]


def test_unsafe_tool_call_ids_are_rewritten_the_same_way_on_both_sides() -> None:
    weird = "call:1/ä"
    out = translate(messages=[user(), assistant_calls(call(weird)), tool(weird)], tools=[WEATHER])
    use_id = out["messages"][1]["content"][0]["id"]
    assert use_id == tool_id(weird) == out["messages"][2]["content"][0]["tool_use_id"]
    assert use_id.startswith("call_1__")
    assert tool_id("call:1/ä") == use_id  # deterministic
    assert tool_id("call:1/ö") != use_id  # distinct ids stay distinct
    assert tool_id("toolu_01abc") == "toolu_01abc"


def test_ids_reused_across_turns_are_made_unique_on_both_sides() -> None:
    """Clients numbering calls per turn (call_0, ...) repeat ids; Anthropic needs them unique."""
    messages = [
        user(),
        assistant_calls(call("call_0"), call("call_1", "get_time", "")),
        tool("call_1", "noon"),
        tool("call_0"),
        assistant_calls(call("call_0", arguments='{"city":"Rome"}')),
        tool("call_0", "rain"),
        user("thanks"),
    ]
    out = translate(messages=messages, tools=[WEATHER, TIME])
    first, second = out["messages"][1]["content"], out["messages"][3]["content"]
    assert [b["id"] for b in first] == ["call_0", "call_1"]
    new_id = second[0]["id"]
    assert new_id == tool_id("call_0#3") and new_id.startswith("call_0_3_")
    results = out["messages"][4]["content"]
    assert results[0] == {"type": "tool_result", "tool_use_id": new_id, "content": "rain"}
    assert [b["tool_use_id"] for b in out["messages"][2]["content"]] == ["call_1", "call_0"]
    assert translate(messages=messages, tools=[WEATHER, TIME]) == out  # deterministic


def test_build_request_url_headers_and_body() -> None:
    body = {"model": "claude", "messages": [user()], "stream": True}
    snapshot = copy.deepcopy(body)
    req = P.build_request(body, ctx(stream=True, api_version="2099-01-01"))
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-upstream"
    assert req.headers["anthropic-version"] == "2099-01-01"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "text/event-stream"
    assert "authorization" not in {k.lower() for k in req.headers}
    assert orjson.loads(req.body) == req.payload
    assert req.payload is not None and req.payload["stream"] is True
    assert req.stream is True
    assert body == snapshot  # the client's body is not mutated


def test_build_request_base_url_default_version_and_extra_headers() -> None:
    c = ctx()
    c.deployment = Deployment(
        model_id="claude",
        provider_name="a",
        kind="anthropic",
        upstream_model=MODEL,
        base_url="http://127.0.0.1:9/v1/",
        headers={"anthropic-beta": "x-2025"},
        options=AnthropicOptions(),
    )
    req = P.build_request({"model": "claude", "messages": [user()]}, c)
    assert req.url == "http://127.0.0.1:9/v1/messages"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["anthropic-beta"] == "x-2025"
    assert "x-api-key" not in req.headers
    assert req.payload is not None and "stream" not in req.payload


# ---------------------------------------------------------------- request: response_format

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}


def json_schema(schema: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, **extra}}


def test_json_schema_becomes_a_forced_tool() -> None:
    out = translate(response_format=json_schema(SCHEMA, description="A person."))
    assert out["tools"] == [
        {
            "name": JSON_TOOL,
            "description": out["tools"][0]["description"],
            "input_schema": SCHEMA,
        }
    ]
    assert out["tools"][0]["description"].startswith("A person. ")
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_json_object_becomes_a_forced_free_form_tool() -> None:
    out = translate(response_format={"type": "json_object"})
    assert out["tools"][0]["name"] == JSON_TOOL
    assert out["tools"][0]["input_schema"]["type"] == "object"
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_non_object_schema_is_wrapped_with_its_definitions_at_the_root() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "array",
        "items": {"$ref": "#/$defs/color"},
        "$defs": {"color": {"type": "string"}},
    }
    out = translate(response_format=json_schema(schema))
    assert out["tools"][0]["name"] == JSON_VALUE_TOOL
    assert out["tools"][0]["input_schema"] == {
        "type": "object",
        "$defs": {"color": {"type": "string"}},
        "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/color"}}},
        "required": ["value"],
    }
    assert out["tool_choice"] == {"type": "tool", "name": JSON_VALUE_TOOL}


def test_json_mode_with_client_tools_lets_the_model_pick_a_tool_or_answer() -> None:
    out = translate(tools=[WEATHER], response_format=json_schema(SCHEMA))
    assert [t["name"] for t in out["tools"]] == ["get_weather", JSON_TOOL]
    assert out["tool_choice"] == {"type": "any"}
    none = translate(tools=[WEATHER], tool_choice="none", response_format=json_schema(SCHEMA))
    assert none["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_native_structured_output_uses_output_config() -> None:
    out = translate(ctx(structured_output="native"), response_format=json_schema(SCHEMA))
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "tools" not in out and "tool_choice" not in out
    fallback = translate(ctx(structured_output="native"), response_format={"type": "json_object"})
    assert fallback["tools"][0]["name"] == JSON_TOOL


ALLOW_NONE = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}


@pytest.mark.parametrize(
    "fields",
    [
        {"tool_choice": "auto"},
        {"tool_choice": "required"},
        {"tool_choice": "none"},
        {"tool_choice": "auto", "tools": []},
        {"tool_choice": "auto", "tools": [], "parallel_tool_calls": False},
        {"function_call": "auto"},
        {"function_call": "none"},
        {"tools": [WEATHER], "tool_choice": ALLOW_NONE},
    ],
    ids=[
        "auto",
        "required",
        "none",
        "auto, tools []",
        "auto, tools [], no parallel calls",
        "function_call auto",
        "function_call none",
        "allowed_tools listing none",
    ],
)
def test_no_tool_choice_is_sent_without_tools(fields: dict[str, Any]) -> None:
    out = translate(**fields)  # the strict fake refuses a tool_choice without tools
    assert "tools" not in out and "tool_choice" not in out


def test_a_choice_with_only_history_tools_is_none() -> None:
    out = translate(messages=[*ROUND_TRIP], tool_choice="auto", tools=[])
    assert out["tool_choice"] == {"type": "none"} and len(out["tools"]) == 2
    json_mode = translate(tool_choice="required", response_format={"type": "json_object"})
    assert [t["name"] for t in json_mode["tools"]] == [JSON_TOOL]
    assert json_mode["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_response_format_text_changes_nothing() -> None:
    assert set(translate(response_format={"type": "text"})) == {"model", "max_tokens", "messages"}


# ---------------------------------------------------------------- request: refusals

REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("n above 1", {"n": 2}, "n"),
    ("logprobs", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    (
        "audio output",
        {"modalities": ["text", "audio"], "audio": {"format": "wav", "voice": "alloy"}},
        "modalities",
    ),
    (
        "audio input",
        {
            "messages": [
                user(
                    [
                        {"type": "text", "text": "listen"},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    ]
                )
            ]
        },
        "messages[0].content[1].input_audio",
    ),
    (
        "file ids",
        {"messages": [user([{"type": "file", "file": {"file_id": "file-abc"}}])]},
        "messages[0].content[0].file.file_id",
    ),
    (
        "an image type Anthropic does not read",
        {
            "messages": [
                user([{"type": "image_url", "image_url": {"url": data_url("image/bmp", b"BM00")}}])
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        "image bytes that are no image",
        {
            "messages": [
                user([{"type": "image_url", "image_url": {"url": data_url("image/png", b"nope")}}])
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        "invalid base64",
        {
            "messages": [
                user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}])
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        "a text file that is not UTF-8",
        {
            "messages": [
                user([{"type": "file", "file": {"file_data": data_url("text/plain", b"\xff\xfe")}}])
            ]
        },
        "messages[0].content[0].file.file_data",
    ),
    (
        "a file of another type",
        {
            "messages": [
                user([{"type": "file", "file": {"file_data": data_url("audio/wav", b"RIFF")}}])
            ]
        },
        "messages[0].content[0].file.file_data",
    ),
    (
        "custom tools",
        {"tools": [{"type": "custom", "custom": {"name": "grep"}}]},
        "tools[0]",
    ),
    (
        "custom tool calls in the history",
        {
            "messages": [
                user(),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "custom", "custom": {"name": "grep", "input": "x"}}
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0]",
    ),
    (
        "tool arguments that are not JSON",
        {"messages": [user(), assistant_calls(call("c1", arguments="{oops")), tool("c1")]},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "tool arguments that are not an object",
        {"messages": [user(), assistant_calls(call("c1", arguments="[1]")), tool("c1")]},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "a tool result without a call",
        {"messages": [user(), tool("c9")]},
        "messages[1].tool_call_id",
    ),
    (
        "a tool result for a call two turns back",
        {
            "messages": [
                user(),
                assistant_calls(call("c1")),
                tool("c1"),
                {"role": "assistant", "content": "ok"},
                tool("c1"),
            ]
        },
        "messages[4].tool_call_id",
    ),
    (
        "a tool call without a result",
        {"messages": [user(), assistant_calls(call("c1"), call("c2")), tool("c1")]},
        "messages[1].tool_calls[1].id",
    ),
    (
        "a final assistant message with tool calls",
        {"messages": [user(), assistant_calls(call("c1"))]},
        "messages[1].tool_calls[0].id",
    ),
    (
        "duplicate tool call ids in one turn",
        {"messages": [user(), assistant_calls(call("c1"), call("c1")), tool("c1")]},
        "messages[1].tool_calls[1].id",
    ),
    (
        "duplicate tool call ids in one turn, the id used before",
        {
            "messages": [
                user(),
                assistant_calls(call("c1")),
                tool("c1"),
                assistant_calls(call("c1"), call("c1")),
                tool("c1"),
            ]
        },
        "messages[3].tool_calls[1].id",
    ),
    (
        "allowed_tools required listing none of the tools",
        {
            "tools": [WEATHER],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "required", "tools": []},
            },
        },
        "tool_choice.allowed_tools.tools",
    ),
    (
        "duplicate tool results",
        {"messages": [user(), assistant_calls(call("c1")), tool("c1"), tool("c1")]},
        "messages[3].tool_call_id",
    ),
    (
        "the reserved tool name",
        {"tools": [fn_tool(JSON_TOOL)]},
        "tools[0].function.name",
    ),
    ("duplicate tool names", {"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    (
        "parameters that are not an object schema",
        {"tools": [fn_tool("f", {"type": "array"})]},
        "tools[0].function",
    ),
    (
        "a conversation of system messages only",
        {"messages": [{"role": "system", "content": "you are helpful"}]},
        "messages",
    ),
    (
        "a conversation of blank messages only",
        {"messages": [user(" "), {"role": "assistant", "content": ""}]},
        "messages",
    ),
    (
        "a function message without a function call",
        {"messages": [user(), {"role": "function", "name": "f", "content": "x"}]},
        "messages[1]",
    ),
    ("a top_k that is not a positive integer", {"top_k": "many"}, "top_k"),
]


@pytest.mark.parametrize(
    ("fields", "param"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_field(fields: dict[str, Any], param: str) -> None:
    error = refused(**fields)
    assert error.param == param
    assert error.http_status == 400 and error.type == "invalid_request_error"


# ---------------------------------------------------------------- E pitfalls (requests)


def test_e6_no_empty_text_blocks() -> None:
    out = translate(
        messages=[
            {"role": "system", "content": ""},
            user([{"type": "text", "text": ""}, {"type": "text", "text": "question"}]),
            assistant_calls(call("c1"), content=""),
            tool("c1", ""),
            user("  \n"),
            {"role": "assistant", "content": [{"type": "text", "text": " "}]},
            user("again"),
        ],
        tools=[WEATHER],
    )
    assert "system" not in out
    blocks = [b for m in out["messages"] for b in m["content"]]
    assert all(b["text"].strip() for b in blocks if b["type"] == "text")
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1"},
        {"type": "text", "text": "again"},
    ]


def test_e7_tool_results_go_together_first_in_the_next_user_turn() -> None:
    out = translate(
        messages=[
            user("weather in Paris and Rome?"),
            assistant_calls(call("c1"), call("c2", arguments='{"city":"Rome"}'), content="Sure."),
            user("take your time"),  # a client interleaving a user message
            tool("c2", "rain"),
            tool("c1", "sun"),
            user([{"type": "text", "text": "and then?"}]),
        ],
        tools=[WEATHER],
    )
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    results = out["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text", "text"]
    assert [b.get("tool_use_id") for b in results[:2]] == ["c2", "c1"]
    assert [b["text"] for b in results[2:]] == ["take your time", "and then?"]


def test_e12_temperature_and_top_p_are_never_sent_together() -> None:
    out = translate(temperature=0.5, top_p=0.9)
    assert out["temperature"] == 0.5 and "top_p" not in out


def test_e13_thinking_never_comes_with_a_forced_tool() -> None:
    out = translate(reasoning_effort="low", tools=[WEATHER], tool_choice="required")
    assert out["thinking"]["type"] == "enabled"
    assert out["tool_choice"] == {"type": "auto"}
    named = translate(
        reasoning_effort="low",
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert named["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    json_mode = translate(reasoning_effort="low", response_format=json_schema(SCHEMA))
    assert json_mode["tools"][0]["name"] == JSON_TOOL
    assert json_mode["tool_choice"] == {"type": "auto"}


# ---------------------------------------------------------------- responses


def parse(name: str, c: CallContext | None = None) -> tuple[dict[str, Any], Any]:
    completion = P.parse_response((FIXTURES / name).read_bytes(), c or ctx())
    return orjson.loads(completion.body), completion.usage


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


# ---------------------------------------------------------------- streams


def run(raw: bytes, c: CallContext, splits: list[int] | None = None) -> tuple[bytes, Any]:
    """Feed `raw` cut at `splits` (None: whole), then close unless an error ended it."""
    t = P.new_stream_translator(c)
    cuts = [0, *(splits or []), len(raw)]
    out = b"".join(t.feed(raw[a:b]) for a, b in pairwise(cuts))
    if t.error is None:
        out += t.close()
    return out, t


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


# ---------------------------------------------------------------- errors

ERRORS: list[tuple[str, int, dict[str, str], type[GatewayError], int, str | None]] = [
    ("error_400.json", 400, {}, UpstreamRejected, 400, "invalid_request_error"),
    ("error_400_prompt_too_long.json", 400, {}, UpstreamRejected, 400, "context_length_exceeded"),
    ("error_401.json", 401, {}, UpstreamRejected, 401, "upstream_auth_failed"),
    ("error_402.json", 402, {}, UpstreamRejected, 402, "upstream_billing_error"),
    ("error_403.json", 403, {}, UpstreamRejected, 403, "upstream_auth_failed"),
    ("error_404.json", 404, {}, UpstreamRejected, 404, "model_not_found"),
    ("error_413.json", 413, {}, UpstreamRejected, 413, "request_too_large"),
    ("error_429.json", 429, {"retry-after": "17"}, RateLimited, 429, "rate_limit_exceeded"),
    ("error_500.json", 500, {}, UpstreamError, 502, "api_error"),
    ("error_504.json", 504, {}, UpstreamTimeout, 504, "upstream_timeout"),
    ("error_529.json", 529, {"retry-after": "3"}, UpstreamUnavailable, 503, "overloaded_error"),
]


@pytest.mark.parametrize(
    ("name", "status", "headers", "cls", "wire", "code"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_error_mapping(
    name: str,
    status: int,
    headers: dict[str, str],
    cls: type[GatewayError],
    wire: int,
    code: str | None,
) -> None:
    e = P.map_error(status, headers, (FIXTURES / name).read_bytes())
    assert type(e) is cls
    assert e.http_status == wire and e.code == code
    assert set(e.to_dict()["error"]) == {"message", "type", "param", "code"}


def test_429_keeps_retry_after_and_the_message() -> None:
    e = P.map_error(429, {"retry-after": "17"}, (FIXTURES / "error_429.json").read_bytes())
    assert e.headers["retry-after"] == "17"
    assert e.message.startswith("This request would exceed the rate limit")


def test_4xx_keep_the_upstream_message_and_auth_failures_do_not() -> None:
    e = P.map_error(400, {}, (FIXTURES / "error_400.json").read_bytes())
    assert e.message == "messages.1.content.0: text content blocks must be non-empty"
    assert e.type == "invalid_request_error"
    auth = P.map_error(401, {}, (FIXTURES / "error_401.json").read_bytes())
    assert "x-api-key" not in auth.message


@pytest.mark.parametrize("raw", [b"<html>502 Bad Gateway</html>", b"", b"[]"])
def test_error_bodies_that_are_not_anthropic_errors(raw: bytes) -> None:
    e = P.map_error(502, {}, raw)
    assert isinstance(e, UpstreamError) and e.http_status == 502
    assert e.message
