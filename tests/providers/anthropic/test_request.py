"""Anthropic requests: OpenAI bodies in, Messages bodies out.

Every translated request is also held to the strict fake's checker
(`bench/fakes/anthropic_rules.py`), so a row that passes here is a body the real API
takes.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from gateway.config import AnthropicOptions
from gateway.providers.anthropic.messages import tool_id
from gateway.providers.anthropic.request import JSON_TOOL, JSON_VALUE_TOOL
from gateway.providers.base import Deployment, Media
from tests.providers.anthropic.helpers import (
    MODEL,
    PDF,
    PNG,
    TIME,
    WEATHER,
    P,
    assistant_calls,
    b64,
    call,
    ctx,
    data_url,
    fn_tool,
    refused,
    tool,
    translate,
    user,
)

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


def test_json_mode_beside_history_only_tools_leaves_thinking_off() -> None:
    """Found by `bench conform`: with thinking the JSON tool cannot be forced, so the
    model could call a stub of a tool the request never declared (E13)."""
    out = translate(
        messages=[*ROUND_TRIP, user("now answer in JSON")],
        reasoning_effort="minimal",
        response_format=json_schema(SCHEMA),
    )
    assert "thinking" not in out
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    # Without a tool history there are no stubs: thinking stays (test_e13_...).
