"""The fake Gemini upstream and its request rules, over real sockets."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from bench.fakes.gemini import DEFAULT_KEY, FakeGemini, run_fake_gemini
from bench.fakes.gemini_rules import (
    VendorRefusal,
    check_request,
    mint_thought_signature,
    thought_signature_ok,
)

HEADERS = {"x-goog-api-key": DEFAULT_KEY}
FLASH = "gemini-2.5-flash"
GEMINI3 = "gemini-3-pro-preview"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
WAV = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
PDF = base64.b64encode(b"%PDF-1.7\n%fake\n").decode()
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_weather", "parametersJsonSchema": WEATHER_SCHEMA}
TIME = {
    "name": "get_time",
    "parameters": {
        "type": "OBJECT",
        "properties": {"zone": {"type": "STRING", "enum": ["UTC", "CET"]}},
        "required": ["zone"],
    },
}
TOOLS = [{"functionDeclarations": [WEATHER, TIME]}]


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def model(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def text(value: str = "Hello there.") -> dict[str, Any]:
    return {"text": value}


def call(name: str, signature: str | None = None, **args: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def answer(name: str, output: Any = "sunny") -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": {"output": output}}}


def body(*contents: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"contents": list(contents) or [user(text())], **fields}


_NEUTRAL: dict[str, object] = {
    "ttft_ms": 0,
    "latency_ms": 0,
    "chunks": 5,
    "chunk_interval_ms": None,
    "tokens_per_s": None,
    "status": None,
    "reset_after": None,
    "error_after": None,
    "hang": False,
    "fail_rate": 0.0,
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeGemini, str]]:
    with run_fake_gemini() as (fake, url):
        yield fake, url


@pytest.fixture
def fake(served: tuple[FakeGemini, str]) -> Iterator[tuple[FakeGemini, httpx.Client]]:
    server, url = served
    server.configure(**_NEUTRAL)
    with httpx.Client(base_url=url, headers=HEADERS, timeout=5) as client:
        yield server, client
    server.configure(**_NEUTRAL)


def generate(client: httpx.Client, request: Any, name: str = FLASH) -> httpx.Response:
    return client.post(f"/models/{name}:generateContent", json=request)


def stream(client: httpx.Client, request: Any, name: str = FLASH) -> httpx.Response:
    return client.post(f"/models/{name}:streamGenerateContent?alt=sse", json=request)


def sse_events(raw: str) -> list[dict[str, Any]]:
    """Parse a Gemini SSE body, checking the CRLF framing and the absence of [DONE]."""
    assert raw.endswith("\r\n\r\n")
    blocks = raw.split("\r\n\r\n")[:-1]
    events = []
    for block in blocks:
        assert block.startswith("data: ") and "\n" not in block, block
        payload = block.removeprefix("data: ")
        assert payload != "[DONE]"
        events.append(json.loads(payload))
    return events


def streamed(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream"
    return sse_events(response.text)


def assert_google_error(response: httpx.Response, status: int, status_name: str) -> dict[str, Any]:
    """Check Google's error shape; return the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) <= {"code", "message", "status", "details"}
    assert error["code"] == status and error["status"] == status_name and error["message"]
    for detail in error.get("details", []):
        assert detail["@type"].startswith("type.googleapis.com/google.rpc.")
    return error


# -- answers --------------------------------------------------------------------------


def test_text_answer_shape_and_usage(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    response = generate(client, body(), f"{FLASH}@chunks=3")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    data = response.json()
    assert set(data) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    assert data["modelVersion"] == FLASH and data["responseId"]
    (candidate,) = data["candidates"]
    assert candidate == {
        "content": {"parts": [{"text": "This is a"}], "role": "model"},
        "finishReason": "STOP",
        "index": 0,
    }
    usage = data["usageMetadata"]
    assert usage["candidatesTokenCount"] == 3 and "thoughtsTokenCount" not in usage
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 3
    assert usage["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": usage["promptTokenCount"]}
    ]


def test_max_output_tokens_truncates(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    data = generate(client, body(generationConfig={"maxOutputTokens": 2})).json()
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert data["candidates"][0]["content"]["parts"] == [{"text": "This is"}]
    assert data["usageMetadata"]["candidatesTokenCount"] == 2


def test_stream_framing_deltas_and_running_usage(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    request = body(generationConfig={"thinkingConfig": {"includeThoughts": True}})
    events = streamed(stream(client, request, f"{FLASH}@chunks=6"))
    whole = generate(client, request, f"{FLASH}@chunks=6").json()
    assert len(events) == 2 + 6  # two thought events, then one per text piece
    assert len({e["responseId"] for e in events}) == 1
    assert {e["modelVersion"] for e in events} == {FLASH}
    parts = [e["candidates"][0]["content"]["parts"] for e in events]
    assert all(len(p) == 1 for p in parts)
    assert [p[0].get("thought") for p in parts[:2]] == [True, True]
    deltas = [p[0]["text"] for p in parts[2:]]
    assert all(deltas) and "".join(deltas) == whole["candidates"][0]["content"]["parts"][1]["text"]
    assert [e["candidates"][0].get("finishReason") for e in events] == [None] * 7 + ["STOP"]
    totals = [e["usageMetadata"]["candidatesTokenCount"] for e in events]
    assert totals == sorted(totals) and totals[-1] == 6  # running totals, not deltas
    assert events[-1]["usageMetadata"] == whole["usageMetadata"]
    usage = whole["usageMetadata"]
    assert usage["thoughtsTokenCount"] > 0
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )


def test_stream_without_alt_sse_is_one_json_array(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    response = client.post(f"/models/{FLASH}@chunks=3:streamGenerateContent", json=body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    items = response.json()
    assert [i["candidates"][0]["content"]["parts"][0]["text"] for i in items] == [
        "This",
        " is",
        " a",
    ]


def test_function_calls_satisfy_the_declared_schemas(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    single = generate(client, body(user(text("What is the weather?")), tools=TOOLS)).json()
    (candidate,) = single["candidates"]
    assert candidate["finishReason"] == "STOP"  # Gemini has no tool-call finish reason
    (part,) = candidate["content"]["parts"]
    assert set(part) == {"functionCall"} and set(part["functionCall"]) == {"name", "args"}
    assert part["functionCall"]["name"] == "get_weather"
    jsonschema.validate(part["functionCall"]["args"], WEATHER_SCHEMA)

    both = user(text("Use get_weather and get_time."))
    parallel = generate(client, body(both, tools=TOOLS)).json()["candidates"][0]
    calls = [p["functionCall"] for p in parallel["content"]["parts"]]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert calls[1]["args"]["zone"] in ("UTC", "CET")

    forced = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    only = generate(client, body(both, tools=TOOLS, toolConfig=forced)).json()
    assert [p["functionCall"]["name"] for p in only["candidates"][0]["content"]["parts"]] == [
        "get_time"
    ]
    none = {"functionCallingConfig": {"mode": "NONE"}}
    quiet = generate(client, body(both, tools=TOOLS, toolConfig=none)).json()
    assert "text" in quiet["candidates"][0]["content"]["parts"][0]


def test_two_turn_tool_conversation(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    first = body(user(text("Weather in Paris?")), tools=TOOLS)
    (part,) = generate(client, first).json()["candidates"][0]["content"]["parts"]
    history = [*first["contents"], model(part), user(answer("get_weather"))]
    second = generate(client, body(*history, tools=TOOLS)).json()["candidates"][0]
    assert "text" in second["content"]["parts"][0] and second["finishReason"] == "STOP"


def test_stream_function_call_shapes(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    request = body(user(text("Use get_weather and get_time.")), tools=TOOLS)
    newer = streamed(stream(client, request))
    assert len(newer) == 2  # the calls, whole, then a trailing STOP with empty text
    calls = newer[0]["candidates"][0]
    assert "finishReason" not in calls and len(calls["content"]["parts"]) == 2
    assert newer[1]["candidates"][0]["content"]["parts"] == [{"text": ""}]
    assert newer[1]["candidates"][0]["finishReason"] == "STOP"
    older = streamed(stream(client, request, "gemini-2.0-flash"))
    assert len(older) == 1 and older[0]["candidates"][0]["finishReason"] == "STOP"


def test_gemini3_signatures_round_trip(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    ask = user(text("Use get_weather and get_time."))
    parts = generate(client, body(ask, tools=TOOLS), GEMINI3).json()["candidates"][0]["content"][
        "parts"
    ]
    signature = parts[0]["thoughtSignature"]
    assert thought_signature_ok(signature) and "thoughtSignature" not in parts[1]
    streamed_parts = streamed(stream(client, body(ask, tools=TOOLS), GEMINI3))[0]["candidates"][0][
        "content"
    ]["parts"]
    assert thought_signature_ok(streamed_parts[0]["thoughtSignature"])
    answers = user(answer("get_time"), answer("get_weather"))
    replay = body(ask, model(*parts), answers, tools=TOOLS)
    assert generate(client, replay, GEMINI3).status_code == 200
    dropped = body(ask, model(*[{"functionCall": p["functionCall"]} for p in parts]), answers)
    error = assert_google_error(generate(client, dropped, GEMINI3), 400, "INVALID_ARGUMENT")
    assert "missing a thought_signature" in error["message"] and "position 2" in error["message"]
    text_part = generate(client, body(), GEMINI3).json()["candidates"][0]["content"]["parts"][0]
    assert thought_signature_ok(text_part["thoughtSignature"])


def test_json_answers_satisfy_the_response_schema(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    config = {"responseMimeType": "application/json", "responseJsonSchema": WEATHER_SCHEMA}
    whole = generate(client, body(generationConfig=config)).json()
    jsonschema.validate(
        json.loads(whole["candidates"][0]["content"]["parts"][0]["text"]), WEATHER_SCHEMA
    )
    events = streamed(stream(client, body(generationConfig=config)))
    assert len(events) == 5
    joined = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert joined == whole["candidates"][0]["content"]["parts"][0]["text"]
    openapi = {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "ARRAY",
            "minItems": "2",
            "items": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": True}}},
        },
    }
    items = json.loads(
        generate(client, body(generationConfig=openapi)).json()["candidates"][0]["content"][
            "parts"
        ][0]["text"]
    )
    assert isinstance(items, list) and len(items) >= 2 and all("n" in i for i in items)
    enum = {
        "responseMimeType": "text/x.enum",
        "responseSchema": {"type": "STRING", "enum": ["b", "a"]},
    }
    choice = generate(client, body(generationConfig=enum)).json()["candidates"][0]
    assert choice["content"]["parts"] == [{"text": "b"}]


def test_candidate_count(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    config = {"candidateCount": 3}
    whole = generate(client, body(generationConfig=config)).json()
    assert [c["index"] for c in whole["candidates"]] == [0, 1, 2]
    texts = {c["content"]["parts"][0]["text"] for c in whole["candidates"]}
    assert len(texts) == 3
    assert whole["usageMetadata"]["candidatesTokenCount"] == 15
    events = streamed(stream(client, body(generationConfig=config)))
    assert all([c["index"] for c in e["candidates"]] == [0, 1, 2] for e in events)


def test_blocked_prompt(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    request = body(user(text("please BLOCKME now")))
    data = generate(client, request).json()
    assert "candidates" not in data
    assert data["promptFeedback"]["blockReason"] == "SAFETY"
    usage = data["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"]
    (event,) = streamed(stream(client, request))
    assert event["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in event


def test_media_is_counted_per_modality(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    image = {"inlineData": {"mimeType": "image/png", "data": PNG}}
    usage = generate(client, body(user(text(), image))).json()["usageMetadata"]
    modalities = {d["modality"]: d["tokenCount"] for d in usage["promptTokensDetails"]}
    assert modalities["IMAGE"] == 258
    assert usage["promptTokenCount"] == sum(modalities.values())


# -- the request rules ----------------------------------------------------------------------

SIG = mint_thought_signature("test")
SCHEMA_PATH = "tools[0].function_declarations[0].parameters"


def _tool(**declaration: Any) -> list[dict[str, Any]]:
    return [{"functionDeclarations": [{"name": "f", **declaration}]}]


def _params(**schema: Any) -> list[dict[str, Any]]:
    return _tool(parameters={"type": "OBJECT", **schema})


def _gen(**config: Any) -> dict[str, Any]:
    return body(generationConfig=config)


ROUND_TRIP = [user(text("Go.")), model(call("f")), user(answer("f"))]


def refused(
    case: str, request: Any, needle: str, *, model: str = FLASH, detail: str | None = None
) -> Any:
    """A request the real API refuses with 400 INVALID_ARGUMENT: the message contains
    `needle`; `detail` names the one google.rpc detail type expected (None: no details)."""
    return pytest.param(request, model, needle, detail, id=case)


def accepted(case: str, request: Any, *, model: str = FLASH) -> Any:
    """A request the real API takes (several of them on the edge of a rule)."""
    return pytest.param(request, model, id=case)


REFUSED = [
    refused("no-contents", {}, "contents: contents is not specified"),
    refused("empty-contents", {"contents": []}, "contents is not specified"),
    refused("not-an-object", [], "Expected an object", detail="BadRequest"),
    refused(
        "contents-object",
        {"contents": user(text())},
        "Invalid value at 'contents'",
        detail="BadRequest",
    ),
    refused(
        "role-function",
        body({"role": "function", "parts": [text()]}),
        "Role 'function' is not supported",
    ),
    refused(
        "role-system", body({"role": "system", "parts": [text()]}), "Role 'system' is not supported"
    ),
    refused(
        "same-role-twice", body(user(text()), user(text())), "alternate between user and model"
    ),
    refused("no-parts", body(user()), "contents[0].parts: contents.parts must not be empty"),
    refused("part-without-data", body(user({})), "required oneof field 'data'"),
    refused("thought-only-part", body(user({"thought": True})), "required oneof field 'data'"),
    refused(
        "two-data-fields",
        body(user({"text": "a", "inlineData": {"mimeType": "image/png", "data": PNG}})),
        "oneof field 'data' is already set",
        detail="BadRequest",
    ),
    refused(
        "unknown-top-level",
        body(messages=[]),
        'Unknown name "messages": Cannot find field.',
        detail="BadRequest",
    ),
    refused(
        "unknown-part-field",
        body(user({"text": "a", "type": "text"})),
        "Unknown name \"type\" at 'contents[0].parts[0]'",
        detail="BadRequest",
    ),
    refused(
        "args-as-string",
        body(*ROUND_TRIP[:1], model({"functionCall": {"name": "f", "args": "{}"}}), ROUND_TRIP[2]),
        "'contents[1].parts[0].function_call.args' (type.googleapis.com/google.protobuf.Struct)",
        detail="BadRequest",
    ),
    refused(
        "response-as-string",
        body(*ROUND_TRIP[:2], user({"functionResponse": {"name": "f", "response": "ok"}})),
        "function_response.response' (type.googleapis.com/google.protobuf.Struct)",
        detail="BadRequest",
    ),
    refused(
        "response-name-empty",
        body(*ROUND_TRIP[:2], user(answer(""))),
        "contents[2].parts[0].function_response.name: Name cannot be empty.",
    ),
    refused(
        "response-name-is-id",
        body(*ROUND_TRIP[:2], user(answer("call_abc123"))),
        "'call_abc123' does not match a function call",
    ),
    refused(
        "response-without-call",
        body(user(text()), model(text()), user(answer("f"))),
        "function response turn comes immediately after a function call turn",
    ),
    refused(
        "responses-missing",
        body(user(text()), model(call("f"), call("g")), user(answer("f"))),
        "number of function response parts is equal to the number of function call parts",
    ),
    refused(
        "call-answered-by-text",
        body(user(text()), model(call("f")), user(text())),
        "number of function response parts",
    ),
    refused(
        "call-first",
        body(model(call("f")), user(answer("f"))),
        "function call turn comes immediately after a user turn",
    ),
    refused(
        "call-in-user", body(user(call("f"))), "function calls are only allowed in model contents"
    ),
    refused(
        "response-in-model",
        body(user(text()), model(answer("f"))),
        "function responses are only allowed in user contents",
    ),
    refused(
        "call-name-empty",
        body(user(text()), model(call("")), user(answer("f"))),
        "function_call.name: Name cannot be empty.",
    ),
    refused(
        "gemini3-no-signature",
        body(*ROUND_TRIP),
        "Function call is missing a thought_signature in functionCall parts",
        model=GEMINI3,
    ),
    refused(
        "gemini3-later-step",
        body(
            user(text()),
            model(call("f", SIG)),
            user(answer("f")),
            model(call("f")),
            user(answer("f")),
        ),
        "position 4",
        model=GEMINI3,
    ),
    refused(
        "gemini3-mangled-signature",
        body(user(text()), model(call("f", SIG[:-8] + "AAAAAAA=")), user(answer("f"))),
        "Corrupted thought signature.",
        model=GEMINI3,
    ),
    refused(
        "signature-not-base64",
        body(user(text()), model(call("f", "not base64!")), user(answer("f"))),
        "Base64 decoding failed",
        detail="BadRequest",
    ),
    refused(
        "data-url-as-data",
        body(
            user({"inlineData": {"mimeType": "image/png", "data": "data:image/png;base64," + PNG}})
        ),
        "(TYPE_BYTES), Base64 decoding failed",
        detail="BadRequest",
    ),
    refused(
        "double-base64",
        body(
            user(
                {
                    "inlineData": {
                        "mimeType": "image/png",
                        "data": base64.b64encode(PNG.encode()).decode(),
                    }
                }
            )
        ),
        "Unable to process input image",
    ),
    refused(
        "not-a-pdf",
        body(user({"inlineData": {"mimeType": "application/pdf", "data": PNG}})),
        "Unable to process input document",
    ),
    refused(
        "gif",
        body(user({"inlineData": {"mimeType": "image/gif", "data": PNG}})),
        "Unsupported MIME type: image/gif",
    ),
    refused(
        "no-mime-type",
        body(user({"inlineData": {"data": PNG}})),
        "mime_type: Mime type cannot be empty",
    ),
    refused(
        "empty-data",
        body(user({"inlineData": {"mimeType": "image/png", "data": ""}})),
        "Inline data cannot be empty",
    ),
    refused(
        "file-without-uri",
        body(user({"fileData": {"mimeType": "application/pdf"}})),
        "File URI cannot be empty",
    ),
    refused(
        "system-image",
        body(systemInstruction={"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]}),
        "system_instruction.parts[0]: system instruction parts must be text",
    ),
    refused(
        "system-no-parts",
        body(systemInstruction={"parts": []}),
        "system_instruction.parts: contents.parts must not be empty",
    ),
    refused(
        "system-snake-case",
        body(system_instruction={"parts": [text()]}),
        'Unknown name "system_instruction"',
        detail="BadRequest",
    ),
    refused(
        "function-name-digit",
        body(tools=[{"functionDeclarations": [{"name": "1f"}]}]),
        "Invalid function name",
    ),
    refused(
        "function-name-space",
        body(tools=[{"functionDeclarations": [{"name": "get weather"}]}]),
        "function_declarations[0].name: Invalid function name",
    ),
    refused(
        "function-name-long",
        body(tools=[{"functionDeclarations": [{"name": "f" * 129}]}]),
        "maximum length of 128",
    ),
    refused(
        "duplicate-function",
        body(
            tools=[
                {"functionDeclarations": [{"name": "f"}]},
                {"functionDeclarations": [{"name": "f"}]},
            ]
        ),
        "Duplicate function declaration found: f",
    ),
    refused("empty-tool", body(tools=[{}]), "required one_of 'tool_type'"),
    refused(
        "both-parameter-kinds",
        body(
            tools=_tool(
                parameters={"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
                parametersJsonSchema={"type": "object"},
            )
        ),
        "parameters and parameters_json_schema cannot both be set",
    ),
    refused(
        "strict-flag",
        body(tools=_tool(strict=True)),
        "Unknown name \"strict\" at 'tools[0].function_declarations[0]'",
        detail="BadRequest",
    ),
    refused(
        "additional-properties",
        body(tools=_params(additionalProperties=False)),
        f"Unknown name \"additionalProperties\" at '{SCHEMA_PATH}': Cannot find field.",
        detail="BadRequest",
    ),
    refused(
        "dollar-schema",
        body(tools=_params(**{"$schema": "http://json-schema.org/draft-07/schema#"})),
        'Unknown name "$schema"',
        detail="BadRequest",
    ),
    refused(
        "dollar-defs",
        body(tools=_params(**{"$defs": {"a": {"type": "STRING"}}})),
        'Unknown name "$defs"',
        detail="BadRequest",
    ),
    refused(
        "dollar-ref",
        body(tools=_params(properties={"a": {"$ref": "#/$defs/a"}})),
        f"Unknown name \"$ref\" at '{SCHEMA_PATH}.properties[0].value'",
        detail="BadRequest",
    ),
    refused(
        "nested-additional",
        body(
            tools=_params(
                properties={
                    "a": {
                        "type": "ARRAY",
                        "items": {"type": "OBJECT", "additionalProperties": True},
                    }
                }
            )
        ),
        f"at '{SCHEMA_PATH}.properties[0].value.items'",
        detail="BadRequest",
    ),
    refused(
        "const",
        body(tools=_params(properties={"a": {"const": "x"}})),
        'Unknown name "const"',
        detail="BadRequest",
    ),
    refused(
        "type-list",
        body(tools=_params(properties={"a": {"type": ["string", "null"]}})),
        "Proto field is not repeating, cannot start list.",
        detail="BadRequest",
    ),
    refused(
        "type-unknown",
        body(tools=_params(properties={"a": {"type": "text"}})),
        '(type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "text"',
        detail="BadRequest",
    ),
    refused(
        "root-not-object",
        body(tools=_tool(parameters={"type": "STRING"})),
        "parameters.type: parameters schema should be of type OBJECT",
    ),
    refused(
        "properties-on-string",
        body(
            tools=_params(
                properties={"a": {"type": "STRING", "properties": {"b": {"type": "STRING"}}}}
            )
        ),
        "properties[a].properties: only allowed for OBJECT type",
    ),
    refused(
        "array-without-items",
        body(tools=_params(properties={"a": {"type": "ARRAY"}})),
        "properties[a].items: missing field.",
    ),
    refused(
        "items-on-object",
        body(tools=_params(items={"type": "STRING"})),
        "parameters.items: only allowed for ARRAY type",
    ),
    refused(
        "enum-on-integer",
        body(tools=_params(properties={"a": {"type": "INTEGER", "enum": ["1"]}})),
        "properties[a].enum: only allowed for STRING type",
    ),
    refused(
        "enum-numbers",
        body(tools=_params(properties={"a": {"type": "STRING", "enum": [1, 2]}})),
        "enum[0]' (TYPE_STRING), 1",
        detail="BadRequest",
    ),
    refused(
        "required-undefined",
        body(tools=_params(properties={"a": {"type": "STRING"}}, required=["b"])),
        "parameters.required[0]: property is not defined",
    ),
    refused(
        "mode-lower-case",
        body(tools=TOOLS, toolConfig={"functionCallingConfig": {"mode": "auto"}}),
        'FunctionCallingConfig.Mode), "auto"',
        detail="BadRequest",
    ),
    refused(
        "allowed-with-auto",
        body(
            tools=TOOLS,
            toolConfig={
                "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["get_time"]}
            },
        ),
        "only allowed when function calling mode is ANY or VALIDATED",
    ),
    refused(
        "allowed-undeclared",
        body(
            tools=TOOLS,
            toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["nope"]}},
        ),
        "function 'nope' is not declared",
    ),
    refused(
        "config-snake-case",
        _gen(max_output_tokens=5),
        "Unknown name \"max_output_tokens\" at 'generation_config'",
        detail="BadRequest",
    ),
    refused("openai-field", _gen(max_tokens=5), 'Unknown name "max_tokens"', detail="BadRequest"),
    refused(
        "temperature-high",
        _gen(temperature=2.5),
        "generation_config.temperature: temperature must be in the range",
    ),
    refused(
        "temperature-type",
        _gen(temperature="hot"),
        "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"",
        detail="BadRequest",
    ),
    refused("top-p-high", _gen(topP=1.5), "top_p must be in the range"),
    refused("top-k-zero", _gen(topK=0), "top_k must be positive"),
    refused("top-k-fraction", _gen(topK=1.5), "(TYPE_INT32), 1.5", detail="BadRequest"),
    refused("max-tokens-zero", _gen(maxOutputTokens=0), "max_output_tokens must be positive"),
    refused(
        "candidates-nine", _gen(candidateCount=9), "candidate_count must be in the range [1, 8]"
    ),
    refused("six-stops", _gen(stopSequences=list("abcdef")), "at most 5 stop sequences"),
    refused(
        "stop-string",
        _gen(stopSequences="end"),
        "Invalid value at 'generation_config.stop_sequences'",
        detail="BadRequest",
    ),
    refused(
        "presence-two",
        _gen(presencePenalty=2.0),
        "presence_penalty must be in the range [-2.0, 2.0)",
    ),
    refused("frequency-low", _gen(frequencyPenalty=-2.5), "frequency_penalty must be in the range"),
    refused(
        "logprobs-alone",
        _gen(logprobs=3),
        "logprobs can only be set when response_logprobs is true",
    ),
    refused(
        "logprobs-many",
        _gen(responseLogprobs=True, logprobs=21),
        "logprobs must be in the range [0, 20]",
    ),
    refused("mime-unknown", _gen(responseMimeType="text/json"), "allowed mimetypes are"),
    refused(
        "schema-without-mime",
        _gen(responseSchema={"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}),
        "when response_schema is set",
    ),
    refused(
        "json-schema-text",
        _gen(responseMimeType="text/plain", responseJsonSchema={"type": "object"}),
        "when response_json_schema is set",
    ),
    refused(
        "both-schemas",
        _gen(
            responseMimeType="application/json",
            responseSchema={"type": "STRING"},
            responseJsonSchema={"type": "string"},
        ),
        "response_schema and response_json_schema cannot both be set",
    ),
    refused(
        "response-schema-subset",
        _gen(
            responseMimeType="application/json",
            responseSchema={"type": "OBJECT", "additionalProperties": False},
        ),
        "Unknown name \"additionalProperties\" at 'generation_config.response_schema'",
        detail="BadRequest",
    ),
    refused(
        "budget-and-level",
        _gen(thinkingConfig={"thinkingBudget": 128, "thinkingLevel": "LOW"}),
        "only one of thinking budget and thinking level",
        model=GEMINI3,
    ),
    refused(
        "budget-negative", _gen(thinkingConfig={"thinkingBudget": -5}), "thinking_budget must be -1"
    ),
    refused(
        "budget-zero-on-pro",
        _gen(thinkingConfig={"thinkingBudget": 0}),
        "Budget 0 is invalid",
        model="gemini-2.5-pro",
    ),
    refused(
        "level-on-2.5",
        _gen(thinkingConfig={"thinkingLevel": "HIGH"}),
        "Thinking level is not supported for this model",
    ),
    refused(
        "level-lower-case",
        _gen(thinkingConfig={"thinkingLevel": "high"}),
        'ThinkingLevel), "high"',
        model=GEMINI3,
        detail="BadRequest",
    ),
    refused(
        "thinking-snake-case",
        _gen(thinkingConfig={"include_thoughts": True}),
        "Unknown name \"include_thoughts\" at 'generation_config.thinking_config'",
        detail="BadRequest",
    ),
    refused(
        "include-thoughts-string",
        _gen(thinkingConfig={"includeThoughts": "yes"}),
        '(TYPE_BOOL), "yes"',
        detail="BadRequest",
    ),
    refused(
        "safety-threshold",
        body(safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "NONE"}]),
        'HarmBlockThreshold), "NONE"',
        detail="BadRequest",
    ),
    refused(
        "null-in-list",
        body({"role": "user", "parts": [text(), None]}),
        "Invalid value at 'contents[0].parts[1]'",
        detail="BadRequest",
    ),
]

ACCEPTED = [
    accepted("minimal", body()),
    accepted("role-omitted", body({"parts": [text()]})),
    accepted(
        "nulls-are-absent", body(tools=None, generationConfig={"temperature": None, "topK": None})
    ),
    accepted("empty-text", body(user(text("")), model(text("")), user(text()))),
    accepted("round-trip", body(*ROUND_TRIP, tools=_tool())),
    accepted(
        "ids-and-text-with-results",
        body(
            user(text()),
            model({"functionCall": {"id": "call_1", "name": "f", "args": {"a": 1}}}),
            user(
                {"functionResponse": {"id": "call_1", "name": "f", "response": {"error": "boom"}}},
                text("Go on."),
            ),
        ),
    ),
    accepted(
        "parallel-results-reordered",
        body(
            user(text()),
            model(call("f"), call("g"), call("f")),
            user(answer("g"), answer("f"), answer("f")),
        ),
    ),
    accepted(
        "gemini3-signed",
        body(user(text()), model(call("f", SIG), call("g")), user(answer("f"), answer("g"))),
        model=GEMINI3,
    ),
    accepted(
        "gemini3-bypass",
        body(user(text()), model(call("f", "skip_thought_signature_validator")), user(answer("f"))),
        model=GEMINI3,
    ),
    accepted(
        "gemini3-old-turn-unsigned",
        body(
            user(text()),
            model(call("f")),
            user(answer("f")),
            model(text("Done.")),
            user(text("Thanks.")),
        ),
        model=GEMINI3,
    ),
    accepted(
        "gemini3-urlsafe-unpadded",
        body(
            user(text()),
            model(call("f", SIG.replace("+", "-").replace("/", "_").rstrip("="))),
            user(answer("f")),
        ),
        model=GEMINI3,
    ),
    accepted(
        "openapi-schema",
        body(
            tools=_params(
                properties={
                    "a": {
                        "type": "string",
                        "format": "date-time",
                        "nullable": True,
                        "description": "d",
                    },
                    "b": {"type": "ARRAY", "items": {"type": "INTEGER"}, "minItems": "1"},
                    "c": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
                },
                required=["a"],
                propertyOrdering=["a", "b", "c"],
            )
        ),
    ),
    accepted(
        "json-schema-parameters",
        body(
            tools=_tool(
                parametersJsonSchema={
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"a": {"$ref": "#/$defs/a"}},
                    "$defs": {"a": {"type": "string"}},
                    "additionalProperties": False,
                }
            )
        ),
    ),
    accepted(
        "no-parameters",
        body(tools=[{"functionDeclarations": [{"name": "ping", "description": "no arguments"}]}]),
    ),
    accepted("tool-name-chars", body(tools=[{"functionDeclarations": [{"name": "_a.b:c-d_9"}]}])),
    accepted(
        "forced-tool",
        body(
            tools=TOOLS,
            toolConfig={
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
            },
        ),
    ),
    accepted(
        "validated-mode",
        body(tools=TOOLS, toolConfig={"functionCallingConfig": {"mode": "VALIDATED"}}),
    ),
    accepted(
        "system-text",
        body(systemInstruction={"role": "user", "parts": [text("Be brief."), text("Be kind.")]}),
    ),
    accepted(
        "response-json-schema",
        _gen(
            responseMimeType="application/json",
            responseJsonSchema={"type": "object", "additionalProperties": {"type": "integer"}},
        ),
    ),
    accepted(
        "response-schema",
        _gen(
            responseMimeType="application/json",
            responseSchema={"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
        ),
    ),
    accepted(
        "sampling-edges",
        _gen(
            temperature=0,
            topP=1,
            topK=1,
            maxOutputTokens=1,
            candidateCount=8,
            stopSequences=list("abcde"),
            presencePenalty=-2,
            frequencyPenalty=1.99,
            seed=-7,
            responseLogprobs=True,
            logprobs=0,
        ),
    ),
    accepted("numeric-strings", _gen(maxOutputTokens="64", temperature="0.5")),
    accepted(
        "thinking-level-3",
        _gen(thinkingConfig={"thinkingLevel": "LOW", "includeThoughts": True}),
        model=GEMINI3,
    ),
    accepted("thinking-dynamic", _gen(thinkingConfig={"thinkingBudget": -1})),
    accepted(
        "media",
        body(
            user(
                text(),
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"inlineData": {"mimeType": "audio/wav", "data": WAV}},
                {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
                {
                    "fileData": {
                        "mimeType": "video/mp4",
                        "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
                    }
                },
            )
        ),
    ),
    accepted(
        "safety-and-cache",
        body(
            safetySettings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
            cachedContent="cachedContents/abc",
        ),
    ),
]


@pytest.mark.parametrize(("request_body", "name", "needle", "detail"), REFUSED)
def test_refused_like_the_real_api(
    fake: tuple[FakeGemini, httpx.Client],
    request_body: Any,
    name: str,
    needle: str,
    detail: str | None,
) -> None:
    _, client = fake
    error = assert_google_error(generate(client, request_body, name), 400, "INVALID_ARGUMENT")
    assert needle in error["message"]
    types = [d["@type"].rsplit(".", 1)[-1] for d in error.get("details", [])]
    assert types == ([detail] if detail else [])


@pytest.mark.parametrize(("request_body", "name"), ACCEPTED)
def test_accepted_like_the_real_api(
    fake: tuple[FakeGemini, httpx.Client], request_body: Any, name: str
) -> None:
    _, client = fake
    response = generate(client, request_body, name)
    assert response.status_code == 200, response.text
    assert response.json()["candidates"]


def test_check_request_is_pure_and_model_rules_need_the_model() -> None:
    unsigned = body(*ROUND_TRIP)
    check_request(unsigned)  # no model given: the Gemini 3 rule does not apply
    with pytest.raises(VendorRefusal) as caught:
        check_request(unsigned, model=GEMINI3)
    assert caught.value.status == 400
    assert caught.value.body["error"]["status"] == "INVALID_ARGUMENT"
    assert thought_signature_ok(SIG) and not thought_signature_ok(SIG[:-4] + "AAA=")
    assert mint_thought_signature("a") != mint_thought_signature("b")


# -- transport, auth, errors ------------------------------------------------------------


def test_auth(served: tuple[FakeGemini, str]) -> None:
    _, url = served
    target = f"{url}/models/{FLASH}:generateContent"
    missing = httpx.post(target, json=body())
    assert_google_error(missing, 403, "PERMISSION_DENIED")
    assert "unregistered callers" in missing.json()["error"]["message"]
    wrong = httpx.post(target, json=body(), headers={"x-goog-api-key": "AIza-wrong"})
    error = assert_google_error(wrong, 400, "INVALID_ARGUMENT")
    assert error["message"] == "API key not valid. Please pass a valid API key."
    assert error["details"][0]["reason"] == "API_KEY_INVALID"
    assert httpx.post(f"{target}?key={DEFAULT_KEY}", json=body()).status_code == 200
    assert_google_error(httpx.get(f"{url}/models"), 403, "PERMISSION_DENIED")


def test_models_endpoints(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    listing = client.get("/models").json()["models"]
    assert [m["name"] for m in listing] == [
        f"models/{FLASH}",
        "models/gemini-2.5-pro",
        f"models/{GEMINI3}",
    ]
    assert "generateContent" in listing[0]["supportedGenerationMethods"]
    assert client.get(f"/models/{GEMINI3}").json()["name"] == f"models/{GEMINI3}"
    assert_google_error(client.get("/models/gemini-0"), 404, "NOT_FOUND")


def test_unknown_urls_get_googles_html_404(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    for response in (
        client.post(f"/models/{FLASH}:countWords", json=body()),
        client.get(f"/models/{FLASH}:generateContent"),
        client.post("/chat/completions", json=body()),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")


def test_bad_json_and_bad_directives(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    bad = client.post(f"/models/{FLASH}:generateContent", content=b"{not json")
    assert (
        "Invalid JSON payload received"
        in assert_google_error(bad, 400, "INVALID_ARGUMENT")["message"]
    )
    typo = generate(client, body(), f"{FLASH}@no_such_knob=1")
    assert "Bad fake directive" in assert_google_error(typo, 400, "INVALID_ARGUMENT")["message"]


def test_status_directives_use_googles_shape(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    limited = stream(client, body(), f"{FLASH}@status=429&retry_after=7")
    error = assert_google_error(limited, 429, "RESOURCE_EXHAUSTED")
    assert "retry-after" not in limited.headers  # Gemini puts the delay in the body only
    (retry,) = [d for d in error["details"] if d["@type"].endswith("RetryInfo")]
    assert retry["retryDelay"] == "7s" and "Please retry in 7s." in error["message"]
    overloaded = generate(client, body(), f"{FLASH}@status=503")
    assert "overloaded" in assert_google_error(overloaded, 503, "UNAVAILABLE")["message"]
    assert_google_error(generate(client, body(), f"{FLASH}@status=504"), 504, "DEADLINE_EXCEEDED")
    assert_google_error(generate(client, body(), f"{FLASH}@status=404"), 404, "NOT_FOUND")
    custom = generate(
        client, body(), f"{FLASH}@status=400&error_type=FAILED_PRECONDITION&error_message=region"
    )
    assert assert_google_error(custom, 400, "FAILED_PRECONDITION")["message"] == "region"
    encoded = client.post(
        f"/models/{FLASH}%40status%3D503%26retry_after%3D2.5:generateContent", json=body()
    )
    assert assert_google_error(encoded, 503, "UNAVAILABLE")["details"][0]["retryDelay"] == "2.5s"


def test_rules_are_checked_before_injected_failures(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    refused = generate(client, body(user(text()), user(text())), f"{FLASH}@status=503")
    assert_google_error(refused, 400, "INVALID_ARGUMENT")


def read_raw(client: httpx.Client, url: str, request: Any) -> tuple[bytes, BaseException | None]:
    """The response bytes that arrived, and the transport error that ended them, if any."""
    received = b""
    try:
        with client.stream("POST", url, json=request) as response:
            for part in response.iter_raw():
                received += part
    except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
        return received, exc
    return received, None


def test_reset_after(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    url = f"/models/{FLASH}@reset_after=3&chunks=10:streamGenerateContent?alt=sse"
    received, failure = read_raw(client, url, body())
    assert failure is not None
    assert len(sse_events(received.decode())) == 3
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        generate(client, body(), f"{FLASH}@reset_after=0")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        stream(client, body(), f"{FLASH}@reset_after=0")  # before the status line


def test_error_after_sends_googles_in_band_error(fake: tuple[FakeGemini, httpx.Client]) -> None:
    _, client = fake
    name = f"{FLASH}@chunks=6&error_after=2&error_type=UNAVAILABLE&error_message=busy"
    events = streamed(stream(client, body(), name))
    assert len(events) == 3
    assert all("candidates" in e for e in events[:2])
    assert events[2] == {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}
    array = client.post(f"/models/{FLASH}@error_after=1:streamGenerateContent", json=body()).json()
    assert len(array) == 2 and array[1]["error"]["status"] == "INTERNAL"


def test_hang_is_seen_as_a_disconnect(fake: tuple[FakeGemini, httpx.Client]) -> None:
    server, client = fake
    before = server.disconnects
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"/models/{FLASH}@hang:generateContent", json=body(), timeout=0.3)
    assert server.wait_for_disconnects(before + 1, timeout_s=5.0)


def test_disconnect_mid_stream_is_detected(fake: tuple[FakeGemini, httpx.Client]) -> None:
    server, client = fake
    before = server.disconnects
    url = f"/models/{FLASH}@chunks=500&chunk_interval_ms=20:streamGenerateContent?alt=sse"
    with client.stream("POST", url, json=body()) as response:
        assert next(response.iter_lines()).startswith("data: ")
    started = time.monotonic()
    assert server.wait_for_disconnects(before + 1, timeout_s=5.0)
    assert time.monotonic() - started < 1.0


def test_fail_rate_is_evenly_spread() -> None:
    with (
        run_fake_gemini(fail_rate=0.5) as (_, url),
        httpx.Client(base_url=url, headers=HEADERS) as client,
    ):
        statuses = [generate(client, body()).status_code for _ in range(4)]
        assert statuses == [200, 500] * 2


def test_fail_rate_answers_internal() -> None:
    with (
        run_fake_gemini(fail_rate=1.0, seed=3) as (_, url),
        httpx.Client(base_url=url, headers=HEADERS) as client,
    ):
        assert_google_error(generate(client, body()), 500, "INTERNAL")


@pytest.mark.parametrize(
    ("knobs", "streaming", "at_least_s"),
    [
        ("ttft_ms=80&chunks=4&chunk_interval_ms=30", True, 0.08 + 3 * 0.03),
        ("chunks=4&tokens_per_s=40", True, 3 / 40),
        ("latency_ms=100", False, 0.1),
    ],
)
def test_pacing(
    fake: tuple[FakeGemini, httpx.Client], knobs: str, streaming: bool, at_least_s: float
) -> None:
    _, client = fake
    send: Callable[..., httpx.Response] = stream if streaming else generate
    started = time.monotonic()
    assert send(client, body(), f"{FLASH}@{knobs}").status_code == 200
    assert time.monotonic() - started >= at_least_s


def test_configure_and_recording(fake: tuple[FakeGemini, httpx.Client]) -> None:
    server, client = fake
    server.configure(chunks=2)
    count = server.request_count
    stream(client, body(), FLASH)
    recorded = server.requests[-1]
    assert recorded.method == "POST" and recorded.query == "alt=sse"
    assert recorded.path == f"/v1beta/models/{FLASH}:streamGenerateContent"
    assert recorded.headers["x-goog-api-key"] == DEFAULT_KEY and recorded.body == body()
    assert server.wait_for_requests(count + 1, timeout_s=0.1)
    assert (
        len(generate(client, body()).json()["candidates"][0]["content"]["parts"][0]["text"].split())
        == 2
    )
