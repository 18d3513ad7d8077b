"""The fake Anthropic upstream over real sockets: its checks, its wire format, its knobs."""

from __future__ import annotations

import base64
import itertools
import json
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from bench.fakes.anthropic import (
    DEFAULT_KEY,
    FakeAnthropic,
    VendorKnobs,
    apply_vendor_knobs,
    run_fake_anthropic,
)
from bench.fakes.anthropic_rules import VendorRefusal, check_request, error_type_for
from bench.fakes.directives import DirectiveError

HEADERS = {"x-api-key": DEFAULT_KEY, "anthropic-version": "2023-06-01"}
HELLO = [{"role": "user", "content": "Say hello to the fake upstream, please."}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit", "days"],
    },
}
CLOCK = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        "score": {"type": "number", "minimum": 0, "maximum": 10},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    },
    "required": ["title", "score", "tags"],
    "additionalProperties": False,
}


def tiny_png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG_B64 = base64.b64encode(tiny_png()).decode()
PDF_B64 = base64.b64encode(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n").decode()


def png_source(**overrides: Any) -> dict[str, Any]:
    return {"type": "base64", "media_type": "image/png", "data": PNG_B64, **overrides}


def image(source: dict[str, Any]) -> dict[str, Any]:
    return {"type": "image", "source": source}


def document(kind: str, media_type: str | None = None, **source: Any) -> dict[str, Any]:
    """A document block with a source of type `kind` (``media_type`` when given)."""
    typed = {"media_type": media_type} if media_type else {}
    return {"type": "document", "source": {"type": kind, **typed, **source}}


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(tool_id: str, name: str = "get_weather", **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}


def tool_result(tool_id: str, content: Any = "sunny") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": content}


def body(**fields: Any) -> dict[str, Any]:
    """A valid request, with `fields` replacing or adding top-level fields."""
    return {"model": "claude-fake", "max_tokens": 64, "messages": HELLO, **fields}


def without(field: str) -> dict[str, Any]:
    request = body()
    del request[field]
    return request


def talk(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return body(messages=list(messages), **fields)


@pytest.fixture(scope="module")
def shared() -> Iterator[httpx.Client]:
    """One fake for the read-only tests (request checks, answers)."""
    with (
        run_fake_anthropic() as (_, url),
        httpx.Client(base_url=url, headers=HEADERS) as client,
    ):
        yield client


@pytest.fixture
def fake() -> Iterator[tuple[FakeAnthropic, httpx.Client]]:
    """A fresh fake for tests that configure it or count its requests."""
    with (
        run_fake_anthropic() as (server, url),
        httpx.Client(base_url=url, headers=HEADERS) as client,
    ):
        yield server, client


def post(client: httpx.Client, request: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return client.post("/messages", json=request, **kwargs)


def assert_vendor_error(response: httpx.Response, status: int, error_type: str) -> str:
    """Check Anthropic's error shape; return the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert set(payload) == {"type", "error", "request_id"}
    assert payload["type"] == "error"
    assert payload["request_id"] == response.headers["request-id"]
    assert payload["request_id"].startswith("req_")
    assert set(payload["error"]) == {"type", "message"}
    assert payload["error"]["type"] == error_type
    message: str = payload["error"]["message"]
    assert message
    return message


def sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Parse a stream, checking Anthropic's framing: ``event:`` + ``data:`` per event."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.text
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), block
        name = event_line.removeprefix("event: ")
        payload = json.loads(data_line.removeprefix("data: "))
        assert payload["type"] == name
        events.append((name, payload))
    return events


def stream(client: httpx.Client, request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return sse(post(client, {**request, "stream": True}))


def assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Rebuild the message from a stream, checking block order and index discipline."""
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    message = dict(events[0][1]["message"])
    assert message["content"] == [] and message["stop_reason"] is None
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    open_index: int | None = None
    for name, payload in events[1:]:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == len(blocks)
            open_index = payload["index"]
            blocks.append(dict(payload["content_block"]))
            partial[open_index] = ""
        elif name == "content_block_delta":
            assert payload["index"] == open_index
            block, delta = blocks[payload["index"]], payload["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] += delta["signature"]
            else:
                assert delta["type"] == "input_json_delta"
                partial[payload["index"]] += delta["partial_json"]
        elif name == "content_block_stop":
            index = payload["index"]
            assert index == open_index
            if blocks[index]["type"] == "tool_use":
                blocks[index]["input"] = json.loads(partial[index] or "{}")
            open_index = None
        elif name == "message_delta":
            assert open_index is None
            message.update(payload["delta"])
            message["usage"] = {**message["usage"], **payload["usage"]}
    message["content"] = blocks
    return message


# -- the request checks: each rule refused, and its valid neighbour accepted ---------------

TOOL_TURN = assistant(text("Checking."), tool_use("toolu_a", city="Oslo"))
PARALLEL_TURN = assistant(tool_use("toolu_a", city="Oslo"), tool_use("toolu_b", city="Rome"))
THINKING = {"type": "enabled", "budget_tokens": 1024}
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("extra-top-level", body(response_format={"type": "json"}), "response_format: Extra inputs"),
    ("model-missing", without("model"), "model: Field required"),
    ("model-not-string", body(model=5), "model: Input should be a valid string"),
    ("model-empty", body(model=""), "model: String should have at least 1 character"),
    ("max-tokens-missing", without("max_tokens"), "max_tokens: Field required"),
    ("max-tokens-zero", body(max_tokens=0), "max_tokens: Input should be greater than or equal"),
    ("max-tokens-float", body(max_tokens=1.5), "max_tokens: Input should be a valid integer"),
    ("max-tokens-bool", body(max_tokens=True), "max_tokens: Input should be a valid integer"),
    ("messages-missing", without("messages"), "messages: Field required"),
    ("messages-empty", body(messages=[]), "messages: at least one message is required"),
    ("messages-not-list", body(messages="hi"), "messages: Input should be a valid list"),
    ("null-field", body(temperature=None), "temperature: Input should not be null"),
    ("temperature-high", body(temperature=1.5), "temperature: Input should be less than or equal"),
    ("temperature-low", body(temperature=-0.1), "temperature: Input should be greater than"),
    ("temperature-type", body(temperature="hot"), "temperature: Input should be a valid number"),
    ("top-p-high", body(top_p=2), "top_p: Input should be less than or equal to 1"),
    ("temperature-and-top-p", body(temperature=0.5, top_p=0.9), "cannot both be specified"),
    ("top-k-negative", body(top_k=-1), "top_k: Input should be greater than or equal to 0"),
    ("stop-whitespace", body(stop_sequences=["\n"]), "each stop sequence must contain non-white"),
    ("stop-empty", body(stop_sequences=[""]), "each stop sequence must contain non-whitespace"),
    ("stop-string", body(stop_sequences="END"), "stop_sequences: Input should be a valid list"),
    ("stop-not-string", body(stop_sequences=[5]), "stop_sequences.0: Input should be a valid str"),
    ("metadata-extra", body(metadata={"user_id": "u1", "email": "a@b.c"}), "metadata.email: Ex"),
    ("metadata-user-id", body(metadata={"user_id": 5}), "metadata.user_id: Input should be a va"),
    ("stream-type", body(stream="yes"), "stream: Input should be a valid boolean"),
    ("service-tier", body(service_tier="priority"), "service_tier: Input should be 'auto'"),
    ("cache-control", body(cache_control={"type": "persistent"}), "cache_control.type: Input"),
    ("system-empty-block", body(system=[text("")]), "system: text content blocks must be non-"),
    ("system-block-type", body(system=[{"type": "image"}]), "system.0: Input tag 'image' found"),
    ("role-system", talk({"role": "system", "content": "Be brief."}, *HELLO), 'role "system"'),
    ("role-tool", talk({"role": "tool", "content": "x"}), "messages.0.role: Input should be"),
    ("message-extra", talk({**HELLO[0], "name": "bob"}), "messages.0.name: Extra inputs"),
    ("content-missing", talk({"role": "user"}), "messages.0.content: Field required"),
    ("content-empty-string", talk({"role": "user", "content": ""}), "must have non-empty content"),
    ("content-empty-list", talk(user()), "messages.0: all messages must have non-empty content"),
    (
        "content-empty-mid-assistant",
        talk(*HELLO, {"role": "assistant", "content": ""}, *HELLO),
        "messages.1: all messages must have non-empty content",
    ),
    ("text-block-empty", talk(user(text(""))), "messages: text content blocks must be non-empty"),
    (
        "text-block-empty-beside-tool-use",  # pitfall E6: "" kept next to a tool call
        talk(*HELLO, assistant(text(""), tool_use("toolu_a")), user(tool_result("toolu_a"))),
        "messages: text content blocks must be non-empty",
    ),
    ("text-whitespace", talk(user(text(" \n"))), "text content blocks must contain non-whitespace"),
    ("text-string-whitespace", talk({"role": "user", "content": "  "}), "non-whitespace text"),
    (
        "prefill-trailing-space",
        talk(*HELLO, {"role": "assistant", "content": "The answer is "}),
        "final assistant content cannot end with trailing whitespace",
    ),
    ("block-unknown", talk(user({"type": "audio"})), "messages.0.content.0: Input tag 'audio'"),
    ("block-no-type", talk(user({"text": "hi"})), "Unable to extract tag using discriminator"),
    ("block-extra", talk(user({**text("hi"), "x": 1})), "messages.0.content.0.text.x: Extra in"),
    (
        "image-in-assistant",
        talk(*HELLO, assistant(image(png_source()))),
        "`image` blocks are not allowed in `assistant` messages",
    ),
    ("tool-use-in-user", talk(user(tool_use("toolu_a"))), "`tool_use` blocks are not allowed in"),
    (
        "tool-result-in-assistant",
        talk(*HELLO, assistant(tool_result("toolu_a"))),
        "`tool_result` blocks are not allowed in `assistant` messages",
    ),
    (
        "thinking-in-user",
        talk(user({"type": "thinking", "thinking": "hm", "signature": "sig"})),
        "`thinking` blocks are not allowed in `user` messages",
    ),
    (
        "image-media-type",
        talk(user(image(png_source(media_type="image/bmp")))),
        "source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or",
    ),
    (
        "image-data-url",
        talk(user(image(png_source(data=f"data:image/png;base64,{PNG_B64}")))),
        "source.base64.data: base64 data must not include a `data:` URL prefix",
    ),
    (
        "image-bad-base64",
        talk(user(image(png_source(data="not base64!")))),
        "source.base64.data: invalid base64 data",
    ),
    (
        "image-type-mismatch",
        talk(user(image(png_source(media_type="image/jpeg")))),
        "specified using the image/jpeg media type, but the image appears to be a image/png",
    ),
    (
        "image-not-an-image",
        talk(user(image(png_source(data=PDF_B64)))),
        "messages.0.content.0.image: Could not process image",
    ),
    (
        "image-url-scheme",
        talk(user(image({"type": "url", "url": "file:///etc/passwd"}))),
        "source.url.url: URL must use the http or https scheme",
    ),
    (
        "image-source-type",
        talk(user(image({"type": "file", "file_id": "f1"}))),
        "image.source: Input tag 'file' found",
    ),
    (
        "document-media-type",
        talk(user(document("base64", "application/msword", data=PDF_B64))),
        "document.source.base64.media_type: Input should be 'application/pdf'",
    ),
    (
        "document-not-pdf",
        talk(user(document("base64", "application/pdf", data=PNG_B64))),
        "messages.0.content.0.document: The PDF specified was not valid.",
    ),
    (
        "document-text-media-type",
        talk(user(document("text", "text/html", data="<p>"))),
        "document.source.text.media_type: Input should be 'text/plain'",
    ),
    (
        "tool-use-id-pattern",
        talk(*HELLO, assistant(tool_use("call 1")), user(tool_result("call 1"))),
        "tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
    ),
    (
        "tool-use-input-string",
        talk(
            *HELLO, assistant({**tool_use("toolu_a"), "input": "{}"}), user(tool_result("toolu_a"))
        ),
        "messages.1.content.0.tool_use.input: Input should be a valid dictionary",
    ),
    (
        "tool-use-no-name",
        talk(*HELLO, assistant({"type": "tool_use", "id": "toolu_a", "input": {}})),
        "messages.1.content.0.tool_use.name: Field required",
    ),
    (
        "tool-use-unanswered",
        talk(*HELLO, TOOL_TURN, *HELLO),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_a",
    ),
    (
        "tool-use-last",
        talk(*HELLO, TOOL_TURN),
        "messages.1: `tool_use` ids were found without `tool_result` blocks",
    ),
    (
        "tool-results-split",  # pitfall E7: one user message per tool message
        talk(*HELLO, PARALLEL_TURN, user(tool_result("toolu_a")), user(tool_result("toolu_b"))),
        "immediately after: toolu_b",
    ),
    (
        "tool-result-after-text",
        talk(*HELLO, TOOL_TURN, user(text("Here:"), tool_result("toolu_a"))),
        "immediately after: toolu_a",
    ),
    (
        "tool-result-unknown-id",
        talk(*HELLO, TOOL_TURN, user(tool_result("toolu_a"), tool_result("toolu_z"))),
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_z",
    ),
    (
        "tool-result-without-tool-use",
        talk(user(tool_result("toolu_a"))),
        "messages.0.content.0: unexpected `tool_use_id`",
    ),
    (
        "tool-result-duplicate",
        talk(*HELLO, TOOL_TURN, user(tool_result("toolu_a"), tool_result("toolu_a"))),
        "Found multiple `tool_result` blocks with id: toolu_a",
    ),
    (
        "tool-use-id-reused",
        talk(
            *HELLO, TOOL_TURN, user(tool_result("toolu_a")), TOOL_TURN, user(tool_result("toolu_a"))
        ),
        "messages.3.content.1: `tool_use` ids must be unique",
    ),
    (
        "tool-result-is-error-type",
        talk(*HELLO, TOOL_TURN, user({**tool_result("toolu_a"), "is_error": "yes"})),
        "tool_result.is_error: Input should be a valid boolean",
    ),
    (
        "tool-result-empty-text",
        talk(*HELLO, TOOL_TURN, user(tool_result("toolu_a", [text("")]))),
        "messages: text content blocks must be non-empty",
    ),
    ("tool-name", body(tools=[{**WEATHER, "name": "get.weather"}]), "tools.0.custom.name: String"),
    ("tool-name-long", body(tools=[{**WEATHER, "name": "t" * 129}]), "'^[a-zA-Z0-9_-]{1,128}$'"),
    (
        "tool-schema-type",
        body(tools=[{**WEATHER, "input_schema": {"type": "array"}}]),
        "tools.0.custom.input_schema.type: Input should be 'object'",
    ),
    (
        "tool-schema-untyped",
        body(tools=[{**WEATHER, "input_schema": {"properties": {}}}]),
        "tools.0.custom.input_schema.type: Field required",
    ),
    (
        "tool-schema-invalid",
        body(tools=[{**WEATHER, "input_schema": {"type": "object", "required": "city"}}]),
        "tools.0.custom.input_schema: JSON schema is invalid",
    ),
    ("tool-no-schema", body(tools=[{"name": "f"}]), "tools.0.custom.input_schema: Field required"),
    (
        "tool-openai-shape",
        body(tools=[{"type": "function", "function": {"name": "f"}}]),
        "tools.0: Input tag 'function' found using 'type'",
    ),
    ("tool-extra", body(tools=[{**WEATHER, "parameters": {}}]), "tools.0.custom.parameters: Extra"),
    ("tool-duplicate", body(tools=[WEATHER, WEATHER]), "tools: Tool names must be unique."),
    (
        "choice-unknown-tool",
        body(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_time"}),
        "tool `get_time` is not one of the provided `tools`",
    ),
    (
        "choice-tool-no-name",
        body(tools=[WEATHER], tool_choice={"type": "tool"}),
        "tool_choice.tool.name: Field required",
    ),
    (
        "choice-openai-string",
        body(tools=[WEATHER], tool_choice="required"),
        "tool_choice: Input should be a valid dictionary",
    ),
    (
        "choice-type",
        body(tools=[WEATHER], tool_choice={"type": "required"}),
        "tool_choice: Input tag 'required' found",
    ),
    (
        "choice-without-tools",
        body(tool_choice={"type": "auto"}),
        "tool_choice may only be specified while providing tools.",
    ),
    (
        "choice-none-extra",
        body(tools=[WEATHER], tool_choice={"type": "none", "disable_parallel_tool_use": True}),
        "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted",
    ),
    (
        "choice-parallel-type",
        body(tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": "no"}),
        "disable_parallel_tool_use: Input should be a valid boolean",
    ),
    (
        "thinking-budget-low",
        body(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 512}),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    (
        "thinking-budget-over-max",
        body(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}),
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    ("thinking-type", body(thinking={"type": "on"}), "thinking: Input tag 'on' found"),
    (
        "thinking-adaptive-budget",
        body(thinking={"type": "adaptive", "budget_tokens": 2048}),
        "thinking.adaptive.budget_tokens: Extra inputs are not permitted",
    ),
    (
        "thinking-with-any",  # pitfall E13
        body(max_tokens=4096, thinking=THINKING, tools=[WEATHER], tool_choice={"type": "any"}),
        "Thinking may not be enabled when tool_choice forces tool use.",
    ),
    (
        "thinking-with-forced-tool",
        body(
            max_tokens=4096,
            thinking={"type": "adaptive"},
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather"},
        ),
        "Thinking may not be enabled when tool_choice forces tool use.",
    ),
    (
        "thinking-temperature",
        body(max_tokens=4096, thinking=THINKING, temperature=0.5),
        "`temperature` may only be set to 1 when thinking is enabled.",
    ),
    (
        "thinking-top-p",
        body(max_tokens=4096, thinking=THINKING, top_p=0.5),
        "`top_p` must be between 0.95 and 1 when thinking is enabled.",
    ),
    (
        "thinking-top-k",
        body(max_tokens=4096, thinking=THINKING, top_k=5),
        "`top_k` may not be set when thinking is enabled.",
    ),
    (
        "thinking-tool-loop-without-thinking",
        talk(
            *HELLO,
            TOOL_TURN,
            user(tool_result("toolu_a")),
            tools=[WEATHER],
            max_tokens=4096,
            thinking=THINKING,
        ),
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`",
    ),
    (
        "format-type",
        body(output_config={"format": {"type": "json_object"}}),
        "output_config.format: Input tag 'json_object' found",
    ),
    (
        "format-no-schema",
        body(output_config={"format": {"type": "json_schema"}}),
        "output_config.format.schema: Field required",
    ),
    (
        "format-bad-schema",
        body(output_config={"format": {"type": "json_schema", "schema": {"type": "bogus"}}}),
        "output_config.format.schema: JSON schema is invalid",
    ),
    (
        "format-openai-shape",
        body(output_config={"format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        "output_config.format.json_schema: Extra inputs are not permitted",
    ),
    ("top-k-float", body(top_k=1.5), "top_k: Input should be a valid integer"),
    ("container-type", body(container=5), "container: Input should be a valid string"),
    ("tool-strict-type", body(tools=[{**WEATHER, "strict": "yes"}]), "custom.strict: Input should"),
    (
        "tool-result-id-pattern",
        talk(*HELLO, TOOL_TURN, user(tool_result("toolu a"))),
        "tool_result.tool_use_id: String should match pattern",
    ),
    (
        "tool-result-nested-tool-use",
        talk(*HELLO, TOOL_TURN, user(tool_result("toolu_a", [tool_use("toolu_b")]))),
        "`tool_use` blocks are not allowed in `user` messages",
    ),
    (
        "thinking-display",
        body(thinking={"type": "adaptive", "display": "full"}),
        "thinking.adaptive.display: Input should be 'summarized' or 'omitted'",
    ),
    (
        "document-title-type",
        talk(user({**document("url", url="https://x.test/a.pdf"), "title": 5})),
        "document.title: Input should be a valid string",
    ),
    ("effort", body(output_config={"effort": "extreme"}), "output_config.effort: Input should be"),
    ("output-config-extra", body(output_config={"verbosity": "low"}), "output_config.verbosity"),
]

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("minimal", body()),
    ("max-tokens-one", body(max_tokens=1)),
    ("nullable-fields", body(container=None, inference_geo=None, cache_control=None)),
    ("temperature-bounds", body(temperature=0)),
    ("temperature-one", body(temperature=1)),
    ("top-p-alone", body(top_p=0.9)),
    ("top-k", body(top_k=5)),
    ("stop-sequences", body(stop_sequences=["END", " done"])),
    ("metadata", body(metadata={"user_id": "3f2c9a"})),
    ("metadata-null-user", body(metadata={"user_id": None})),
    ("service-tier", body(service_tier="auto")),
    ("cache-control", body(cache_control={"type": "ephemeral", "ttl": "1h"})),
    ("system-string", body(system="Be brief.")),
    ("system-blocks", body(system=[{**text("Be brief."), "cache_control": {"type": "ephemeral"}}])),
    ("stream-false", body(stream=False)),
    ("prefill", talk(*HELLO, {"role": "assistant", "content": "The answer is"})),
    ("prefill-empty", talk(*HELLO, {"role": "assistant", "content": ""})),
    ("consecutive-users", talk(*HELLO, *HELLO)),
    ("assistant-first", talk({"role": "assistant", "content": "Hi."}, *HELLO)),
    ("image-base64", talk(user(text("What is this?"), image(png_source())))),
    (
        "image-url",
        talk(user(image({"type": "url", "url": "https://x.test/a.png"}))),
    ),
    (
        "document-pdf",
        talk(
            user(
                {**document("base64", "application/pdf", data=PDF_B64), "title": "report.pdf"},
                text("Summarise."),
            )
        ),
    ),
    ("document-text", talk(user(document("text", "text/plain", data="Notes.")))),
    (
        "document-url-and-content",
        talk(
            user(
                document("url", url="https://x.test/a.pdf"),
                document("content", content=[text("Part."), image(png_source())]),
            )
        ),
    ),
    ("tool-round-trip", talk(*HELLO, TOOL_TURN, user(tool_result("toolu_a")), tools=[WEATHER])),
    (
        "parallel-results-then-text",
        talk(
            *HELLO,
            PARALLEL_TURN,
            user(tool_result("toolu_b"), tool_result("toolu_a"), text("Thanks.")),
        ),
    ),
    (
        "tool-result-blocks",
        talk(
            *HELLO,
            TOOL_TURN,
            user(
                {
                    **tool_result("toolu_a", [text("42"), image(png_source())]),
                    "is_error": False,
                }
            ),
        ),
    ),
    (
        "tool-result-no-content",
        talk(*HELLO, TOOL_TURN, user({"type": "tool_result", "tool_use_id": "toolu_a"})),
    ),
    (
        "tools-full",
        body(
            tools=[{**WEATHER, "strict": True, "cache_control": {"type": "ephemeral"}}, CLOCK],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        ),
    ),
    ("tool-typed-custom", body(tools=[{**WEATHER, "type": "custom"}])),
    ("tool-name-128", body(tools=[{**WEATHER, "name": "t" * 128}])),
    ("choice-any", body(tools=[WEATHER], tool_choice={"type": "any"})),
    ("choice-tool", body(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})),
    ("choice-none", body(tools=[WEATHER], tool_choice={"type": "none"})),
    ("choice-none-no-tools", body(tool_choice={"type": "none"})),
    ("thinking-temperature-one", body(max_tokens=4096, thinking=THINKING, temperature=1)),
    ("thinking-top-p", body(max_tokens=4096, thinking=THINKING, top_p=0.95)),
    ("thinking-adaptive", body(thinking={"type": "adaptive", "display": "omitted"})),
    (
        "thinking-disabled-forced",
        body(thinking={"type": "disabled"}, tools=[WEATHER], tool_choice={"type": "any"}),
    ),
    (
        "thinking-tool-loop-with-thinking",
        talk(
            *HELLO,
            assistant(
                {"type": "thinking", "thinking": "Weather.", "signature": "sig"},
                tool_use("toolu_a"),
            ),
            user(tool_result("toolu_a")),
            tools=[WEATHER],
            max_tokens=4096,
            thinking=THINKING,
        ),
    ),
    (
        "thinking-earlier-tool-turn",  # only the turn the final results answer needs thinking
        talk(
            *HELLO,
            TOOL_TURN,
            user(tool_result("toolu_a")),
            {"role": "assistant", "content": "Sunny."},
            *HELLO,
            tools=[WEATHER],
            max_tokens=4096,
            thinking=THINKING,
        ),
    ),
    (
        "format",
        body(
            output_config={
                "format": {"type": "json_schema", "schema": REPORT_SCHEMA},
                "effort": "high",
            }
        ),
    ),
    (
        "redacted-thinking-in-loop",
        talk(
            *HELLO,
            assistant({"type": "redacted_thinking", "data": "opaque"}, tool_use("toolu_a")),
            user(tool_result("toolu_a")),
            tools=[WEATHER],
            max_tokens=4096,
            thinking={"type": "adaptive"},
        ),
    ),
    ("format-null", body(output_config={"format": None, "effort": None})),
]


@pytest.mark.parametrize(
    ("request_body", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused_like_the_api(
    shared: httpx.Client, request_body: dict[str, Any], expected: str
) -> None:
    message = assert_vendor_error(post(shared, request_body), 400, "invalid_request_error")
    assert expected in message


@pytest.mark.parametrize("request_body", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted_like_the_api(shared: httpx.Client, request_body: dict[str, Any]) -> None:
    response = post(shared, request_body)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"


def test_check_request_is_pure_and_raises_vendor_refusal() -> None:
    check_request(body())
    with pytest.raises(VendorRefusal) as caught:
        check_request(body(max_tokens=0))
    refusal = caught.value
    assert refusal.status == 400
    assert refusal.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": refusal.message},
        "request_id": "req_fake",
    }
    with pytest.raises(VendorRefusal, match="valid dictionary"):
        check_request([])  # type: ignore[arg-type]


def test_error_types_per_status() -> None:
    expected = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
        409: "invalid_request_error",
        503: "api_error",
    }
    assert {status: error_type_for(status) for status in expected} == expected


# -- transport: headers, paths, body ------------------------------------------------------


def test_auth_and_version_headers(shared: httpx.Client) -> None:
    url = str(shared.base_url).rstrip("/")
    request = body()
    missing = httpx.post(
        f"{url}/messages", json=request, headers={"anthropic-version": "2023-06-01"}
    )
    assert (
        assert_vendor_error(missing, 401, "authentication_error") == "x-api-key header is required"
    )
    bearer = httpx.post(
        f"{url}/messages",
        json=request,
        headers={"authorization": f"Bearer {DEFAULT_KEY}", "anthropic-version": "2023-06-01"},
    )
    assert_vendor_error(bearer, 401, "authentication_error")
    wrong = httpx.post(
        f"{url}/messages", json=request, headers={**HEADERS, "x-api-key": "sk-ant-no"}
    )
    assert assert_vendor_error(wrong, 401, "authentication_error") == "invalid x-api-key"
    no_version = httpx.post(f"{url}/messages", json=request, headers={"x-api-key": DEFAULT_KEY})
    message = assert_vendor_error(no_version, 400, "invalid_request_error")
    assert message == "anthropic-version: header is required"
    odd = httpx.post(
        f"{url}/messages", json=request, headers={**HEADERS, "anthropic-version": "v1"}
    )
    assert "anthropic-version" in assert_vendor_error(odd, 400, "invalid_request_error")
    assert_vendor_error(httpx.get(f"{url}/models"), 401, "authentication_error")


def test_paths_methods_and_bad_json(shared: httpx.Client) -> None:
    assert_vendor_error(shared.post("/messages", content=b"{nope"), 400, "invalid_request_error")
    assert_vendor_error(shared.post("/chat/completions", json=body()), 404, "not_found_error")
    not_allowed = shared.get("/messages")
    assert_vendor_error(not_allowed, 405, "invalid_request_error")
    assert not_allowed.headers["allow"] == "POST"


def test_models_listing() -> None:
    with (
        run_fake_anthropic(models=("claude-a", "claude-b")) as (_, url),
        httpx.Client(base_url=url, headers=HEADERS) as client,
    ):
        listing = client.get("/models").json()
    assert listing["has_more"] is False
    assert (listing["first_id"], listing["last_id"]) == ("claude-a", "claude-b")
    for model in listing["data"]:
        assert set(model) == {"type", "id", "display_name", "created_at"}
        assert model["type"] == "model" and model["created_at"].endswith("Z")


# -- answers ----------------------------------------------------------------------------


def test_text_message_shape_and_usage(shared: httpx.Client) -> None:
    response = post(shared, body(model="claude-fake@chunks=3"))
    assert response.status_code == 200 and response.headers["request-id"].startswith("req_")
    message = response.json()
    assert message["id"].startswith("msg_") and message["type"] == "message"
    assert message["role"] == "assistant" and message["model"] == "claude-fake"
    assert message["content"] == [{"type": "text", "text": "This is a"}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
    usage = message["usage"]
    assert usage["output_tokens"] == 3 and usage["input_tokens"] > 0
    assert usage["cache_read_input_tokens"] == usage["cache_creation_input_tokens"] == 0
    assert "output_tokens_details" not in usage  # only with thinking


def test_stream_framing_order_and_pings(shared: httpx.Client) -> None:
    events = stream(shared, body(model="claude-fake@chunks=6"))
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names.count("ping") == 2
    second_ping = names.index("ping", 2)
    assert names[second_ping - 1] == "content_block_delta"
    assert names[second_ping + 1] == "content_block_delta"  # mid-stream, between tokens
    assert names[-2:] == ["message_delta", "message_stop"]
    streamed = assemble(events)
    whole = post(shared, body(model="claude-fake@chunks=6")).json()
    assert streamed["content"] == whole["content"]
    assert streamed["stop_reason"] == whole["stop_reason"] == "end_turn"
    assert streamed["usage"]["output_tokens"] == whole["usage"]["output_tokens"] == 6


def test_usage_placement(shared: httpx.Client) -> None:
    events = stream(shared, body(model="claude-fake@chunks=4&cache_read=100&cache_write=20"))
    start_usage = events[0][1]["message"]["usage"]
    assert start_usage["cache_read_input_tokens"] == 100
    assert start_usage["cache_creation_input_tokens"] == 20
    assert start_usage["cache_creation"]["ephemeral_5m_input_tokens"] == 20
    assert start_usage["output_tokens"] == 1 and start_usage["input_tokens"] > 0
    (final,) = [payload for name, payload in events if name == "message_delta"]
    assert final["usage"]["output_tokens"] == 4  # cumulative, not a delta
    assert final["usage"]["input_tokens"] == start_usage["input_tokens"]  # repeated: never sum
    carrying = [
        name
        for name, payload in events
        if "usage" in payload or "usage" in payload.get("message", {})
    ]
    assert carrying == ["message_start", "message_delta"]


def test_max_tokens_truncates(shared: httpx.Client) -> None:
    message = post(shared, body(max_tokens=2)).json()
    assert message["content"] == [{"type": "text", "text": "This is"}]
    assert (message["stop_reason"], message["usage"]["output_tokens"]) == ("max_tokens", 2)
    streamed = assemble(stream(shared, body(max_tokens=2)))
    assert streamed["stop_reason"] == "max_tokens" and streamed["content"] == message["content"]


def test_stop_sequences_cut_the_text(shared: httpx.Client) -> None:
    message = post(shared, body(stop_sequences=["answer", "fake"])).json()
    assert message["content"] == [{"type": "text", "text": "This is a "}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "fake")
    streamed = assemble(stream(shared, body(stop_sequences=["answer", "fake"])))
    assert streamed["stop_sequence"] == "fake" and streamed["content"] == message["content"]
    mid_word = post(shared, body(stop_sequences=["nswe"])).json()
    assert mid_word["content"][0]["text"] == "This is a fake a"


def test_tool_call_with_preface_under_auto(shared: httpx.Client) -> None:
    message = post(shared, body(tools=[WEATHER, CLOCK])).json()
    preface, call = message["content"]
    assert preface["type"] == "text" and preface["text"]
    assert call["type"] == "tool_use" and call["name"] == "get_weather"  # the first tool
    assert call["id"].startswith("toolu_")
    jsonschema.validate(call["input"], WEATHER["input_schema"])
    assert message["stop_reason"] == "tool_use"
    streamed = assemble(stream(shared, body(tools=[WEATHER, CLOCK])))
    assert streamed["content"][1]["input"] == call["input"]
    assert [b["type"] for b in streamed["content"]] == ["text", "tool_use"]


def test_parallel_calls_for_named_tools(shared: httpx.Client) -> None:
    ask = [{"role": "user", "content": "Call get_time and get_weather for Oslo."}]
    message = post(shared, body(messages=ask, tools=[WEATHER, CLOCK])).json()
    calls = [block for block in message["content"] if block["type"] == "tool_use"]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]  # in `tools` order
    assert len({c["id"] for c in calls}) == 2
    single = body(
        messages=ask,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    calls = [b for b in post(shared, single).json()["content"] if b["type"] == "tool_use"]
    assert [c["name"] for c in calls] == ["get_weather"]
    named = post(
        shared,
        body(messages=[{"role": "user", "content": "get_time please"}], tools=[WEATHER, CLOCK]),
    )
    assert [b.get("name") for b in named.json()["content"]] == [None, "get_time"]


def test_streamed_tool_input_fragments(shared: httpx.Client) -> None:
    ask = [{"role": "user", "content": "get_weather and get_time"}]
    events = stream(shared, body(messages=ask, tools=[WEATHER, CLOCK], tool_choice={"type": "any"}))
    starts = [p for n, p in events if n == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["tool_use", "tool_use"]  # no preface
    assert all(s["content_block"]["input"] == {} for s in starts)
    fragments: dict[int, list[str]] = {0: [], 1: []}
    for name, payload in events:
        if name == "content_block_delta":
            fragments[payload["index"]].append(payload["delta"]["partial_json"])
    weather = fragments[0]
    assert weather[0] == "" and len(weather) >= 4
    joined = "".join(weather)
    jsonschema.validate(json.loads(joined), WEATHER["input_schema"])
    cuts = [len("".join(weather[:k])) for k in range(2, len(weather))]
    assert any(joined[:cut].count('"') % 2 == 1 for cut in cuts)  # a cut inside a string
    assert fragments[1] == [""]  # no parameters: only the empty fragment, input {}
    message = assemble(events)
    assert message["content"][1]["input"] == {}
    assert message["stop_reason"] == "tool_use"


def test_forced_tool_meets_its_schema(shared: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"value": REPORT_SCHEMA}, "required": ["value"]}
    tool = {"name": "json_tool_call", "input_schema": schema}
    request = body(tools=[WEATHER, tool], tool_choice={"type": "tool", "name": "json_tool_call"})
    message = post(shared, request).json()
    (call,) = message["content"]
    assert call["name"] == "json_tool_call"
    jsonschema.validate(call["input"], schema)
    (streamed,) = assemble(stream(shared, request))["content"]
    assert streamed["id"] != call["id"]  # a fresh id per answer
    assert {**streamed, "id": ""} == {**call, "id": ""}


def test_text_answers_instead_of_tools(shared: httpx.Client) -> None:
    none = post(shared, body(tools=[WEATHER], tool_choice={"type": "none"})).json()
    assert [b["type"] for b in none["content"]] == ["text"] and none["stop_reason"] == "end_turn"
    after_results = talk(*HELLO, TOOL_TURN, user(tool_result("toolu_a")), tools=[WEATHER])
    answered = post(shared, after_results).json()
    assert [b["type"] for b in answered["content"]] == ["text"]
    forced_again = post(shared, {**after_results, "tool_choice": {"type": "any"}}).json()
    assert forced_again["stop_reason"] == "tool_use"


def test_structured_output_is_schema_valid_json(shared: httpx.Client) -> None:
    request = body(output_config={"format": {"type": "json_schema", "schema": REPORT_SCHEMA}})
    message = post(shared, request).json()
    (block,) = message["content"]
    jsonschema.validate(json.loads(block["text"]), REPORT_SCHEMA)
    assert message["stop_reason"] == "end_turn"
    streamed = assemble(stream(shared, request))
    assert streamed["content"] == message["content"]
    cut = post(shared, {**request, "max_tokens": 2}).json()
    assert cut["stop_reason"] == "max_tokens" and cut["content"][0]["text"] != block["text"]


def test_thinking_blocks(shared: httpx.Client) -> None:
    request = body(max_tokens=4096, thinking=THINKING)
    message = post(shared, request).json()
    thinking, answer = message["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] and thinking["signature"]
    assert answer["type"] == "text"
    thought = message["usage"]["output_tokens_details"]["thinking_tokens"]
    assert 0 < thought < message["usage"]["output_tokens"]
    events = stream(shared, request)
    deltas = [
        p["delta"]["type"] for n, p in events if n == "content_block_delta" and p["index"] == 0
    ]
    assert deltas[-1] == "signature_delta" and set(deltas[:-1]) == {"thinking_delta"}
    assert assemble(events)["content"] == message["content"]
    omitted = post(shared, body(thinking={"type": "adaptive", "display": "omitted"})).json()
    assert omitted["content"][0] == {
        "type": "thinking",
        "thinking": "",
        "signature": thinking["signature"],
    }


def test_thinking_then_tool_call_uses_ordinal_indexes(shared: httpx.Client) -> None:
    ask = [{"role": "user", "content": "get_weather and get_time"}]
    events = stream(
        shared, body(messages=ask, tools=[WEATHER, CLOCK], max_tokens=4096, thinking=THINKING)
    )
    starts = [
        (p["index"], p["content_block"]["type"]) for n, p in events if n == "content_block_start"
    ]
    assert starts == [(0, "thinking"), (1, "text"), (2, "tool_use"), (3, "tool_use")]


def test_stop_reason_directive(shared: httpx.Client) -> None:
    refusal = post(shared, body(model="claude-fake@stop_reason=refusal")).json()
    assert refusal["stop_reason"] == "refusal" and refusal["stop_details"]["type"] == "refusal"
    events = stream(shared, body(model="claude-fake@stop_reason=pause_turn"))
    assert assemble(events)["stop_reason"] == "pause_turn"
    bad = post(shared, body(model="claude-fake@stop_reason=done"))
    assert "stop_reason must be one of" in assert_vendor_error(bad, 400, "invalid_request_error")
    unknown = post(shared, body(model="claude-fake@no_such_knob=1"))
    assert "unknown knob" in assert_vendor_error(unknown, 400, "invalid_request_error")


def test_vendor_knob_parsing() -> None:
    knobs = apply_vendor_knobs(VendorKnobs(), {"cache_read": "12", "stop_reason": "refusal"})
    assert knobs == VendorKnobs(cache_read=12, cache_write=0, stop_reason="refusal")
    for bad in (
        {"cache_read": "-1"},
        {"cache_write": "x"},
        {"cache_read": True},
        {"stop_reason": "x"},
    ):
        with pytest.raises(DirectiveError):
            apply_vendor_knobs(VendorKnobs(), bad)


# -- injected behaviour -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "status", "error_type", "retry_after"),
    [
        ("status=529", 529, "overloaded_error", "1"),
        ("status=429&retry_after=7", 429, "rate_limit_error", "7"),
        ("status=429&retry_after=", 429, "rate_limit_error", None),
        ("status=500", 500, "api_error", None),
        ("status=503", 503, "api_error", None),
        ("status=401", 401, "authentication_error", None),
        ("status=404", 404, "not_found_error", None),
        ("status=413", 413, "request_too_large", None),
        ("status=504", 504, "timeout_error", None),
    ],
)
def test_status_directive(
    shared: httpx.Client, directive: str, status: int, error_type: str, retry_after: str | None
) -> None:
    response = post(shared, body(model=f"claude-fake@{directive}", stream=True))
    assert_vendor_error(response, status, error_type)
    assert response.headers.get("retry-after") == retry_after


def test_status_directive_custom_type_and_message(shared: httpx.Client) -> None:
    response = post(
        shared, body(model="claude-fake@status=500&error_type=odd_error&error_message=boom")
    )
    assert assert_vendor_error(response, 500, "odd_error") == "boom"


def read_raw(client: httpx.Client, request: dict[str, Any]) -> bytes:
    """The bytes of a stream that ends in a connection reset."""
    received = b""
    with (
        pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
        client.stream("POST", "/messages", json={**request, "stream": True}) as response,
    ):
        assert response.status_code == 200
        for part in response.iter_raw():
            received += part
    return received


def test_reset_after(shared: httpx.Client) -> None:
    received = read_raw(shared, body(model="claude-fake@reset_after=4&chunks=10"))
    assert received.count(b"event: ") == 4 and received.endswith(b"\n\n")
    assert b"message_stop" not in received
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(shared, body(model="claude-fake@reset_after=0", stream=True))  # before any byte
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(shared, body(model="claude-fake@reset_after=3"))  # non-stream: reset, not answered


def test_error_after_sends_the_vendor_error_event(shared: httpx.Client) -> None:
    events = stream(shared, body(model="claude-fake@error_after=5&chunks=10"))
    assert [name for name, _ in events][:5] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]
    assert len(events) == 6
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    custom = stream(
        shared, body(model="claude-fake@error_after=1&error_type=api_error&error_message=boom")
    )
    assert custom[-1][1]["error"] == {"type": "api_error", "message": "boom"} and len(custom) == 2
    past_end = stream(shared, body(model="claude-fake@error_after=999&chunks=2"))
    assert past_end[-2][0] == "message_stop" and past_end[-1][0] == "error"


def test_hang_and_disconnects(fake: tuple[FakeAnthropic, httpx.Client]) -> None:
    server, client = fake
    with pytest.raises(httpx.ReadTimeout):
        post(client, body(model="claude-fake@hang"), timeout=0.3)
    assert server.wait_for_disconnects(1, timeout_s=5.0)
    request = body(model="claude-fake@chunks=500&chunk_interval_ms=20", stream=True)
    with client.stream("POST", "/messages", json=request) as response:
        assert next(response.iter_lines()).startswith("event: message_start")
    started = time.monotonic()
    assert server.wait_for_disconnects(2, timeout_s=5.0)
    assert time.monotonic() - started < 1.0
    assert server.disconnects == 2


def test_fail_rate_spread_and_seeded() -> None:
    with (
        run_fake_anthropic(fail_rate=0.5) as (_, url),
        httpx.Client(base_url=url, headers=HEADERS) as client,
    ):
        assert [post(client, body()).status_code for _ in range(5)] == [200, 500, 200, 500, 200]
        assert_vendor_error(post(client, body()), 500, "api_error")
    with (
        run_fake_anthropic(fail_rate=0.3, seed=7) as (_, url),
        httpx.Client(base_url=url, headers=HEADERS) as client,
    ):
        assert {post(client, body()).status_code for _ in range(40)} == {200, 500}


def test_pacing_and_configure(fake: tuple[FakeAnthropic, httpx.Client]) -> None:
    server, client = fake
    started = time.monotonic()
    stream(client, body(model="claude-fake@ttft_ms=100&chunks=4&chunk_interval_ms=30"))
    assert time.monotonic() - started >= 0.1 + 3 * 0.03
    started = time.monotonic()
    stream(client, body(model="claude-fake@chunks=3&tokens_per_s=20"))
    assert time.monotonic() - started >= 2 * 0.05
    server.configure(latency_ms=120, chunks=2, cache_read=9)
    started = time.monotonic()
    message = post(client, body()).json()
    assert time.monotonic() - started >= 0.12
    assert (
        message["usage"]["output_tokens"] == 2 and message["usage"]["cache_read_input_tokens"] == 9
    )


def test_paced_stream_arrives_in_pieces(fake: tuple[FakeAnthropic, httpx.Client]) -> None:
    _, client = fake
    request = body(model="claude-fake@chunks=4&chunk_interval_ms=40", stream=True)
    arrivals: list[float] = []
    with client.stream("POST", "/messages", json=request) as response:
        for line in response.iter_lines():
            if '"text_delta"' in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.03 for gap in gaps), gaps


def test_requests_are_recorded(fake: tuple[FakeAnthropic, httpx.Client]) -> None:
    server, client = fake
    before = time.monotonic()
    request = body(temperature=0.5)
    post(client, request, headers={"anthropic-beta": "x-2025"})
    (recorded,) = server.requests
    assert (recorded.method, recorded.path, recorded.body) == ("POST", "/v1/messages", request)
    assert recorded.headers["x-api-key"] == DEFAULT_KEY
    assert recorded.headers["anthropic-beta"] == "x-2025"
    assert before <= recorded.time <= time.monotonic()
    assert server.wait_for_requests(1, timeout_s=0.1) and server.request_count == 1
    assert not server.wait_for_requests(2, timeout_s=0.05)


def test_answers_are_deterministic() -> None:
    request = body(tools=[WEATHER], messages=[{"role": "user", "content": "weather?"}])
    answers = []
    for _ in range(2):
        with (
            run_fake_anthropic() as (_, url),
            httpx.Client(base_url=url, headers=HEADERS) as client,
        ):
            answers.append(
                [post(client, request).content, post(client, {**request, "stream": True}).content]
            )
    assert answers[0] == answers[1]  # same requests in the same order: same bytes
    ids = [json.loads(answers[0][0])["content"][1]["id"], json.loads(answers[0][0])["id"]]
    assert ids[0].startswith("toolu_") and ids[1].startswith("msg_")
