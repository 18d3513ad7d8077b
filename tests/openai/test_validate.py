"""Table-driven tests of gateway.openai.validate: valid shapes pass, each rule names its path."""

from __future__ import annotations

import ast
import copy
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.openai.validate import MAX_DEPTH, validate_chat_request
from tests.paths import REPO

USER = {"role": "user", "content": "Hello"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
PNG = "data:image/png;base64,iVBORw0KGgo="


def req(*messages: Any, **fields: Any) -> dict[str, Any]:
    """A request body: `model` first, then messages (default one user turn), then fields."""
    return {"model": "gpt-4o", "messages": list(messages) or [dict(USER)], **fields}


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` containers deep (1 is `{}`)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def tool_round_trip(assistant: dict[str, Any]) -> dict[str, Any]:
    return req(
        USER,
        assistant,
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        tools=[WEATHER],
    )


VALID: dict[str, dict[str, Any]] = {
    "minimal": req(),
    "system-developer-text-parts": req(
        {"role": "system", "content": "Be brief.", "name": "sys"},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
        USER,
    ),
    "multimodal-user": req(
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "HTTP://EXAMPLE.COM/b.jpg?x=1"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
                {"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}},
            ],
        }
    ),
    "assistant-text-and-refusal-parts": req(
        USER,
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "No."}, {"type": "refusal", "refusal": "Sorry"}],
        },
        USER,
    ),
    "tool-round-trip-content-null": tool_round_trip(
        {"role": "assistant", "content": None, "tool_calls": [CALL]}
    ),
    "tool-round-trip-content-absent": tool_round_trip({"role": "assistant", "tool_calls": [CALL]}),
    "tool-result-as-text-parts": req(
        USER,
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "18C"}]},
        tools=[WEATHER],
    ),
    "assistant-as-dumped-by-sdk": tool_round_trip(
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
            "audio": None,
            "function_call": None,
            "tool_calls": [CALL],
        }
    ),
    "assistant-refusal-only": req(USER, {"role": "assistant", "refusal": "I can't."}, USER),
    "assistant-audio-reference": req(USER, {"role": "assistant", "audio": {"id": "aud_1"}}, USER),
    "tools-all-choices": req(
        tools=[
            WEATHER,
            {"type": "function", "function": {"name": "no-params_2"}},
            {"type": "custom", "custom": {"name": "code exec", "format": {"type": "text"}}},
        ],
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [
                    {"type": "function", "function": {"name": "get_weather"}},
                    {"type": "custom", "custom": {"name": "code exec"}},
                ],
            },
        },
        parallel_tool_calls=False,
    ),
    "tool-choice-named": req(
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    ),
    "tool-choice-required": req(tools=[WEATHER], tool_choice="required"),
    "tool-choice-none-without-tools": req(tool_choice="none"),
    "tool-choice-auto-without-tools": req(tool_choice="auto"),
    "empty-tools": req(tools=[], tool_choice="auto"),
    "custom-tool-call-round-trip": req(
        USER,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "custom", "custom": {"name": "code exec", "input": "ls"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        tools=[{"type": "custom", "custom": {"name": "code exec"}}],
        tool_choice={"type": "custom", "custom": {"name": "code exec"}},
    ),
    "json-schema": req(
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "weather_report",
                "description": "A report",
                "schema": {"type": "object", "properties": {"t": {"type": "number"}}},
                "strict": True,
            },
        }
    ),
    "json-object": req(response_format={"type": "json_object"}),
    "text-format": req(response_format={"type": "text"}),
    "streaming-with-usage": req(
        stream=True, stream_options={"include_usage": True, "include_obfuscation": False}
    ),
    "stream-false-options-null": req(stream=False, stream_options=None),
    "nulls-where-nullable": req(
        stream=None,
        stream_options=None,
        max_tokens=None,
        max_completion_tokens=None,
        temperature=None,
        top_p=None,
        n=None,
        stop=None,
        presence_penalty=None,
        frequency_penalty=None,
        logit_bias=None,
        logprobs=None,
        top_logprobs=None,
        seed=None,
        metadata=None,
        store=None,
        service_tier=None,
        reasoning_effort=None,
        verbosity=None,
        modalities=None,
        audio=None,
        prediction=None,
    ),
    "scalars-at-bounds-low": req(
        temperature=0,
        top_p=0,
        n=1,
        presence_penalty=-2,
        frequency_penalty=-2.0,
        max_tokens=1,
        max_completion_tokens=1,
        seed=-(2**63),
        logprobs=True,
        top_logprobs=0,
        logit_bias={"50256": -100},
    ),
    "scalars-at-bounds-high": req(
        temperature=2.0,
        top_p=1,
        n=128,
        presence_penalty=2,
        frequency_penalty=1.5,
        max_tokens=1_000_000,
        seed=2**63 - 1,
        logprobs=True,
        top_logprobs=20,
        logit_bias={"1": 100, "2": 0},
    ),
    "stop-string": req(stop="\n"),
    "stop-four-strings": req(stop=["a", "b", "c", ""]),
    "metadata-limits": req(metadata={f"k{i:02}": "v" * 512 for i in range(15)} | {"x" * 64: ""}),
    "enums": req(
        reasoning_effort="minimal",
        verbosity="high",
        service_tier="flex",
        store=True,
        user="u-1",
        safety_identifier="s" * 64,
        prompt_cache_key="pck",
    ),
    "audio-output": req(modalities=["text", "audio"], audio={"format": "mp3", "voice": "alloy"}),
    "prediction": req(
        prediction={"type": "content", "content": [{"type": "text", "text": "draft"}]}
    ),
    "web-search": req(
        web_search_options={
            "search_context_size": "low",
            "user_location": {"type": "approximate", "approximate": {"city": "Paris"}},
        }
    ),
    "legacy-functions": req(
        USER,
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": None},
        functions=[{"name": "f", "parameters": {"type": "object"}}],
        function_call={"name": "f"},
    ),
    "vendor-extensions": req(
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            "x_meta": {"a": [1, 2]},
        },
        top_k=40,
        repetition_penalty=1.1,
        extra_body={"guided_json": {"type": "object"}},
    ),
    "empty-string-content": req({"role": "user", "content": ""}),
    "own-fallbacks": req(models=["claude-haiku", "openai/gpt-4o-mini"]),
    "depth-at-limit": req(extension=nested(MAX_DEPTH - 1)),
    "tool-parameters-at-depth-limit": req(
        tools=[{"type": "function", "function": {"name": "f", "parameters": nested(MAX_DEPTH - 4)}}]
    ),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_valid_requests_pass_unchanged(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    assert validate_chat_request(body) is body
    assert body == before


def bad_tool(**function: Any) -> dict[str, Any]:
    return req(tools=[{"type": "function", "function": {"name": "f", **function}}])


def bad_part(part: dict[str, Any], role: str = "user") -> dict[str, Any]:
    return req({"role": role, "content": [part]})


def bad_assistant(**fields: Any) -> dict[str, Any]:
    return req(USER, {"role": "assistant", **fields})


def bad_call(**call: Any) -> dict[str, Any]:
    return bad_assistant(tool_calls=[{**CALL, **call}])


def bad_json_schema(**spec: Any) -> dict[str, Any]:
    return req(response_format={"type": "json_schema", "json_schema": spec})


MISSING, TYPE, VALUE = "Missing required parameter:", "Invalid type for", "Invalid value for"

# id -> (body, expected param, expected message opening)
INVALID: dict[str, tuple[Any, str | None, str]] = {
    "body-array": ([USER], None, ""),
    "body-string": ("hello", None, ""),
    "body-null": (None, None, ""),
    "model-missing": ({"messages": [USER]}, "model", MISSING),
    "model-number": ({"model": 4, "messages": [USER]}, "model", TYPE),
    "model-empty": ({"model": "", "messages": [USER]}, "model", VALUE),
    "messages-missing": ({"model": "m"}, "messages", MISSING),
    "messages-object": ({"model": "m", "messages": USER}, "messages", TYPE),
    "messages-empty": ({"model": "m", "messages": []}, "messages", VALUE),
    "message-not-object": (req(USER, "hi"), "messages[1]", TYPE),
    "role-missing": (req({"content": "hi"}), "messages[0].role", MISSING),
    "role-unknown": (req({"role": "robot", "content": "hi"}), "messages[0].role", VALUE),
    "role-number": (req({"role": 1, "content": "hi"}), "messages[0].role", TYPE),
    "user-content-missing": (req({"role": "user"}), "messages[0].content", MISSING),
    "user-content-null": (req({"role": "user", "content": None}), "messages[0].content", TYPE),
    "user-content-number": (req({"role": "user", "content": 3}), "messages[0].content", TYPE),
    "user-content-empty-array": (
        req({"role": "user", "content": []}),
        "messages[0].content",
        VALUE,
    ),
    "user-name-number": (
        req({"role": "user", "content": "x", "name": 1}),
        "messages[0].name",
        TYPE,
    ),
    "system-image-part": (
        bad_part({"type": "image_url", "image_url": {"url": PNG}}, "system"),
        "messages[0].content[0].type",
        VALUE,
    ),
    "part-not-object": (req({"role": "user", "content": ["hi"]}), "messages[0].content[0]", TYPE),
    "part-type-missing": (bad_part({"text": "hi"}), "messages[0].content[0].type", MISSING),
    "part-type-unknown": (bad_part({"type": "video"}), "messages[0].content[0].type", VALUE),
    "part-refusal-in-user": (
        bad_part({"type": "refusal", "refusal": "no"}),
        "messages[0].content[0].type",
        VALUE,
    ),
    "part-image-in-assistant": (
        req(USER, {"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]}),
        "messages[1].content[0].type",
        VALUE,
    ),
    "part-text-missing": (bad_part({"type": "text"}), "messages[0].content[0].text", MISSING),
    "part-text-number": (
        bad_part({"type": "text", "text": 1}),
        "messages[0].content[0].text",
        TYPE,
    ),
    "image-url-missing": (
        bad_part({"type": "image_url"}),
        "messages[0].content[0].image_url",
        MISSING,
    ),
    "image-url-string": (
        bad_part({"type": "image_url", "image_url": "https://x.io/a.png"}),
        "messages[0].content[0].image_url",
        TYPE,
    ),
    "image-url-url-missing": (
        bad_part({"type": "image_url", "image_url": {"detail": "low"}}),
        "messages[0].content[0].image_url.url",
        MISSING,
    ),
    **{
        f"image-url-{name}": (
            bad_part({"type": "image_url", "image_url": {"url": url}}),
            "messages[0].content[0].image_url.url",
            VALUE,
        )
        for name, url in {
            "ftp": "ftp://example.com/a.png",
            "no-host": "https://",
            "whitespace": "https://exa mple.com/a.png",
            "relative": "/images/a.png",
            "data-not-base64": "data:image/png,abc",
            "data-no-mime": "data:;base64,abc",
            "data-empty": "data:image/png;base64,",
            "empty": "",
        }.items()
    },
    "image-detail-unknown": (
        bad_part({"type": "image_url", "image_url": {"url": PNG, "detail": "max"}}),
        "messages[0].content[0].image_url.detail",
        VALUE,
    ),
    "input-audio-format": (
        bad_part({"type": "input_audio", "input_audio": {"data": "AA==", "format": "ogg"}}),
        "messages[0].content[0].input_audio.format",
        VALUE,
    ),
    "input-audio-data-missing": (
        bad_part({"type": "input_audio", "input_audio": {"format": "wav"}}),
        "messages[0].content[0].input_audio.data",
        MISSING,
    ),
    "file-empty": (bad_part({"type": "file", "file": {}}), "messages[0].content[0].file", VALUE),
    "file-id-number": (
        bad_part({"type": "file", "file": {"file_id": 7}}),
        "messages[0].content[0].file.file_id",
        TYPE,
    ),
    "tool-call-id-missing": (
        req(USER, {"role": "tool", "content": "18C"}),
        "messages[1].tool_call_id",
        MISSING,
    ),
    "tool-call-id-number": (
        req(USER, {"role": "tool", "content": "18C", "tool_call_id": 1}),
        "messages[1].tool_call_id",
        TYPE,
    ),
    "tool-message-image": (
        req(USER, {"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url"}]}),
        "messages[1].content[0].type",
        VALUE,
    ),
    "assistant-empty": (bad_assistant(), "messages[1].content", MISSING),
    "assistant-null-content-no-calls": (bad_assistant(content=None), "messages[1].content", TYPE),
    "assistant-empty-calls-no-content": (
        bad_assistant(tool_calls=[]),
        "messages[1].content",
        MISSING,
    ),
    "assistant-tool-calls-object": (
        bad_assistant(tool_calls=CALL),
        "messages[1].tool_calls",
        TYPE,
    ),
    "assistant-refusal-number": (
        bad_assistant(content="x", refusal=1),
        "messages[1].refusal",
        TYPE,
    ),
    "tool-call-not-object": (bad_assistant(tool_calls=["c"]), "messages[1].tool_calls[0]", TYPE),
    "tool-call-id-absent": (
        bad_assistant(tool_calls=[{"type": "function", "function": CALL["function"]}]),
        "messages[1].tool_calls[0].id",
        MISSING,
    ),
    "tool-call-type-absent": (
        bad_assistant(tool_calls=[{"id": "c", "function": CALL["function"]}]),
        "messages[1].tool_calls[0].type",
        MISSING,
    ),
    "tool-call-type-unknown": (bad_call(type="tool"), "messages[1].tool_calls[0].type", VALUE),
    "tool-call-arguments-object": (
        bad_call(function={"name": "get_weather", "arguments": {"city": "Paris"}}),
        "messages[1].tool_calls[0].function.arguments",
        TYPE,
    ),
    "tool-call-arguments-missing": (
        bad_call(function={"name": "get_weather"}),
        "messages[1].tool_calls[0].function.arguments",
        MISSING,
    ),
    "tool-call-name-missing": (
        bad_call(function={"arguments": "{}"}),
        "messages[1].tool_calls[0].function.name",
        MISSING,
    ),
    "function-message-name-missing": (
        req(USER, {"role": "function", "content": "x"}),
        "messages[1].name",
        MISSING,
    ),
    "tools-object": (req(tools=WEATHER), "tools", TYPE),
    "tools-null": (req(tools=None), "tools", TYPE),
    "tool-not-object": (req(tools=["get_weather"]), "tools[0]", TYPE),
    "tool-type-missing": (req(tools=[{"function": {"name": "f"}}]), "tools[0].type", MISSING),
    "tool-type-unknown": (
        req(tools=[{"type": "retrieval", "function": {"name": "f"}}]),
        "tools[0].type",
        VALUE,
    ),
    "tool-function-missing": (req(tools=[{"type": "function"}]), "tools[0].function", MISSING),
    "tool-name-missing": (
        req(tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name",
        MISSING,
    ),
    "tool-name-space": (bad_tool(name="get weather"), "tools[0].function.name", VALUE),
    "tool-name-65-chars": (bad_tool(name="f" * 65), "tools[0].function.name", VALUE),
    "tool-name-trailing-newline": (bad_tool(name="f\n"), "tools[0].function.name", VALUE),
    "tool-name-empty": (bad_tool(name=""), "tools[0].function.name", VALUE),
    "tool-name-non-ascii": (bad_tool(name="météo"), "tools[0].function.name", VALUE),
    "tool-description-number": (bad_tool(description=1), "tools[0].function.description", TYPE),
    "tool-parameters-array": (bad_tool(parameters=[]), "tools[0].function.parameters", TYPE),
    "tool-parameters-string": (
        bad_tool(parameters='{"type": "object"}'),
        "tools[0].function.parameters",
        TYPE,
    ),
    "tool-strict-string": (bad_tool(strict="yes"), "tools[0].function.strict", TYPE),
    "tool-parameters-too-deep": (
        bad_tool(parameters=nested(MAX_DEPTH)),
        "tools[0].function.parameters",
        VALUE,
    ),
    "custom-tool-name-empty": (
        req(tools=[{"type": "custom", "custom": {"name": ""}}]),
        "tools[0].custom.name",
        VALUE,
    ),
    "tool-choice-unknown-mode": (req(tools=[WEATHER], tool_choice="any"), "tool_choice", VALUE),
    "tool-choice-number": (req(tools=[WEATHER], tool_choice=1), "tool_choice", TYPE),
    "tool-choice-null": (req(tools=[WEATHER], tool_choice=None), "tool_choice", TYPE),
    "tool-choice-required-no-tools": (req(tool_choice="required"), "tool_choice", VALUE),
    "tool-choice-required-empty-tools": (
        req(tools=[], tool_choice="required"),
        "tool_choice",
        VALUE,
    ),
    "tool-choice-named-no-tools": (
        req(tool_choice={"type": "function", "function": {"name": "get_weather"}}),
        "tool_choice",
        VALUE,
    ),
    "tool-choice-named-unknown": (
        req(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}),
        "tool_choice.function.name",
        VALUE,
    ),
    "tool-choice-function-missing": (
        req(tools=[WEATHER], tool_choice={"type": "function"}),
        "tool_choice.function",
        MISSING,
    ),
    "tool-choice-type-missing": (
        req(tools=[WEATHER], tool_choice={"function": {"name": "get_weather"}}),
        "tool_choice.type",
        MISSING,
    ),
    "tool-choice-custom-names-function": (
        req(tools=[WEATHER], tool_choice={"type": "custom", "custom": {"name": "get_weather"}}),
        "tool_choice.custom.name",
        VALUE,
    ),
    "allowed-tools-mode": (
        req(
            tools=[WEATHER],
            tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": []}},
        ),
        "tool_choice.allowed_tools.mode",
        VALUE,
    ),
    "allowed-tools-unknown-name": (
        req(
            tools=[WEATHER],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "nope"}}],
                },
            },
        ),
        "tool_choice.allowed_tools.tools[0].function.name",
        VALUE,
    ),
    "functions-name-invalid": (
        req(functions=[{"name": "a b"}]),
        "functions[0].name",
        VALUE,
    ),
    "function-call-unknown": (
        req(functions=[{"name": "f"}], function_call={"name": "g"}),
        "function_call.name",
        VALUE,
    ),
    "function-call-no-functions": (req(function_call={"name": "g"}), "function_call", VALUE),
    "function-call-mode": (req(function_call="required"), "function_call", VALUE),
    "response-format-string": (req(response_format="json"), "response_format", TYPE),
    "response-format-null": (req(response_format=None), "response_format", TYPE),
    "response-format-type-unknown": (
        req(response_format={"type": "yaml"}),
        "response_format.type",
        VALUE,
    ),
    "json-schema-missing": (
        req(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        MISSING,
    ),
    "json-schema-name-missing": (
        bad_json_schema(schema={}),
        "response_format.json_schema.name",
        MISSING,
    ),
    "json-schema-name-invalid": (
        bad_json_schema(name="my schema"),
        "response_format.json_schema.name",
        VALUE,
    ),
    "json-schema-schema-array": (
        bad_json_schema(name="s", schema=[]),
        "response_format.json_schema.schema",
        TYPE,
    ),
    "json-schema-strict-string": (
        bad_json_schema(name="s", strict="true"),
        "response_format.json_schema.strict",
        TYPE,
    ),
    "json-schema-too-deep": (
        bad_json_schema(name="s", schema=nested(MAX_DEPTH)),
        "response_format.json_schema.schema",
        VALUE,
    ),
    "stream-string": (req(stream="true"), "stream", TYPE),
    "stream-options-without-stream": (
        req(stream_options={"include_usage": True}),
        "stream_options",
        VALUE,
    ),
    "stream-options-stream-false": (
        req(stream=False, stream_options={"include_usage": True}),
        "stream_options",
        VALUE,
    ),
    "stream-options-usage-string": (
        req(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        TYPE,
    ),
    "stream-options-array": (req(stream=True, stream_options=[]), "stream_options", TYPE),
    "top-logprobs-without-logprobs": (req(top_logprobs=2), "top_logprobs", VALUE),
    "top-logprobs-logprobs-false": (req(logprobs=False, top_logprobs=2), "top_logprobs", VALUE),
    "top-logprobs-21": (req(logprobs=True, top_logprobs=21), "top_logprobs", VALUE),
    "logprobs-string": (req(logprobs="true"), "logprobs", TYPE),
    "stop-five": (req(stop=["a", "b", "c", "d", "e"]), "stop", VALUE),
    "stop-empty-array": (req(stop=[]), "stop", VALUE),
    "stop-number-item": (req(stop=["a", 1]), "stop[1]", TYPE),
    "stop-number": (req(stop=1), "stop", TYPE),
    "logit-bias-101": (req(logit_bias={"50256": 101}), "logit_bias.50256", VALUE),
    "logit-bias-decimal": (req(logit_bias={"50256": 1.5}), "logit_bias.50256", TYPE),
    "logit-bias-bool": (req(logit_bias={"50256": True}), "logit_bias.50256", TYPE),
    "logit-bias-key": (req(logit_bias={"the": 1}), "logit_bias", VALUE),
    "logit-bias-array": (req(logit_bias=[1]), "logit_bias", TYPE),
    "metadata-17-pairs": (req(metadata={str(i): "v" for i in range(17)}), "metadata", VALUE),
    "metadata-long-key": (req(metadata={"k" * 65: "v"}), "metadata", VALUE),
    "metadata-long-value": (req(metadata={"k": "v" * 513}), "metadata.k", VALUE),
    "metadata-number-value": (req(metadata={"k": 1}), "metadata.k", TYPE),
    "metadata-dotted-key": (req(metadata={"a.b": 1}), "metadata", TYPE),
    "n-true": (req(n=True), "n", TYPE),
    "n-string": (req(n="2"), "n", TYPE),
    "n-decimal": (req(n=2.0), "n", TYPE),
    "n-zero": (req(n=0), "n", VALUE),
    "n-129": (req(n=129), "n", VALUE),
    "temperature-high": (req(temperature=2.01), "temperature", VALUE),
    "temperature-negative": (req(temperature=-0.1), "temperature", VALUE),
    "temperature-string": (req(temperature="1"), "temperature", TYPE),
    "temperature-bool": (req(temperature=True), "temperature", TYPE),
    "temperature-nan": (req(temperature=float("nan")), "temperature", VALUE),
    "top-p-high": (req(top_p=1.5), "top_p", VALUE),
    "presence-penalty-low": (req(presence_penalty=-3), "presence_penalty", VALUE),
    "frequency-penalty-high": (req(frequency_penalty=2.5), "frequency_penalty", VALUE),
    "max-tokens-zero": (req(max_tokens=0), "max_tokens", VALUE),
    "max-tokens-decimal": (req(max_tokens=1.5), "max_tokens", TYPE),
    "max-tokens-bool": (req(max_tokens=True), "max_tokens", TYPE),
    "max-tokens-above-int32": (req(max_tokens=2**31), "max_tokens", VALUE),
    "max-tokens-1e15": (req(max_tokens=10**15), "max_tokens", VALUE),
    "max-tokens-uint64-max": (req(max_tokens=2**64 - 1), "max_tokens", VALUE),
    "max-completion-tokens-above-int32": (
        req(max_completion_tokens=2**31),
        "max_completion_tokens",
        VALUE,
    ),
    "max-completion-tokens-negative": (
        req(max_completion_tokens=-1),
        "max_completion_tokens",
        VALUE,
    ),
    "seed-overflow": (req(seed=2**63), "seed", VALUE),
    "seed-string": (req(seed="1"), "seed", TYPE),
    "user-number": (req(user=1), "user", TYPE),
    "user-null": (req(user=None), "user", TYPE),
    "safety-identifier-long": (req(safety_identifier="s" * 65), "safety_identifier", VALUE),
    "parallel-tool-calls-null": (req(parallel_tool_calls=None), "parallel_tool_calls", TYPE),
    "reasoning-effort": (req(reasoning_effort="extreme"), "reasoning_effort", VALUE),
    "verbosity": (req(verbosity=1), "verbosity", TYPE),
    "service-tier": (req(service_tier="gold"), "service_tier", VALUE),
    "store-string": (req(store="no"), "store", TYPE),
    "modalities-video": (req(modalities=["text", "video"]), "modalities[1]", VALUE),
    "modalities-audio-without-audio": (req(modalities=["audio"]), "audio", MISSING),
    "audio-format": (req(audio={"format": "ogg", "voice": "alloy"}), "audio.format", VALUE),
    "audio-voice-missing": (req(audio={"format": "mp3"}), "audio.voice", MISSING),
    "audio-voice-number": (req(audio={"format": "mp3", "voice": 1}), "audio.voice", TYPE),
    "prediction-type": (req(prediction={"type": "diff", "content": "x"}), "prediction.type", VALUE),
    "prediction-content-image": (
        req(prediction={"type": "content", "content": [{"type": "image_url"}]}),
        "prediction.content[0].type",
        VALUE,
    ),
    "web-search-size": (
        req(web_search_options={"search_context_size": "huge"}),
        "web_search_options.search_context_size",
        VALUE,
    ),
    "web-search-location-type": (
        req(web_search_options={"user_location": {"type": "exact", "approximate": {}}}),
        "web_search_options.user_location.type",
        VALUE,
    ),
    "unknown-field-too-deep": (req(extension=nested(MAX_DEPTH)), "extension", VALUE),
    "unknown-dotted-field-too-deep": (req(**{"x.y": nested(MAX_DEPTH)}), None, ""),
    "unknown-message-key-too-deep": (
        req({"role": "user", "content": "hi", "x_ext": nested(MAX_DEPTH - 2)}),
        "messages[0].x_ext",
        VALUE,
    ),
    "unknown-message-dotted-key-too-deep": (
        req({"role": "user", "content": "hi", "x.ext": nested(MAX_DEPTH - 2)}),
        "messages[0]",
        VALUE,
    ),
    "unknown-part-key-too-deep": (
        bad_part({"type": "text", "text": "hi", "cache": [nested(MAX_DEPTH - 4)]}),
        "messages[0].content[0].cache",
        VALUE,
    ),
    "models-not-array": (req(models="gpt-4o"), "models", TYPE),
    "models-empty": (req(models=[]), "models", VALUE),
    "models-too-many": (req(models=["m"] * 9), "models", VALUE),
    "models-item-type": (req(models=["a", 3]), "models[1]", TYPE),
    "models-item-empty": (req(models=["a", ""]), "models[1]", VALUE),
    "unknown-image-key-too-deep": (
        bad_part({"type": "image_url", "image_url": {"url": PNG, "x": nested(MAX_DEPTH - 5)}}),
        "messages[0].content[0].image_url.x",
        VALUE,
    ),
}


@pytest.mark.parametrize(("body", "param", "opening"), INVALID.values(), ids=INVALID.keys())
def test_invalid_requests_name_the_path(body: Any, param: str | None, opening: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request(body)
    error = caught.value
    assert error.http_status == 400
    assert error.param == param
    if param is not None:
        assert error.message.startswith(f"{opening} '{param}'")
    assert error.message.endswith(".")


def test_message_wording_matches_openai_style() -> None:
    cases = {
        "n": (req(n="2"), "Invalid type for 'n': expected an integer, but got a string instead."),
        "tool": (
            req(USER, {"role": "tool", "content": "x"}),
            "Missing required parameter: 'messages[1].tool_call_id'.",
        ),
        "url": (
            bad_part({"type": "image_url", "image_url": {"url": "ftp://x"}}),
            "Invalid value for 'messages[0].content[0].image_url.url': "
            "expected an http(s) URL or a base64 data URL.",
        ),
        "temperature": (
            req(temperature=3),
            "Invalid value for 'temperature': expected a number between 0 and 2, "
            "but got 3 instead.",
        ),
    }
    for body, message in cases.values():
        with pytest.raises(InvalidRequest) as caught:
            validate_chat_request(body)
        assert caught.value.message == message


def test_error_messages_do_not_echo_large_values() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request(req(reasoning_effort="x" * 100_000))
    assert len(caught.value.message) < 300


def test_first_violation_in_body_order_wins() -> None:
    body = req(temperature=5, n=0)
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request(body)
    assert caught.value.param == "temperature"


def test_tool_choice_checked_against_tools_whatever_the_key_order() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    body = {"tool_choice": choice, "model": "m", "messages": [USER], "tools": [WEATHER]}
    assert validate_chat_request(body) is body


def test_package_is_pure() -> None:
    paths = sorted(REPO.joinpath("gateway", "openai", "validate").glob("*.py"))
    assert paths
    imported: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert not imported & {"trio", "httpx", "quart", "quart_trio", "hypercorn", "anyio"}
