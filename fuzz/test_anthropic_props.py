"""Property tests of gateway.providers.anthropic.

- Any split of every recorded Anthropic stream (tests/fixtures/anthropic/*.sse), under
  every combination of the options that change the output (response_format included,
  which holds text back), translates to the same bytes as the whole stream fed at once.
- Every valid OpenAI request drawn from `requests()` (text, images, files, tool
  round-trips, system and developer messages, tools, tool_choice, response_format,
  sampling and reasoning fields, with the Anthropic deployment options) either
  translates to a body the strict fake's checker (`bench/fakes/anthropic_rules.py`)
  accepts, or is refused with `InvalidRequest` whose `param` is a real path into the
  request. Requests the validator refuses are discarded, so only what reaches a
  provider is drawn. `max_tokens` never exceeds the option `max_output_tokens`.
"""

from __future__ import annotations

import base64
import copy
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bench.contract.paths import MISSING, parse_param, resolve
from bench.fakes.anthropic_rules import VendorRefusal, check_request
from gateway.config import AnthropicOptions
from gateway.errors import InvalidRequest
from gateway.openai.sse import DONE
from gateway.openai.validate import validate_chat_request
from gateway.providers.anthropic.provider import AnthropicProvider
from gateway.providers.base import CallContext, Deployment

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "anthropic"
STREAMS = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.sse"))}
PROVIDER = AnthropicProvider()
PROPS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPLITS = settings(max_examples=150, deadline=None)


def context(
    stream: bool,
    include_usage: bool = False,
    response_format: str | None = None,
    **options: Any,
) -> CallContext:
    deployment = Deployment(
        model_id="claude",
        provider_name="anthropic",
        kind="anthropic",
        upstream_model="claude-sonnet-4-5",
        api_key="sk-ant-fuzz",
        options=AnthropicOptions(**{k: v for k, v in options.items() if k != "max_output_tokens"}),
        max_output_tokens=options.get("max_output_tokens"),
    )
    return CallContext(
        deployment,
        stream,
        include_usage,
        "chatcmpl-fuzz",
        1730000000,
        response_format=response_format,
    )


# --------------------------------------------------------------------------- streams


def translate_stream(raw: bytes, ctx: CallContext, cuts: list[int]) -> bytes:
    """The client's bytes: the translator's content, then what the relay ends it with."""
    translator = PROVIDER.new_stream_translator(ctx)
    bounds = [0, *sorted(set(cuts)), len(raw)]
    out = b"".join(translator.feed(raw[a:b]) for a, b in pairwise(bounds))
    if translator.error is None:
        out += translator.close()
    assert b"data: [DONE]" not in out and b'data: {"error"' not in out
    return out + (DONE if translator.error is None else translator.error.sse_event())


@SPLITS
@given(
    name=st.sampled_from(sorted(STREAMS)),
    include_usage=st.booleans(),
    reasoning_output=st.booleans(),
    response_format=st.sampled_from([None, "json_schema", "json_object"]),
    crlf=st.booleans(),
    data=st.data(),
)
def test_any_split_of_a_recorded_stream_gives_the_same_chunks(
    name: str,
    include_usage: bool,
    reasoning_output: bool,
    response_format: str | None,
    crlf: bool,
    data: st.DataObject,
) -> None:
    raw = STREAMS[name].replace(b"\n", b"\r\n") if crlf else STREAMS[name]
    ctx = context(True, include_usage, response_format, reasoning_output=reasoning_output)
    cuts = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=60), label="cuts")
    assert translate_stream(raw, ctx, cuts) == translate_stream(raw, ctx, [])


# --------------------------------------------------------------------------- requests

TOOL_NAMES = ("get_weather", "get_time", "search_docs", "lookup-user")
MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/gif": b"GIF89a\x01\x00\x01\x00\x80\x00",
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
}
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of `choices`, each drawn in proportion to its weight."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda k: table[k])


texts = st.sampled_from(["", " ", "\n\t", "hello", "Weather in Paris?", "ünïcødé ✓", "a\nb "])
prose = st.sampled_from(["hi", "What is this?", "Summarise the file.", "Thanks!", "Go on."])
words = weighted((3, prose), (1, texts))  # mostly content, sometimes blank or odd


@st.composite
def image_urls(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(["data"] * 8 + ["mislabelled"] * 2 + ["http"] * 4 + ["junk", "bmp"])
    )
    declared = draw(st.sampled_from(sorted(MAGIC)))
    if kind == "http":
        return draw(st.sampled_from(["https://example.com/cat.png", "http://img.test/a.jpg"]))
    if kind == "junk":
        return f"data:{declared};base64,{b64(b'not an image at all')}"
    if kind == "bmp":
        return f"data:image/bmp;base64,{b64(b'BM' + bytes(12))}"
    actual = declared if kind == "data" else draw(st.sampled_from(sorted(MAGIC)))
    return f"data:{declared};base64,{b64(MAGIC[actual] + draw(st.binary(max_size=16)))}"


@st.composite
def file_parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["pdf"] * 8 + ["bare_pdf", "text", "text", "bad_text", "file_id", "wav"])
    )
    file: dict[str, Any] = {}
    if kind == "pdf":
        file["file_data"] = "data:application/pdf;base64," + b64(PDF)
    elif kind == "bare_pdf":
        file["file_data"] = b64(PDF)
    elif kind == "text":
        file["file_data"] = "data:text/plain;base64," + b64(draw(prose).encode())
    elif kind == "bad_text":
        file["file_data"] = "data:text/plain;base64," + b64(b"\xff\xfe\x00")
    elif kind == "wav":
        file["file_data"] = "data:audio/wav;base64," + b64(b"RIFF\x00\x00\x00\x00WAVE")
    else:
        file["file_id"] = "file-abc123"
    if draw(st.booleans()):
        file["filename"] = draw(st.sampled_from(["report.pdf", "notes.txt", "x"]))
    return {"type": "file", "file": file}


text_parts = st.builds(lambda t: {"type": "text", "text": t}, words)
user_parts = st.lists(
    weighted(
        (6, text_parts),
        (
            4,
            st.builds(
                lambda url, detail: {"type": "image_url", "image_url": {"url": url, **detail}},
                image_urls(),
                st.sampled_from([{}, {"detail": "low"}, {"detail": "high"}]),
            ),
        ),
        (3, file_parts()),
        (1, st.just({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}})),
    ),
    min_size=1,
    max_size=3,
)
user_messages = st.builds(lambda content: {"role": "user", "content": content}, words | user_parts)
system_messages = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["system", "developer"]),
    words | st.lists(text_parts, min_size=1, max_size=2),
)
assistant_texts = st.builds(
    lambda content: {"role": "assistant", "content": content},
    words
    | st.lists(
        text_parts | st.builds(lambda t: {"type": "refusal", "refusal": t}, prose),
        min_size=1,
        max_size=2,
    ),
)
call_ids = st.builds(
    "{}{}".format,
    st.sampled_from(["call_", "toolu_01", "call:", "id with spaces ", ""]),
    st.integers(0, 10**6),
)
good_arguments = st.sampled_from(['{"city":"Paris"}', "{}", "", ' {"q": [1, 2]} '])
arguments = weighted((15, good_arguments), (1, st.sampled_from(["[1]", "{oops"])))


@st.composite
def tool_round_trips(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An assistant turn with tool calls, then its results (shuffled), maybe more."""
    count = draw(st.integers(1, 3))
    if draw(st.booleans()):  # numbered per turn, as some clients do: repeats across turns
        ids = [f"call_{k}" for k in range(count)]
    else:
        ids = draw(st.lists(call_ids, min_size=count, max_size=count, unique=True))
    calls = [
        {
            "id": cid,
            "type": "function",
            "function": {"name": draw(st.sampled_from(TOOL_NAMES)), "arguments": draw(arguments)},
        }
        for cid in ids
    ]
    turn: dict[str, Any] = {"role": "assistant", "tool_calls": calls}
    turn["content"] = draw(st.none() | words)
    answered = draw(st.permutations(ids))
    if draw(st.integers(0, 19)) == 0:
        answered = answered[1:]  # a call left without a result
    results = [{"role": "tool", "tool_call_id": cid, "content": draw(words)} for cid in answered]
    out = [turn, *results]
    if draw(st.booleans()):
        out.append(draw(user_messages))
    return out


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    opening = [draw(user_messages)] if draw(st.integers(0, 4)) else []
    segments = draw(
        st.lists(
            st.one_of(
                user_messages.map(lambda m: [m]),
                system_messages.map(lambda m: [m]),
                assistant_texts.map(lambda m: [m]),
                tool_round_trips(),
            ),
            min_size=1,
            max_size=5,
        )
    )
    return opening + [m for segment in segments for m in segment]


parameters = st.sampled_from(
    [
        None,
        None,
        {"type": "object", "properties": {"city": {"type": "string"}}},
        {"type": "object", "properties": {}},
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        {"properties": {"q": {"type": "string"}}},
        {"type": "object", "additionalProperties": False, "properties": {"n": {"type": "integer"}}},
        {"type": "array", "items": {"type": "string"}},
    ]
)


@st.composite
def tool_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(TOOL_NAMES), min_size=1, max_size=3, unique=True))
    tools: list[dict[str, Any]] = []
    for name in names:
        spec: dict[str, Any] = {"name": name}
        schema = draw(parameters)
        if schema is not None:
            spec["parameters"] = schema
        if draw(st.booleans()):
            spec["description"] = draw(prose)
        if draw(st.booleans()):
            spec["strict"] = draw(st.booleans())
        tools.append({"type": "function", "function": spec})
    if draw(st.integers(0, 14)) == 0:
        tools.append({"type": "custom", "custom": {"name": "grep"}})
    return tools


@st.composite
def tool_choices(draw: st.DrawFn, tools: list[dict[str, Any]]) -> Any:
    functions = [t["function"]["name"] for t in tools if t["type"] == "function"]
    kind = draw(st.sampled_from(["auto", "none", "required", "named", "allowed"]))
    if kind in ("auto", "none", "required") or not functions:
        return kind if kind in ("auto", "none", "required") else "auto"
    if kind == "named":
        return {"type": "function", "function": {"name": draw(st.sampled_from(functions))}}
    chosen = draw(st.lists(st.sampled_from(functions), min_size=1, unique=True))
    return {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": draw(st.sampled_from(["auto", "required"])),
            "tools": [{"type": "function", "function": {"name": n}} for n in chosen],
        },
    }


schemas = st.sampled_from(
    [
        {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "string", "enum": ["yes", "no"]},
        {
            "type": "object",
            "properties": {"tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}}},
            "$defs": {"tag": {"type": "string"}},
        },
        {"anyOf": [{"$ref": "#/$defs/n"}, {"type": "null"}], "$defs": {"n": {"type": "number"}}},
    ]
)
response_formats = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.builds(
        lambda schema, strict: {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": strict},
        },
        schemas,
        st.booleans(),
    ),
    st.just({"type": "json_schema", "json_schema": {"name": "free"}}),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude", "messages": draw(conversations())}
    if draw(st.booleans()):
        body["tools"] = draw(tool_lists())
        if draw(st.booleans()):
            body["tool_choice"] = draw(tool_choices(body["tools"]))
        if draw(st.booleans()):
            body["parallel_tool_calls"] = draw(st.booleans())
    elif draw(st.integers(0, 4)) == 0:  # a choice with no tools (or none left)
        body["tools"] = draw(st.sampled_from([[], None]))
        key = draw(st.sampled_from(["tool_choice", "function_call"]))
        body[key] = draw(st.sampled_from(["auto", "none", "required"]))
        if key == "function_call" and body[key] == "required":
            body[key] = "auto"
        if body["tools"] is None:
            del body["tools"]
    optional: dict[str, st.SearchStrategy[Any]] = {
        "response_format": response_formats,
        "temperature": st.none() | st.floats(0, 2) | st.integers(0, 2),
        "top_p": st.none() | st.floats(0, 1),
        "max_tokens": st.none() | st.integers(1, 40_000),
        "max_completion_tokens": st.none() | st.integers(1, 40_000),
        "stop": st.none() | texts | prose | st.lists(texts | prose, min_size=1, max_size=4),
        "reasoning_effort": st.sampled_from(
            ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
        ),
        "n": st.sampled_from([None, 1, 1, 2]),
        "logprobs": st.sampled_from([None, False, False, True]),
        "seed": st.integers(0, 2**31),
        "presence_penalty": st.floats(-2, 2),
        "user": st.sampled_from(["user-42", "", "bob@example.com", "5f0c8a1e-opaque"]),
        "service_tier": st.sampled_from(["auto", "default", "flex"]),
        "stream": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(strategy)
    return body


options = st.fixed_dictionaries(
    {},
    optional={
        "structured_output": st.sampled_from(["tool", "native"]),
        "reasoning_output": st.booleans(),
        "default_max_tokens": st.integers(1, 8192),
        "max_output_tokens": st.sampled_from([1024, 4096, 8192, 32000, 64000]),
    },
)


def assert_resolves(body: Any, param: str) -> None:
    """`param` (`messages[2].content[0].image_url.url`) names a value present in `body`."""
    path = parse_param(param)
    assert path is not None and resolve(body, path) is not MISSING, (param, body)


@PROPS
@given(body=requests(), opts=options)
def test_valid_requests_translate_to_accepted_bodies_or_name_the_field(
    body: dict[str, Any], opts: dict[str, Any]
) -> None:
    try:
        validate_chat_request(body)
    except InvalidRequest:
        assume(False)
    snapshot = copy.deepcopy(body)
    ctx = context(bool(body.get("stream")), **opts)
    try:
        request = PROVIDER.build_request(body, ctx)
    except InvalidRequest as error:
        assert error.param, error
        assert_resolves(body, error.param)
        assert error.http_status == 400
        event("refused at " + re.sub(r"\[\d+\]", "[]", error.param))
        return
    finally:
        assert body == snapshot  # never mutates the client's body
    assert request.payload is not None
    event("translated" + (" with tools" if "tools" in request.payload else ""))
    assert orjson.loads(request.body) == request.payload
    cap = opts.get("max_output_tokens")
    assert cap is None or request.payload["max_tokens"] <= cap
    try:
        check_request(request.payload)
    except VendorRefusal as refusal:  # pragma: no cover - the failure report
        raise AssertionError(f"{refusal.message}\n{orjson.dumps(request.payload)!r}") from None
