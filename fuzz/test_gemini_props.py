"""Property tests of the Gemini translator.

1. Any split of every recorded Gemini stream (tests/fixtures/gemini/*.sse) translates to
   the same bytes as the whole stream fed at once.
2. Every generated valid OpenAI request either translates to a generateContent body that
   the strict fake's checker (bench/fakes/gemini_rules.py) accepts, or is refused with
   `InvalidRequest` whose `param` is a real path into the request.
3. Upstream JSON of any shape (wrong types anywhere in candidates, parts, logprobs,
   usageMetadata, errors), as a body or as stream events, either translates to OpenAI
   objects of the right types or is a 502: no other exception ever escapes.

The request generator draws whole conversations, not random JSON: tool-call turns
answered (or not) by tool messages in any order, legacy function calls, media of
supported and unsupported types with real leading bytes (some labelled with another
image type, as clients do), tool schemas with the JSON
Schema keywords Gemini chokes on, tool choices, sampling fields at their limits,
thought signatures minted by the fake and carried in tool-call ids, and models of
both thinking generations.
"""

from __future__ import annotations

import base64
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.contract.paths import MISSING, parse_param, resolve
from bench.fakes.gemini_rules import VendorRefusal, check_request, mint_thought_signature
from gateway.config import GeminiOptions
from gateway.errors import GatewayError, InvalidRequest
from gateway.openai.sse import DONE
from gateway.openai.validate import validate_chat_request
from gateway.providers.base import CallContext, Deployment, Media
from gateway.providers.gemini.ids import encode_call_id
from gateway.providers.gemini.provider import GeminiProvider

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "gemini"
STREAMS = sorted(FIXTURES.glob("*.sse"))
PROPS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
P = GeminiProvider()


def context(model: str, stream: bool, media: dict[str, Media], **options: Any) -> CallContext:
    deployment = Deployment(
        "gem", "google", "gemini", model, api_key="k", options=GeminiOptions(**options)
    )
    return CallContext(deployment, stream, stream, "chatcmpl-prop", 1730000000, media)


# --------------------------------------------------------------------------- 1: splits


def _translate(pieces: list[bytes], reasoning: bool, include_usage: bool) -> bytes:
    c = context("gemini-2.5-flash", True, {}, reasoning_output=reasoning)
    c.include_usage = include_usage
    t = P.new_stream_translator(c)
    out = b"".join(t.feed(p) for p in pieces)
    if t.error is None:
        out += t.close()
    assert b"data: [DONE]" not in out and b'data: {"error"' not in out
    return out + (DONE if t.error is None else t.error.sse_event())


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 1 << 16), max_size=40),
    flags=st.tuples(st.booleans(), st.booleans()),
)
def test_any_split_of_a_recorded_stream_gives_the_same_bytes(
    path: Path, cuts: list[int], flags: tuple[bool, bool]
) -> None:
    raw = path.read_bytes()
    points = sorted({c % (len(raw) + 1) for c in cuts})
    bounds = [0, *points, len(raw)]
    pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    assert _translate(pieces, *flags) == _translate([raw], *flags)


# --------------------------------------------------------------------------- 2: requests

MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-3-flash-preview"]
FETCHED = "https://example.com/photo"
FILES_URI = "https://generativelanguage.googleapis.com/v1beta/files/abc123"

_MEDIA_BYTES = {
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF",
    "image/webp": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    "image/gif": b"GIF89a\x01\x00\x01\x00",
    "application/pdf": b"%PDF-1.7\n%\xe2\xe3",
    "audio/wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    "audio/mp3": b"ID3\x03\x00\x00\x00\x00\x00\x00",
    "text/plain": b"plain text notes",
}


def rarely(one_in: int = 8) -> st.SearchStrategy[bool]:
    """True about once in `one_in` draws (a middle value: Hypothesis favours the ends)."""
    return st.integers(0, one_in - 1).map(lambda n: n == one_in // 2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(mime: str) -> str:
    return f"data:{mime};base64,{b64(_MEDIA_BYTES[mime])}"


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good`, or now and then `bad` (what the translator must refuse or survive)."""
    return rarely(6).flatmap(lambda b: bad if b else good)


texts = st.sampled_from(["", " ", "hi", "Explain this.", "ünïcødé ✓", "multi\nline"])
names = mostly(
    st.sampled_from(["get_weather", "lookup", "_private", "ns-tool_2"]), st.just("9lives")
)
_IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"]
images = mostly(
    st.sampled_from(_IMAGE_TYPES).map(data_url)
    | st.tuples(st.sampled_from(_IMAGE_TYPES), st.sampled_from(_IMAGE_TYPES)).map(
        lambda t: f"data:{t[0]};base64,{b64(_MEDIA_BYTES[t[1]])}"  # labelled as another type
    )
    | st.sampled_from([FETCHED, FILES_URI]),
    st.sampled_from([data_url("image/gif"), "https://example.com/not-fetched.png"]),
).map(lambda url: {"type": "image_url", "image_url": {"url": url, "detail": "low"}})
audio = st.sampled_from(["wav", "mp3"]).map(
    lambda f: {
        "type": "input_audio",
        "input_audio": {
            "data": b64(_MEDIA_BYTES["audio/wav" if f == "wav" else "audio/mp3"]),
            "format": f,
        },
    }
)
files = mostly(
    st.sampled_from(
        [
            {"file_data": data_url("application/pdf"), "filename": "a.pdf"},
            {"file_data": b64(_MEDIA_BYTES["application/pdf"])},
            {"file_data": b64(_MEDIA_BYTES["text/plain"]), "filename": "notes.txt"},
            {"file_id": "gs://bucket/report.pdf", "filename": "report.pdf"},
            {"file_id": FILES_URI},
        ]
    ),
    st.sampled_from([{"file_data": b64(b"\x00\x01 opaque")}, {"file_id": "file-abc123"}]),
).map(lambda f: {"type": "file", "file": f})
text_parts = texts.map(lambda t: {"type": "text", "text": t})
user_content = texts | st.lists(text_parts | images | audio | files, min_size=1, max_size=4)

SCHEMAS = [
    None,
    {},
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "where": {"$ref": "#/$defs/Place", "description": "a place"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
        "$defs": {"Place": {"type": "object", "additionalProperties": False}},
        "additionalProperties": False,
    },
    {"properties": {"n": {"type": "integer", "exclusiveMinimum": 0}}},
    {"type": "array", "items": {"type": "string"}},
]


@st.composite
def tools(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    chosen: list[str] = draw(st.lists(names, max_size=3, unique=True))
    duplicate: bool = draw(rarely(10))
    if chosen and duplicate:
        chosen.append(chosen[0])  # a duplicate name
    for name in chosen:
        fn: dict[str, Any] = {"name": name}
        schema = draw(mostly(st.sampled_from(SCHEMAS[:-1]), st.just(SCHEMAS[-1])))
        if schema is not None:
            fn["parameters"] = schema
        if draw(st.booleans()):
            fn["description"] = "does " + name
        if draw(st.booleans()):
            fn["strict"] = True
        out.append({"type": "function", "function": fn})
    if draw(rarely(10)):
        out.append({"type": "custom", "custom": {"name": "free_text"}})
    return out


def tool_choices(defined: list[dict[str, Any]]) -> st.SearchStrategy[Any]:
    fn_names = [t["function"]["name"] for t in defined if t["type"] == "function"]
    options: list[st.SearchStrategy[Any]] = [st.just(None), st.sampled_from(["none", "auto"])]
    if defined:
        options.append(st.just("required"))
    if fn_names:
        named = st.sampled_from(fn_names)
        options.append(named.map(lambda n: {"type": "function", "function": {"name": n}}))
        options.append(
            st.tuples(st.sampled_from(["auto", "required"]), st.lists(named, max_size=2)).map(
                lambda mt: {
                    "type": "allowed_tools",
                    "allowed_tools": {
                        "mode": mt[0],
                        "tools": [{"type": "function", "function": {"name": n}} for n in mt[1]],
                    },
                }
            )
        )
    return st.one_of(options)


ARGUMENTS = ['{"city":"Paris"}', "{}", "", '{"nested":{"a":[1,2]}}']
BAD_ARGUMENTS = ["[1]", "{bad json"]


@st.composite
def tool_round(draw: st.DrawFn, start: int, model_is_3: bool) -> list[dict[str, Any]]:
    """An assistant tool-call turn and the tool messages answering it (usually fully)."""
    count = draw(st.integers(1, 3))
    calls = []
    for k in range(count):
        kind = draw(st.integers(0, 3))
        if kind == 0:  # an id this gateway emitted for a Gemini call with a real signature
            call_id = encode_call_id(f"gid_g{start}x{k}", mint_thought_signature(f"{start}/{k}"))
        elif kind == 1:
            call_id = encode_call_id(f"call_{start:04d}{k}", None)
        else:
            call_id = f"call_{start}_{k}"
        name = draw(names)
        calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": draw(
                        st.sampled_from(BAD_ARGUMENTS if draw(rarely(20)) else ARGUMENTS)
                    ),
                },
            }
        )
    content = draw(st.sampled_from([None, "", "Let me check."]))
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": content, "tool_calls": calls}
    ]
    answered = draw(st.permutations(calls))
    if draw(rarely(10)):
        answered = answered[:-1]  # one call left unanswered
    for c in answered:
        result = draw(st.sampled_from(["sunny", '{"temp": 21}', "[1, 2]", "", "{not json"]))
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
        if draw(rarely(20)):
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": "again"})
    if draw(rarely(20)):
        messages.append({"role": "tool", "tool_call_id": "call_unknown", "content": "?"})
    return messages


@st.composite
def conversations(draw: st.DrawFn, model_is_3: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        role = draw(st.sampled_from(["system", "developer"]))
        messages.append({"role": role, "content": draw(texts)})
    if not draw(rarely(10)):
        messages.append({"role": "user", "content": draw(user_content)})
    for _ in range(draw(st.integers(1, 5))):
        step = draw(st.integers(0, 9))
        if step < 4:
            messages.append({"role": "user", "content": draw(user_content)})
        elif step < 6:
            messages.append({"role": "assistant", "content": draw(texts), "name": "bot"})
        elif step < 9:
            messages.extend(draw(tool_round(len(messages), model_is_3)))
        else:
            name = draw(names)
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": name, "arguments": "{}"},
                }
            )
            messages.append({"role": "function", "name": name, "content": "done"})
        if draw(rarely(6)):
            messages.append({"role": "system", "content": "Stay on topic."})
    return messages


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, Any], CallContext]:
    model = draw(st.sampled_from(MODELS))
    body: dict[str, Any] = {
        "model": "gem",
        "messages": draw(conversations("gemini-3" in model)),
    }
    defined = draw(tools())
    if defined:
        body["tools"] = defined
        choice = draw(tool_choices(defined))
        if choice is not None:
            body["tool_choice"] = choice
        if draw(st.booleans()):
            body["parallel_tool_calls"] = draw(st.booleans())
    optional: dict[str, st.SearchStrategy[Any]] = {
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "n": st.integers(1, 10),
        "stop": st.sampled_from(["END", ["a", "", "b"], ["x"] * 4]),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "presence_penalty": st.floats(-2, 2),
        "frequency_penalty": st.sampled_from([-2, 0, 2, 0.5]),
        "max_tokens": st.integers(1, 2**33),
        "max_completion_tokens": st.integers(1, 2**33),
        "response_format": st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "out"}},
                {
                    "type": "json_schema",
                    "json_schema": {"name": "out", "strict": True, "schema": SCHEMAS[3]},
                },
            ]
        ),
        "reasoning_effort": st.sampled_from(
            ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
        ),
        "logit_bias": st.just({"50256": -100}),
        "user": st.just("user-1"),
        "metadata": st.just({"k": "v"}),
        "service_tier": st.just("auto"),
        "top_k": st.sampled_from([1, 40, 0, "40"]),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=6)):
        body[key] = draw(optional[key])
    if draw(st.booleans()):
        body["logprobs"] = True
        if draw(st.booleans()):
            body["top_logprobs"] = draw(st.integers(0, 20))
    if draw(rarely(16)):
        body["modalities"] = ["text", "audio"]
        body["audio"] = {"format": "mp3", "voice": "alloy"}
    stream = draw(st.booleans())
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    media = {
        FETCHED: Media(
            draw(st.sampled_from(["image/png", "image/jpeg", "image/gif; x=1"])),
            _MEDIA_BYTES["image/png"],
        )
    }
    options = {"reasoning_output": draw(st.booleans())}
    if draw(rarely(5)):
        options["fetch_media"] = False
    return body, context(model, stream, media, **options)


def assert_real_path(body: Any, param: str) -> None:
    """`param` (`messages[2].content[0].image_url.url`) names a value present in `body`."""
    path = parse_param(param)
    assert path is not None and resolve(body, path) is not MISSING, (param, body)


@PROPS
@given(requests())
def test_valid_requests_translate_to_accepted_bodies_or_name_the_field(
    case: tuple[dict[str, Any], CallContext],
) -> None:
    body, ctx = case
    try:
        validate_chat_request(body)
    except InvalidRequest:
        assume(False)  # the generator aims at valid requests; skip the odd invalid one
    before = orjson.dumps(body)
    urls = P.media_urls(body, ctx)
    assert all(u.startswith("https://") for u in urls)
    try:
        request = P.build_request(body, ctx)
    except InvalidRequest as error:
        assert error.param, error.message
        assert_real_path(body, error.param)
        return
    finally:
        assert orjson.dumps(body) == before  # the client's body is never mutated
    assert request.payload is not None
    assert orjson.loads(request.body) == request.payload
    try:
        check_request(request.payload, model=ctx.deployment.upstream_model)
    except VendorRefusal as refusal:
        pytest.fail(f"Gemini would refuse: {refusal.body}\n{request.payload}")


# --------------------------------------------------------------------------- 3: odd upstream JSON

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
    | st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "MALFORMED_FUNCTION_CALL", "AUDIO"])
)
_any = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


def _shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """An object with any of `fields`, or now and then any JSON value at all."""
    return mostly(st.fixed_dictionaries({}, optional=fields), _any)


_token = _shaped({"token": _any, "logProbability": _any})
_part = _shaped(
    {
        "text": mostly(st.text(max_size=5), _any),
        "thought": _any,
        "functionCall": _shaped({"name": _any, "args": _any, "id": _any}),
        "thoughtSignature": _any,
    }
)
_candidate = _shaped(
    {
        "index": mostly(st.integers(0, 2), _any),
        "content": _shaped({"role": _any, "parts": mostly(st.lists(_part, max_size=3), _any)}),
        "finishReason": mostly(st.sampled_from(["STOP", "MAX_TOKENS", "OTHER"]), _any),
        "finishMessage": _any,
        "logprobsResult": _shaped(
            {
                "chosenCandidates": mostly(st.lists(_token, max_size=2), _any),
                "topCandidates": mostly(
                    st.lists(_shaped({"candidates": st.lists(_token, max_size=2)}), max_size=2),
                    _any,
                ),
            }
        ),
    }
)
_COUNTS = [
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "toolUsePromptTokenCount",
    "cachedContentTokenCount",
    "totalTokenCount",
]
_usage = _shaped(
    {
        **{k: mostly(st.integers(0, 1000), _any) for k in _COUNTS},
        "promptTokensDetails": mostly(
            st.lists(_shaped({"modality": _any, "tokenCount": _any}), max_size=2), _any
        ),
        "candidatesTokensDetails": _any,
    }
)
_error = _shaped(
    {
        "code": _any,
        "message": _any,
        "status": _any,
        "details": mostly(
            st.lists(
                _shaped(
                    {
                        "@type": st.just("type.googleapis.com/google.rpc.RetryInfo"),
                        "retryDelay": _any,
                        "reason": _any,
                    }
                ),
                max_size=2,
            ),
            _any,
        ),
    }
)
_responses = st.fixed_dictionaries(
    {},
    optional={
        "candidates": mostly(st.lists(_candidate, max_size=3), _any),
        "usageMetadata": _usage,
        "promptFeedback": _shaped({"blockReason": _any}),
        "error": mostly(_error, _any),
    },
)


def _assert_chunk_types(choice: dict[str, Any]) -> None:
    assert isinstance(choice["index"], int)
    message = choice.get("message") or choice["delta"]
    assert isinstance(message.get("content"), str | None)
    for call in message.get("tool_calls") or ():
        assert isinstance(call["id"], str) and isinstance(call["function"]["name"], str)
        assert isinstance(orjson.loads(call["function"]["arguments"]), dict)
    for token in (choice.get("logprobs") or {}).get("content") or ():
        assert isinstance(token["token"], str) and isinstance(token["logprob"], float)


@PROPS
@given(st.lists(_responses, min_size=1, max_size=3), st.booleans())
def test_odd_upstream_json_is_translated_or_a_502_never_a_crash(
    objs: list[dict[str, Any]], reasoning: bool
) -> None:
    bodies = [orjson.dumps(o) for o in objs]
    c = context("gemini-2.5-flash", False, {}, reasoning_output=reasoning)
    try:
        completion = P.parse_response(bodies[0], c)
    except GatewayError as error:
        assert 400 <= error.http_status < 600, error  # an upstream error body keeps its code
    else:
        out = orjson.loads(completion.body)
        assert out["choices"]
        for choice in out["choices"]:
            _assert_chunk_types(choice)
    t = P.new_stream_translator(context("gemini-2.5-flash", True, {}, reasoning_output=reasoning))
    streamed = b"".join(t.feed(b"data: " + body + b"\r\n\r\n") for body in bodies)
    if t.error is None:
        streamed += t.close()
    for line in streamed.split(b"\n"):
        if line.startswith(b"data: {"):
            event = orjson.loads(line[6:])
            for choice in event.get("choices") or ():
                _assert_chunk_types(choice)
    if t.usage is not None:
        assert all(isinstance(t.usage[k], int) for k in ("prompt_tokens", "total_tokens"))
