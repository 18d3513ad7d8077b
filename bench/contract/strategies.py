"""Hypothesis strategies of valid Chat Completions requests, across the request schema.

Facts from OpenAI's OpenAPI document (CreateChatCompletionRequest and the message, part,
tool and response-format schemas; docs/wire-formats.md A2-A4). What is drawn is valid
for the schema *and* sensible to send to a real endpoint:

- conversations are coherent: an optional system or developer message, a user message,
  then turns where every assistant tool call is answered by `tool` messages right after
  it (vendors refuse calls without results), ending on a user or tool message;
- media are real bytes in data URLs (a PNG, a WAV, a PDF), so nothing is fetched from
  the network and vendors that check magic bytes accept them;
- tool parameters and `json_schema` schemas are real JSON Schemas in the subset strict
  mode takes (every property required, `additionalProperties: false`), so answers
  can be validated against them;
- numbers stay in the documented ranges; names match `^[a-zA-Z0-9_-]{1,64}$`.

`chat_requests` draws a whole request; its switches narrow it for one property
(`tools="strict"` for the tool-call property...). fuzz/test_validate_props.py draws
from it too, with `extensions=True` adding the vendor extension keys a validator must
let through.

Pure module: no I/O.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson
from hypothesis import strategies as st

__all__ = [
    "PDF",
    "PNG",
    "WAV",
    "chat_requests",
    "conversations",
    "json_schemas",
    "names",
    "nullable",
    "texts",
    "tool_choices",
    "tool_lists",
]

Body = dict[str, Any]

# A real 1x1 PNG, a WAV header with no samples, a minimal PDF (vendors check the bytes).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)
WAV = (
    b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
    b"@\x1f\x00\x00\x80>\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

_WORDS = (
    "What is the weather in Paris?",
    "Hello!",
    "Summarise this in one line.",
    "Thanks, go on.",
    "List three colours.",
    "ünïcødé ✓ 日本語",
    "Line one\nline two",
)
texts = st.sampled_from(_WORDS) | st.text(min_size=1, max_size=16)
names = st.sampled_from(["get_weather", "get_time", "search_docs", "lookup-user", "f"]) | (
    st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
)


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`strategy` or null (the schema's `nullable: true`)."""
    return st.none() | strategy


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of `choices`, each drawn in proportion to its weight."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda k: table[k])


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# --------------------------------------------------------------------------- JSON Schemas

_PROPERTY_NAMES = st.sampled_from(["city", "unit", "count", "tags", "when", "ok", "score", "x"])
_LEAVES: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "string", "enum": ["celsius", "fahrenheit"]},
        {"type": ["string", "null"]},
        {"type": "array", "items": {"type": "string"}},
    ]
)


def json_schemas(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Object schemas strict mode accepts: every property required, no others allowed."""
    inner = _LEAVES if depth <= 1 else (_LEAVES | json_schemas(depth - 1))
    return st.dictionaries(_PROPERTY_NAMES, inner, max_size=4).map(
        lambda props: {
            "type": "object",
            "properties": props,
            "required": sorted(props),
            "additionalProperties": False,
        }
    )


# --------------------------------------------------------------------------- messages


def _parts(*kinds: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(*kinds), min_size=1, max_size=3)


_text_part = st.builds(lambda t: {"type": "text", "text": t}, texts)
_refusal_part = st.builds(lambda t: {"type": "refusal", "refusal": t}, texts)
_image_part = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries(
            {"url": st.just(_data_url("image/png", PNG))},
            optional={"detail": st.sampled_from(["auto", "low", "high"])},
        ),
    }
)
_audio_part = st.just(
    {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(WAV).decode(), "format": "wav"},
    }
)
_file_part = st.fixed_dictionaries(
    {
        "type": st.just("file"),
        "file": st.fixed_dictionaries(
            {"file_data": st.just(_data_url("application/pdf", PDF))},
            optional={"filename": st.just("a.pdf")},
        ),
    }
)
_user_parts = _weighted((6, _text_part), (2, _image_part), (1, _audio_part), (1, _file_part))

_system = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer"]), "content": texts | _parts(_text_part)},
    optional={"name": names},
)
_user = st.fixed_dictionaries(
    {"role": st.just("user"), "content": _weighted((3, texts), (2, _parts(_user_parts)))},
    optional={"name": names},
)
_assistant_text = st.fixed_dictionaries(
    {"role": st.just("assistant"), "content": texts | _parts(_text_part, _refusal_part)},
    optional={"name": names, "refusal": st.none(), "tool_calls": st.none()},
)


@st.composite
def _tool_turn(draw: st.DrawFn, turn: int) -> list[Body]:
    """An assistant turn calling 1-2 functions, then one `tool` result per call."""
    called = draw(st.lists(names, min_size=1, max_size=2, unique=True))
    calls = [
        {
            "id": f"call_{turn}_{k}",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps({"q": k}).decode()},
        }
        for k, name in enumerate(called)
    ]
    assistant: Body = {"role": "assistant", "tool_calls": calls}
    content = draw(st.sampled_from(["absent", "null", "text"]))
    if content != "absent":
        assistant["content"] = None if content == "null" else draw(texts)
    results: list[Body] = [
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": draw(texts | _parts(_text_part)),
        }
        for call in calls
    ]
    return [assistant, *results]


@st.composite
def _function_turn(draw: st.DrawFn) -> list[Body]:
    """The deprecated form: an assistant `function_call`, then a `function` message."""
    name = draw(names)
    call = {"name": name, "arguments": "{}"}
    return [
        {"role": "assistant", "content": None, "function_call": call},
        {"role": "function", "name": name, "content": draw(nullable(texts))},
    ]


@st.composite
def conversations(draw: st.DrawFn, media: bool = True) -> list[Body]:
    """A coherent conversation (see the module doc); `media=False` keeps it to text."""
    user = _user if media else st.fixed_dictionaries({"role": st.just("user"), "content": texts})
    messages: list[Body] = []
    if draw(st.booleans()):
        messages.append(draw(_system))
    messages.append(draw(user))
    for turn in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["text", "text", "calls", "calls", "function"]))
        if kind == "text":
            messages += [draw(_assistant_text), draw(user)]
        elif kind == "calls":
            messages += draw(_tool_turn(turn))
        else:
            messages += draw(_function_turn())
    return messages


# --------------------------------------------------------------------------- tools


@st.composite
def tool_lists(draw: st.DrawFn, strict: bool | None = None) -> list[Body]:
    """1-3 function tools with distinct names; `strict` fixes their `strict` flag."""
    tools = []
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        function: Body = {"name": name}
        if strict is not None or draw(st.booleans()):
            function["parameters"] = draw(json_schemas())
        if draw(st.booleans()):
            function["description"] = draw(texts)
        if strict is not None:
            function["strict"] = strict
        elif draw(st.booleans()):
            function["strict"] = draw(st.booleans())
        tools.append({"type": "function", "function": function})
    return tools


def tool_choices(tools: list[Body]) -> st.SearchStrategy[Any]:
    """A `tool_choice` for `tools`: a mode, a named function, or `allowed_tools`."""
    tool_names = [tool["function"]["name"] for tool in tools]
    named = st.sampled_from(tool_names).map(lambda n: {"type": "function", "function": {"name": n}})
    allowed = st.builds(
        lambda mode, picked: {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": mode,
                "tools": [{"type": "function", "function": {"name": n}} for n in picked],
            },
        },
        st.sampled_from(["auto", "required"]),
        st.lists(st.sampled_from(tool_names), min_size=1, unique=True),
    )
    modes = st.sampled_from(["required", "auto", "none"])
    return _weighted((2, named), (2, modes), (1, allowed))


_response_formats = _weighted(
    (1, st.just({"type": "text"})),
    (1, st.just({"type": "json_object"})),
    (
        3,
        st.builds(
            lambda name, schema, strict: {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": strict},
            },
            names,
            json_schemas(),
            st.booleans(),
        ),
    ),
)


def strict_json_schema_formats() -> st.SearchStrategy[Body]:
    """`response_format` json_schema with `strict: true` (output must validate)."""
    return st.builds(
        lambda name, schema: {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        },
        names,
        json_schemas(),
    )


# --------------------------------------------------------------------------- requests


def _numbers(lo: int, hi: int) -> st.SearchStrategy[Any]:
    return st.integers(lo, hi) | st.floats(lo, hi)


SAMPLING: dict[str, st.SearchStrategy[Any]] = {
    "temperature": nullable(_numbers(0, 2)),
    "top_p": nullable(_numbers(0, 1)),
    "presence_penalty": nullable(_numbers(-2, 2)),
    "frequency_penalty": nullable(_numbers(-2, 2)),
    "seed": nullable(st.integers(-(2**63), 2**63 - 1)),
    "stop": nullable(texts | st.lists(texts, min_size=1, max_size=4)),
    "logit_bias": nullable(
        st.dictionaries(st.from_regex(r"[0-9]{1,6}", fullmatch=True), st.integers(-100, 100))
    ),
    "user": texts,
    "safety_identifier": st.text(min_size=1, max_size=64),
    "metadata": nullable(st.dictionaries(st.text(max_size=64), texts, max_size=16)),
    "store": nullable(st.booleans()),
    "reasoning_effort": nullable(
        st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max"])
    ),
    "verbosity": nullable(st.sampled_from(["low", "medium", "high"])),
    "service_tier": nullable(st.sampled_from(["auto", "default", "flex", "scale", "priority"])),
    "modalities": st.just(["text"]),
}
"""Optional top-level fields that change how, not what, a model answers."""


_ANY_MODEL = st.just("m")


@st.composite
def chat_requests(
    draw: st.DrawFn,
    model: st.SearchStrategy[str] = _ANY_MODEL,
    *,
    stream: bool | None = None,
    tools: Literal["any", "strict", "none"] = "any",
    response_format: Literal["any", "strict", "none"] = "any",
    sampling: bool = True,
    n: bool = True,
    max_tokens: bool = True,
    media: bool = True,
    extensions: bool = False,
) -> Body:
    """A valid request. `stream` None draws it (with `stream_options`); `tools="strict"`
    always sends strict tools and a tool choice, "none" never tools; `response_format`
    likewise ("strict": json_schema with strict true); `sampling`, `n`, `max_tokens`,
    `media` allow those fields; `extensions` adds vendor extension keys (unknown to the
    schema, which a validator must let through)."""
    body: Body = {"model": draw(model), "messages": draw(conversations(media))}
    if extensions and draw(st.booleans()):
        body["messages"][-1]["x_vendor"] = draw(st.integers() | texts)
    if sampling:
        for key, strategy in SAMPLING.items():
            if draw(st.integers(0, 3)) == 3:
                body[key] = draw(strategy)
    if n and draw(st.integers(0, 3)) == 3:
        body["n"] = draw(st.sampled_from([None, 1, 2, 3]))
    if max_tokens and draw(st.integers(0, 3)) == 3:
        key = draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))
        body[key] = draw(nullable(st.integers(1, 4096)))
    if draw(st.integers(0, 4)) == 4:
        body["logprobs"] = draw(st.booleans())
        if body["logprobs"] and draw(st.booleans()):
            body["top_logprobs"] = draw(st.integers(0, 20))
    if tools == "strict" or (tools == "any" and draw(st.booleans())):
        body["tools"] = draw(tool_lists(strict=True if tools == "strict" else None))
        if tools == "strict" or draw(st.booleans()):
            body["tool_choice"] = draw(tool_choices(body["tools"]))
        if draw(st.integers(0, 3)) == 3:
            body["parallel_tool_calls"] = draw(st.booleans())
    if response_format == "strict":
        body["response_format"] = draw(strict_json_schema_formats())
    elif response_format == "any" and draw(st.integers(0, 2)) == 2:
        body["response_format"] = draw(_response_formats)
    want_stream = draw(st.booleans()) if stream is None else stream
    if want_stream:
        body["stream"] = True
        if draw(st.booleans()):
            body["stream_options"] = {"include_usage": draw(st.booleans())}
    elif draw(st.integers(0, 3)) == 3:
        body["stream"] = draw(st.sampled_from([False, None]))
    if extensions and draw(st.booleans()):
        body["x_vendor_field"] = draw(st.integers() | texts | st.lists(st.integers(), max_size=3))
    return body
