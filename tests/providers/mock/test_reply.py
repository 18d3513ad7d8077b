"""The mock provider's engine: OpenAI wire shape, SDK assembly, usage, options, tools."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from bench.contract.checks import (
    answer_of,
    check_completion,
    check_max_tokens,
    check_structured,
    check_tools,
)
from bench.contract.sse import check_stream
from gateway.config import ConfigError, MockOptions, parse_config
from gateway.providers.mock.reply import SYSTEM_FINGERPRINT, MockReply, respond
from gateway.tokens.count import count_prompt_tokens

CREATED = 1_730_000_000
REQUEST_ID = "chatcmpl-test123"

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
CLOCK: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}, "utc_offset": {"type": "integer"}},
        },
    },
}
NO_PARAMS: dict[str, Any] = {"type": "function", "function": {"name": "ping"}}
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["title", "tags", "score"],
    "additionalProperties": False,
}


def body(text: str = "Tell me a story about a brave little mock.", **extra: Any) -> dict[str, Any]:
    return {"model": "mock-large", "messages": [{"role": "user", "content": text}], **extra}


def call(payload: dict[str, Any], **options: Any) -> MockReply:
    return respond(
        copy.deepcopy(payload), MockOptions(**options), created=CREATED, request_id=REQUEST_ID
    )


def events(reply: MockReply) -> tuple[list[dict[str, Any]], bool]:
    """Parse the SSE bytes back: every event is `data: ...\\n\\n`; returns (chunks, done)."""
    raw = b"".join(part for _, part in reply.parts)
    assert raw.endswith(b"\n\n")
    chunks: list[dict[str, Any]] = []
    done = False
    for event in raw[:-2].split(b"\n\n"):
        assert event.startswith(b"data: ") and b"\n" not in event
        assert not done, "nothing may follow [DONE]"
        data = event[len(b"data: ") :]
        if data == b"[DONE]":
            done = True
        else:
            chunks.append(orjson.loads(data))
    return chunks, done


def completion(reply: MockReply) -> dict[str, Any]:
    assert reply.status == 200
    assert reply.headers == {"content-type": "application/json"}
    assert len(reply.parts) == 1
    result: dict[str, Any] = orjson.loads(reply.parts[0][1])
    return result


def stream(payload: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
    reply = call({**payload, "stream": True}, **options)
    assert reply.status == 200
    assert reply.headers == {"content-type": "text/event-stream"}
    chunks, done = events(reply)
    assert done
    return chunks


def assembled(chunks: list[dict[str, Any]], payload: dict[str, Any]) -> Any:
    """The completion the official SDK's stream accumulator builds from the chunks.

    Its snapshot, not `get_final_completion()`: that one refuses finish_reason "length",
    as does parsing strict tools' arguments, so those are only passed without a limit.
    """
    limited = "max_tokens" in payload or "max_completion_tokens" in payload
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState(
        input_tools=[] if limited else payload.get("tools", [])
    )
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.current_completion_snapshot


def calls_of(message: Any) -> list[tuple[str, str, str]]:
    return [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]


PAYLOADS = {
    "text": body(),
    "n=3 seeded": body(n=3, seed=42),
    "max tokens": body(max_completion_tokens=5),
    "stop": body("alpha beta gamma delta", stop=["gamma"]),
    "one tool": body("What is the weather? use get_weather", tools=[WEATHER, CLOCK]),
    "parallel tools": body("call get_time then get_weather", tools=[WEATHER, CLOCK]),
    "tool without parameters": body("ping please", tools=[NO_PARAMS], tool_choice="required"),
    "json schema": body(
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}
    ),
    "json object": body(response_format={"type": "json_object"}),
    "truncated tool call": body("get_weather now", tools=[WEATHER], max_tokens=4),
    "n=2 tools": body("get_weather and get_time", tools=[WEATHER, CLOCK], n=2),
}


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_stream_sequence_shape(payload: dict[str, Any], include_usage: bool) -> None:
    chunks = stream({**payload, "stream_options": {"include_usage": include_usage}})
    n = payload.get("n", 1)
    for chunk in chunks:
        assert chunk["id"] == REQUEST_ID
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == CREATED
        assert chunk["model"] == payload["model"]
        assert chunk["system_fingerprint"] == SYSTEM_FINGERPRINT
        assert ("usage" in chunk) is include_usage
    if include_usage:
        *chunks, last = chunks
        assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
        assert all(chunk["usage"] is None for chunk in chunks)
    assert all(len(chunk["choices"]) == 1 for chunk in chunks)
    for index in range(n):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        first, *middle, final = mine
        assert first["delta"]["role"] == "assistant"
        assert first["delta"]["content"] in ("", None)
        assert final["delta"] == {} and final["finish_reason"] is not None
        assert all(c["finish_reason"] is None and c["logprobs"] is None for c in [first, *middle])
        opened: set[int] = set()
        for piece in middle:
            delta = piece["delta"]
            assert len(delta) == 1  # one token: content, or one tool-call fragment
            if "content" in delta:
                assert delta["content"] and first["delta"]["content"] == ""
                continue
            (fragment,) = delta["tool_calls"]
            k = fragment["index"]
            if k not in opened:  # the opening fragment names the call
                assert k == len(opened)
                assert fragment["id"].startswith("call_") and fragment["type"] == "function"
                assert fragment["function"]["arguments"] == ""
                assert fragment["function"]["name"]
                opened.add(k)
            else:
                assert set(fragment) == {"index", "function"}
                assert (
                    set(fragment["function"]) == {"arguments"} and fragment["function"]["arguments"]
                )


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_sdk_assembles_stream_like_the_completion(payload: dict[str, Any]) -> None:
    chunks = stream({**payload, "stream_options": {"include_usage": True}})
    streamed = assembled(chunks, payload)
    whole = ChatCompletion.model_validate(completion(call(payload)))
    assert streamed.id == whole.id and streamed.model == whole.model
    assert streamed.usage == whole.usage
    assert len(streamed.choices) == len(whole.choices) == payload.get("n", 1)
    for got, want in zip(streamed.choices, whole.choices, strict=True):
        assert got.index == want.index
        assert got.finish_reason == want.finish_reason
        assert got.message.content == want.message.content
        assert got.message.role == "assistant"
        assert calls_of(got.message) == calls_of(want.message)


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_usage_counts_generated_pieces(payload: dict[str, Any]) -> None:
    chunks = stream({**payload, "stream_options": {"include_usage": True}})
    pieces = sum(
        1
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["delta"].get("content") or choice["delta"].get("tool_calls")
    )
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == pieces
    assert usage["prompt_tokens"] == count_prompt_tokens(payload)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert completion(call(payload))["usage"] == usage


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_every_answer_keeps_the_contract(payload: dict[str, Any], include_usage: bool) -> None:
    """bench/contract's checks: the shapes, and what the answers say."""
    whole = completion(call(payload))
    assert check_completion(whole, payload) == []
    streamed = {**payload, "stream": True, "stream_options": {"include_usage": include_usage}}
    reply = call(streamed)
    result = check_stream(b"".join(part for _, part in reply.parts), streamed)
    assert result.violations == [] and result.done
    for answer in (answer_of(whole), result.answer):
        for check in (check_tools, check_structured, check_max_tokens):
            if check is check_max_tokens and answer is result.answer and not include_usage:
                continue  # no usage in the stream to bound
            assert check(answer, payload) == []


def test_completion_body_shape() -> None:
    result = completion(call(body("Hello there")))
    assert list(result) == [
        *("id", "object", "created", "model", "choices"),
        *("usage", "service_tier", "system_fingerprint"),
    ]
    assert result["object"] == "chat.completion" and result["id"] == REQUEST_ID
    (choice,) = result["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": choice["message"]["content"],
        "refusal": None,
        "annotations": [],
    }
    assert "Hello there" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    usage = result["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert set(usage["completion_tokens_details"]) == {
        *("reasoning_tokens", "audio_tokens"),
        *("accepted_prediction_tokens", "rejected_prediction_tokens"),
    }
    ChatCompletion.model_validate(result)


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_same_payload_same_bytes(payload: dict[str, Any]) -> None:
    assert call(payload) == call(payload)
    assert call({**payload, "stream": True}) == call({**payload, "stream": True})


def contents(payload: dict[str, Any]) -> list[str]:
    return [c["message"]["content"] for c in completion(call(payload))["choices"]]


def test_seed_and_choice_index_vary_the_reply() -> None:
    assert len(set(contents(body(n=4, seed=1)))) > 1
    replies = {contents(body(seed=seed))[0] for seed in range(8)}
    assert len(replies) > 1
    assert all("Tell me a story about a brave little mock." in r for r in replies)


def test_long_message_is_quoted_in_part() -> None:
    (reply,) = contents(body("word " * 500))
    assert reply.count("word") < 60 and "…" in reply


def test_no_user_message_gets_a_greeting() -> None:
    (reply,) = contents({"model": "m", "messages": [{"role": "system", "content": "Be brief."}]})
    assert "mock" in reply


def test_multimodal_parts_are_named() -> None:
    parts = [
        {"type": "text", "text": "What is in"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    (reply,) = contents({"model": "m", "messages": [{"role": "user", "content": parts}]})
    assert "What is in [image]" in reply


@pytest.mark.parametrize("key", ["max_completion_tokens", "max_tokens"])
@pytest.mark.parametrize("limit", [0, 1, 3])
def test_token_limit_truncates(key: str, limit: int) -> None:
    full = contents(body())[0]
    payload = body()
    payload[key] = limit
    result = completion(call(payload))
    (choice,) = result["choices"]
    assert choice["finish_reason"] == "length"
    assert full.startswith(choice["message"]["content"])
    assert result["usage"]["completion_tokens"] == limit


def test_limit_above_the_reply_changes_nothing() -> None:
    (choice,) = completion(call(body(max_tokens=10_000)))["choices"]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == contents(body())[0]


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    result = completion(call(body(max_completion_tokens=2, max_tokens=5)))
    assert result["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("stop", ["gamma", ["zzz", "beta"], ["delta", "alpha beta"]])
def test_stop_cuts_before_the_stop_string(stop: str | list[str]) -> None:
    text = "alpha beta gamma delta"
    full = contents(body(text))[0]
    (choice,) = completion(call(body(text, stop=stop)))["choices"]
    content = choice["message"]["content"]
    stops = [stop] if isinstance(stop, str) else stop
    cut = min(full.index(s) for s in stops if s in full)
    assert content == full[:cut]
    assert choice["finish_reason"] == "stop"


def test_stop_then_limit_reports_length() -> None:
    (choice,) = completion(call(body("alpha beta gamma delta", stop="delta", max_tokens=2)))[
        "choices"
    ]
    assert choice["finish_reason"] == "length"


TOOLS: list[dict[str, Any]] = [WEATHER, CLOCK]
TOOL_RESULT = [
    {"role": "user", "content": "weather in Oslo? use get_weather"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "clear"}'},
]

TOOL_CHOICES = [
    # (id, text or messages, extra fields, expected calls)
    ("auto names one", "use get_weather please", {}, ["get_weather"]),
    ("auto names two in order", "get_time, then GET_WEATHER", {}, ["get_time", "get_weather"]),
    ("auto serial", "get_time, then get_weather", {"parallel_tool_calls": False}, ["get_time"]),
    ("auto names none", "hello", {}, []),
    ("auto ignores substrings", "get_weathers or xget_time", {}, []),
    ("auto by name word", "What's the weather in Paris?", {}, ["get_weather"]),
    ("auto by description word", "Is it sunny in that CITY?", {}, ["get_weather"]),
    ("auto mentions none", "Tell me a joke about cats", {}, []),
    ("auto ignores generic verbs", "Can you get me a list?", {}, []),
    ("auto word substrings", "weathered cityscapes, timeless", {}, []),
    (
        "auto parallel in message order",
        "What time is it in Tokyo, and how is the weather there?",
        {},
        ["get_time", "get_weather"],
    ),
    (
        "auto parallel off",
        "What time is it in Tokyo, and how is the weather there?",
        {"parallel_tool_calls": False},
        ["get_time"],
    ),
    ("required by name word", "how is the weather", {"tool_choice": "required"}, ["get_weather"]),
    ("explicit auto", "use get_weather", {"tool_choice": "auto"}, ["get_weather"]),
    ("none", "use get_weather", {"tool_choice": "none"}, []),
    ("required names none", "hello", {"tool_choice": "required"}, ["get_weather"]),
    ("required names one", "use get_time", {"tool_choice": "required"}, ["get_time"]),
    (
        "named function",
        "use get_weather",
        {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
        ["get_time"],
    ),
    (
        "allowed tools required",
        "hello",
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            }
        },
        ["get_time"],
    ),
    (
        "allowed tools auto excludes",
        "use get_weather",
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            }
        },
        [],
    ),
    ("after tool result: text", TOOL_RESULT, {}, []),
    ("after tool result: forced", TOOL_RESULT, {"tool_choice": "required"}, ["get_weather"]),
]


@pytest.mark.parametrize(
    ("said", "extra", "expected"), [t[1:] for t in TOOL_CHOICES], ids=[t[0] for t in TOOL_CHOICES]
)
def test_tool_choice(said: Any, extra: dict[str, Any], expected: list[str]) -> None:
    payload = body(said, tools=TOOLS, **extra) if isinstance(said, str) else {
        "model": "m", "messages": said, "tools": TOOLS, **extra,
    }  # fmt: skip
    (choice,) = completion(call(payload))["choices"]
    calls = choice["message"].get("tool_calls", [])
    assert [c["function"]["name"] for c in calls] == expected
    if expected:
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        assert len({c["id"] for c in calls}) == len(calls)
        for c in calls:
            schema = next(t for t in TOOLS if t["function"]["name"] == c["function"]["name"])
            jsonschema.validate(
                orjson.loads(c["function"]["arguments"]), schema["function"]["parameters"]
            )
    else:
        assert choice["finish_reason"] == "stop" and choice["message"]["content"]


def tool(name: str, description: str | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    return {"type": "function", "function": function}


MATCHES = [
    # (id, tools, last user message, expected calls)
    (
        "description words",
        [tool("convert", "Convert an amount between currencies at exchange rates"), *TOOLS],
        "Which exchange rates apply to yen?",
        ["convert"],
    ),
    ("camelCase name", [tool("lookupStockPrice")], "the PRICE of ACME?", ["lookupStockPrice"]),
    ("kebab-case name", [tool("send-email")], "draft an email to Bob", ["send-email"]),
    (
        "shared description words are not distinctive",
        [tool("a", "Weather for a city"), tool("b", "Hotels in a city")],
        "which city?",
        [],
    ),
    (
        "another tool's name word is not distinctive",
        [tool("get_forecast", "Forecast of the weather"), tool("get_weather")],
        "weather today",
        ["get_weather"],
    ),
    (
        "ties keep request order",
        [tool("get_weather_forecast"), tool("weather_alerts")],
        "weather",
        ["get_weather_forecast", "weather_alerts"],
    ),
]


@pytest.mark.parametrize(
    ("tools", "said", "expected"), [m[1:] for m in MATCHES], ids=[m[0] for m in MATCHES]
)
def test_auto_calls_the_tools_the_message_is_about(
    tools: list[dict[str, Any]], said: str, expected: list[str]
) -> None:
    (choice,) = completion(call(body(said, tools=tools)))["choices"]
    calls = choice["message"].get("tool_calls", [])
    assert [c["function"]["name"] for c in calls] == expected
    assert choice["finish_reason"] == ("tool_calls" if expected else "stop")


def test_weather_demo_streams_a_tool_call() -> None:
    """The first demo anyone tries: a weather tool and a weather question."""
    payload = body("What's the weather in Paris?", tools=[WEATHER])
    final = assembled(stream(payload), payload)
    (choice,) = final.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    ((_, name, arguments),) = calls_of(choice.message)
    assert name == "get_weather"
    jsonschema.validate(orjson.loads(arguments), WEATHER["function"]["parameters"])


def test_tool_result_reply_uses_the_results() -> None:
    (reply,) = contents({"model": "m", "messages": TOOL_RESULT, "tools": TOOLS})
    assert "get_weather" in reply and '{"temp": 21, "sky": "clear"}' in reply


def test_tool_call_ids_differ_per_choice_and_turn() -> None:
    payload = body("use get_weather", tools=TOOLS, n=2)
    ids = [c["message"]["tool_calls"][0]["id"] for c in completion(call(payload))["choices"]]
    later = {**payload, "messages": [*TOOL_RESULT, *payload["messages"]]}
    ids += [c["message"]["tool_calls"][0]["id"] for c in completion(call(later))["choices"]]
    assert len(set(ids)) == 4


def test_unsatisfiable_parameters_give_empty_arguments() -> None:
    bad = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "string", "minLength": 5, "maxLength": 1}},
    }
    (choice,) = completion(call(body("f", tools=[bad], tool_choice="required")))["choices"]
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


JSON_SCHEMAS = {
    "article": SCHEMA,
    "enum": {
        "type": "object",
        "properties": {"mood": {"enum": ["happy", "sad"]}},
        "required": ["mood"],
    },
    "array root": {
        "type": "array",
        "items": {"type": "integer"},
        "minItems": 3,
        "uniqueItems": True,
    },
    "recursive": {
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"sub": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
            }
        },
        "$ref": "#/$defs/item",
    },
}


@pytest.mark.parametrize("schema", list(JSON_SCHEMAS.values()), ids=list(JSON_SCHEMAS))
@pytest.mark.parametrize("n", [1, 2])
def test_json_schema_content_validates(schema: dict[str, Any], n: int) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}
    for choice in completion(call(body(response_format=fmt, n=n)))["choices"]:
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(orjson.loads(choice["message"]["content"]), schema)


def test_json_object_content_is_an_object() -> None:
    (reply,) = contents(body("hi", response_format={"type": "json_object"}))
    assert orjson.loads(reply) == {"reply": contents(body("hi"))[0]}


def test_json_schema_without_schema_is_an_object() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "any"}}
    (reply,) = contents(body("hi", response_format=fmt))
    assert isinstance(orjson.loads(reply), dict)


def test_stream_timing_ttft_then_token_gaps() -> None:
    payload = body(stream=True, n=2, stream_options={"include_usage": True})
    reply = call(payload, ttft_ms=250, tokens_per_s=20)
    chunks, _ = events(reply)
    tokens = [
        sum(
            1
            for c in chunks
            if c["choices"]
            and c["choices"][0]["index"] == i
            and c["choices"][0]["delta"].get("content")
        )
        for i in (0, 1)
    ]
    assert tokens[0] != tokens[1]  # the choices are worded differently
    assert [delay for delay, _ in reply.parts] == [0.25] + [0.05] * (max(tokens) - 1)
    for _, part in reply.parts[1:]:  # later parts: at most one token per choice
        part_chunks, _ = events(MockReply(200, {}, [(0.0, part)]))
        indexes = [
            c["choices"][0]["index"]
            for c in part_chunks
            if c["choices"] and c["choices"][0]["delta"]
        ]
        assert len(indexes) == len(set(indexes)) >= 1
    first_chunks, _ = events(MockReply(200, {}, reply.parts[:1]))
    # The first part carries each choice's role chunk and first token.
    assert [c["choices"][0]["index"] for c in first_chunks] == [0, 0, 1, 1]
    assert reply.parts[-1][1].endswith(b"data: [DONE]\n\n")
    assert all(b"[DONE]" not in part for _, part in reply.parts[:-1])


def test_stream_without_token_delay_is_one_part() -> None:
    reply = call(body(stream=True), ttft_ms=100)
    assert len(reply.parts) == 1 and reply.parts[0][0] == 0.1
    assert call(body(stream=True)).parts[0][0] == 0.0


def test_completion_waits_ttft_plus_token_time() -> None:
    tokens = completion(call(body()))["usage"]["completion_tokens"]
    ((delay, _),) = call(body(), ttft_ms=300, tokens_per_s=50).parts
    assert delay == pytest.approx(0.3 + tokens / 50)
    assert call(body(), tokens_per_s=0).parts[0][0] == 0.0


def test_empty_reply_still_streams_role_and_finish() -> None:
    chunks = stream(body(max_tokens=0), tokens_per_s=10)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("options", [{"ttft_ms": "5"}, {"tokens_per_s": True}, {"ttft_ms": [1]}])
def test_option_types_are_checked_at_load(options: dict[str, Any]) -> None:
    config = {"providers": {"m": {"kind": "mock", **options}}}
    with pytest.raises(
        ConfigError, match=r"providers\.m\.(ttft_ms|tokens_per_s): expected a number"
    ):
        parse_config(config, env={}, source="t")


def sdk_client(payload_seen: list[dict[str, Any]]) -> Any:
    """The official OpenAI client, wired to `respond` through an in-memory transport.

    (The SDK's HTTP layer is httpx2, the maintained fork of httpx it depends on.)
    """
    import httpx2
    import openai

    def handler(request: httpx2.Request) -> httpx2.Response:
        payload = orjson.loads(request.content)
        payload_seen.append(payload)
        reply = call(payload)
        content = b"".join(part for _, part in reply.parts)
        return httpx2.Response(reply.status, headers=reply.headers, content=content)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(api_key="sk-test", base_url="http://mock/v1", http_client=http)


def test_official_client_reads_stream_and_completion() -> None:
    seen: list[dict[str, Any]] = []
    client = sdk_client(seen)
    kwargs: dict[str, Any] = {
        "model": "mock-large",
        "messages": [{"role": "user", "content": "use get_weather and get_time"}],
        "tools": TOOLS,
        "n": 2,
    }
    whole = client.chat.completions.create(**kwargs)
    with client.chat.completions.stream(**kwargs, stream_options={"include_usage": True}) as s:
        kinds = {event.type for event in s}
        streamed = s.get_final_completion()
    assert {"chunk", "tool_calls.function.arguments.done"} <= kinds
    assert streamed.usage == whole.usage
    for got, want in zip(streamed.choices, whole.choices, strict=True):
        assert calls_of(got.message) == calls_of(want.message)
        assert [c.function.name for c in got.message.tool_calls] == ["get_weather", "get_time"]
        # strict tools: the SDK parsed the streamed arguments as JSON
        assert got.message.tool_calls[0].function.parsed_arguments.keys() == {"city", "unit"}
    text = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in text if c.choices)
        == (contents(body("hi"))[0])
    )
    assert [p.get("stream", False) for p in seen] == [False, True, True]
