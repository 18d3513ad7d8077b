"""Gemini requests: OpenAI bodies in, generateContent bodies out."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest

from bench.fakes.gemini_rules import check_request, mint_thought_signature
from gateway.config import GeminiOptions
from gateway.errors import (
    InvalidRequest,
)
from gateway.providers.base import Deployment, Media
from gateway.providers.gemini.ids import SKIP_SIGNATURE, encode_call_id
from tests.providers.gemini.helpers import (
    FIXTURES,
    GIF,
    GIF_BYTES,
    HEIC_BYTES,
    JPEG_BYTES,
    PDF,
    PNG,
    PNG_BYTES,
    SIG1,
    WAV,
    WEBP_BYTES,
    P,
    call,
    ctx,
    deltas,
    events,
    payload,
    req,
    tool,
    translate,
    user,
    weather_tool,
)

# ================================================================ requests: transport


def test_build_request_url_key_header_and_body_untouched() -> None:
    body = req(user("hi"), temperature=0.5)
    before = copy.deepcopy(body)
    r = P.build_request(body, ctx())
    assert r.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert r.headers["x-goog-api-key"] == "AIza-upstream"
    assert "authorization" not in {k.lower() for k in r.headers}
    assert orjson.loads(r.body) == r.payload
    assert body == before


def test_stream_request_uses_sse_endpoint() -> None:
    c = ctx(stream=True, upstream_model="models/gemini-2.5-pro")
    r = P.build_request(req(stream=True), c)
    assert r.url.endswith("/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    assert r.stream and r.headers["accept"] == "text/event-stream"


def test_configured_base_url_is_used() -> None:
    c = ctx()
    c.deployment = Deployment(
        "gem",
        "google",
        "gemini",
        "gemini-2.5-flash",
        base_url="http://127.0.0.1:9/v1beta/",
        options=GeminiOptions(),
    )
    assert P.build_request(req(), c).url == (
        "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent"
    )


# ================================================================ requests: translation table

LONG_SEED = 2**40 + 5

TRANSLATIONS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "system_and_developer_to_system_instruction",
        req(
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        ),
        {
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use French."}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        },
    ),
    (
        "assistant_is_model_and_names_dropped",
        req(user("hi"), {"role": "assistant", "content": "hello", "name": "bot"}, user("again")),
        {
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "hello"}]},
                {"role": "user", "parts": [{"text": "again"}]},
            ]
        },
    ),
    (
        "sampling_fields",
        req(temperature=0.3, top_p=0.9, top_k=40, seed=7, presence_penalty=0.5),
        {
            "generationConfig": {
                "temperature": 0.3,
                "topP": 0.9,
                "topK": 40,
                "seed": 7,
                "presencePenalty": 0.5,
            }
        },
    ),
    (
        "zero_penalties_not_sent",
        req(presence_penalty=0, frequency_penalty=0.0),
        {"generationConfig": None},
    ),
    (
        "max_completion_tokens_wins_over_max_tokens",
        req(max_tokens=10, max_completion_tokens=20),
        {"generationConfig": {"maxOutputTokens": 20}},
    ),
    ("max_tokens", req(max_tokens=10), {"generationConfig": {"maxOutputTokens": 10}}),
    ("stop_string", req(stop="END"), {"generationConfig": {"stopSequences": ["END"]}}),
    (
        "stop_list_without_empty",
        req(stop=["a", "", "b"]),
        {"generationConfig": {"stopSequences": ["a", "b"]}},
    ),
    ("n_to_candidate_count", req(n=3), {"generationConfig": {"candidateCount": 3}}),
    ("n_1_not_sent", req(n=1), {"generationConfig": None}),
    (
        "seed_folded_into_int32",
        req(seed=LONG_SEED),
        {"generationConfig": {"seed": 5}},
    ),
    ("negative_seed_kept", req(seed=-3), {"generationConfig": {"seed": -3}}),
    (
        "penalty_2_is_sent_inside_geminis_range",
        req(presence_penalty=2, frequency_penalty=-2),
        {"generationConfig": {"presencePenalty": 1.999, "frequencyPenalty": -2}},
    ),
    (
        "jpg_alias",
        req(user([{"type": "image_url", "image_url": {"url": "data:image/JPG;base64,/9j/4A=="}}])),
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4A=="}},
                        {"text": " "},
                    ],
                }
            ]
        },
    ),
    (
        "logprobs",
        req(logprobs=True, top_logprobs=3),
        {"generationConfig": {"responseLogprobs": True, "logprobs": 3}},
    ),
    (
        "json_object",
        req(response_format={"type": "json_object"}),
        {"generationConfig": {"responseMimeType": "application/json"}},
    ),
    ("text_format", req(response_format={"type": "text"}), {"generationConfig": None}),
    (
        "json_schema_cleaned",
        req(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "strict": True,
                    "schema": {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "type": "object",
                        "properties": {"a": {"$ref": "#/$defs/A", "description": "x"}},
                        "$defs": {"A": {"type": "integer"}},
                        "additionalProperties": False,
                    },
                },
            }
        ),
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {
                    "type": "object",
                    "properties": {"a": {"$ref": "#/$defs/A"}},
                    "$defs": {"A": {"type": "integer"}},
                    "additionalProperties": False,
                },
            }
        },
    ),
    (
        "dropped_fields_leave_no_trace",
        req(
            logit_bias={"50256": -100},
            user="u-1",
            safety_identifier="s",
            prompt_cache_key="k",
            metadata={"a": "b"},
            store=True,
            service_tier="auto",
            verbosity="low",
            modalities=["text"],
            parallel_tool_calls=False,
            tools=[weather_tool()],
            stream=True,
            stream_options={"include_usage": True},
            x_vendor_extension={"k": 1},
        ),
        {"generationConfig": None},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in TRANSLATIONS], ids=[n for n, _, _ in TRANSLATIONS]
)
def test_request_translation(body: dict[str, Any], expected: dict[str, Any]) -> None:
    out = payload(body)
    for key, value in expected.items():
        assert out.get(key) == value, key
    allowed = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
    assert set(out) <= allowed


@pytest.mark.parametrize(
    "body", [b for _, b, _ in TRANSLATIONS], ids=[n for n, _, _ in TRANSLATIONS]
)
@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
def test_translations_are_accepted_by_the_strict_fake(body: dict[str, Any], model: str) -> None:
    check_request(payload(body, ctx(upstream_model=model)), model=model)


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),
        ("gemini-2.5-flash", "minimal", {"thinkingBudget": 512}),
        ("gemini-2.5-pro", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-pro", "medium", {"thinkingBudget": 8192}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
        ("gemini-flash-latest", "xhigh", {"thinkingBudget": 24576}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW"}),
        ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL"}),
        ("gemini-3.1-pro", "medium", {"thinkingLevel": "MEDIUM"}),
        ("gemini-3-pro-preview", "max", {"thinkingLevel": "HIGH"}),
    ],
)
def test_reasoning_effort_to_thinking_config(
    model: str, effort: str, expected: dict[str, Any]
) -> None:
    out = payload(req(reasoning_effort=effort), ctx(upstream_model=model))
    assert out["generationConfig"]["thinkingConfig"] == expected


def test_reasoning_output_asks_for_thoughts() -> None:
    out = payload(req(), ctx(reasoning_output=True))
    assert out["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}
    assert "generationConfig" not in payload(req(), ctx(reasoning_output=False))


# ---------------------------------------------------------------- tools and tool choice


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    out = payload(req(tools=[weather_tool()], tool_choice=choice))
    assert out["toolConfig"] == {"functionCallingConfig": expected}


def test_no_tool_choice_no_tool_config() -> None:
    out = payload(req(tools=[weather_tool()]))
    assert "toolConfig" not in out
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                    },
                }
            ]
        }
    ]


@pytest.mark.parametrize(("mode", "gemini_mode"), [("auto", "AUTO"), ("required", "ANY")])
def test_allowed_tools_keep_only_listed_declarations(mode: str, gemini_mode: str) -> None:
    other = {"type": "function", "function": {"name": "other", "description": "o"}}
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": mode,
            "tools": [{"type": "function", "function": {"name": "other"}}],
        },
    }
    out = payload(req(tools=[weather_tool(), other], tool_choice=choice))
    assert out["tools"] == [{"functionDeclarations": [{"name": "other", "description": "o"}]}]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": gemini_mode}}


def test_legacy_functions_and_function_call() -> None:
    fn = {"name": "lookup", "parameters": {"properties": {"q": {"type": "string"}}}}
    out = payload(req(functions=[fn], function_call={"name": "lookup"}))
    decl = out["tools"][0]["functionDeclarations"][0]
    assert decl["parametersJsonSchema"]["type"] == "object"  # a missing root type is added
    assert out["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["lookup"],
    }


def test_function_without_parameters_has_no_schema() -> None:
    fn = {"type": "function", "function": {"name": "now", "parameters": {}}}
    assert payload(req(tools=[fn]))["tools"][0]["functionDeclarations"] == [{"name": "now"}]


# ---------------------------------------------------------------- media


def test_images_audio_and_files_to_inline_and_file_data() -> None:
    files_uri = "https://generativelanguage.googleapis.com/v1beta/files/abc123"
    url = "https://example.com/cat.png"
    body = req(
        user(
            [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                {"type": "image_url", "image_url": {"url": files_uri}},
                {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}},
                {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}},
                {"type": "file", "file": {"file_data": PDF}},
                {"type": "file", "file": {"file_data": "aGVsbG8=", "filename": "notes.txt"}},
                {"type": "file", "file": {"file_id": "gs://bucket/doc.pdf", "filename": "d.pdf"}},
            ]
        )
    )
    c = ctx(media={url: Media("image/png", PNG_BYTES)})
    assert P.media_urls(body, c) == [url]
    parts = payload(body, c)["contents"][0]["parts"]
    assert parts == [
        {"text": "Look"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {
            "inlineData": {
                "mimeType": "image/png",
                "data": PNG,
            }
        },
        {"fileData": {"fileUri": files_uri}},
        {"inlineData": {"mimeType": "audio/wav", "data": WAV}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
        {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
        {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
        {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8="}},
        {"fileData": {"fileUri": "gs://bucket/doc.pdf", "mimeType": "application/pdf"}},
    ]


def test_media_urls_off_when_fetch_media_is_false() -> None:
    body = req(user([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]))
    assert P.media_urls(body, ctx(fetch_media=False)) == []
    assert P.media_urls(body, ctx()) == ["https://example.com/a.png"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("declared", "data", "sent"),
    [
        ("image/jpeg", PNG_BYTES, "image/png"),
        ("image/png", JPEG_BYTES, "image/jpeg"),
        ("image/jpg", WEBP_BYTES, "image/webp"),
        ("image/gif", PNG_BYTES, "image/png"),
        ("image/jpeg", HEIC_BYTES, "image/heic"),
        ("image/heic", HEIC_BYTES, "image/heic"),
        ("image/bmp", JPEG_BYTES, "image/jpeg"),
        ("application/octet-stream", PNG_BYTES, "image/png"),
        ("IMAGE/JPEG", PNG_BYTES, "image/png"),
    ],
)
def test_inline_images_go_with_the_type_their_bytes_show(
    declared: str, data: bytes, sent: str
) -> None:
    image = {"type": "image_url", "image_url": {"url": f"data:{declared};base64,{b64(data)}"}}
    body = payload(req(user([image])))
    assert body["contents"][0]["parts"][0] == {"inlineData": {"mimeType": sent, "data": b64(data)}}
    check_request(body, model="gemini-2.5-flash")  # the strict fake refuses a mismatch


def test_files_and_fetched_media_go_with_the_type_their_bytes_show() -> None:
    url = "https://example.com/photo"
    body = req(
        user(
            [
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PNG}"}},
                {"type": "file", "file": {"file_data": PNG, "filename": "scan.jpg"}},
                {"type": "file", "file": {"file_data": PNG}},  # no filename: sniffed
                {"type": "file", "file": {"file_data": PDF, "filename": "report.jpeg"}},
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "What are these?"},
            ]
        )
    )
    sent = payload(body, ctx(media={url: Media("image/jpeg", PNG_BYTES)}))
    parts = sent["contents"][0]["parts"]
    assert [p["inlineData"]["mimeType"] for p in parts[:5]] == [
        "image/png",
        "image/png",
        "image/png",
        "application/pdf",
        "image/png",
    ]
    check_request(sent, model="gemini-2.5-flash")


@pytest.mark.parametrize(
    ("fields", "cap", "expected"),
    [
        ({}, None, None),
        ({"max_tokens": 4096}, None, 4096),
        ({}, 1024, 1024),  # the cap is sent when the client gives no limit
        ({"max_tokens": 100}, 1024, 100),
        ({"max_tokens": 4096}, 1024, 1024),
        ({"max_completion_tokens": 4096, "max_tokens": 10}, 1024, 1024),
        ({"max_completion_tokens": 2**31 - 1}, 1024, 1024),  # the largest valid, capped
    ],
)
def test_max_output_tokens_option_caps_max_output_tokens(
    fields: dict[str, Any], cap: int | None, expected: int | None
) -> None:
    c = ctx() if cap is None else ctx(max_output_tokens=cap)
    config = payload(req(**fields), c).get("generationConfig", {})
    assert config.get("maxOutputTokens") == expected


@pytest.mark.parametrize("cap", [None, 0, -1, True, "8192", 2**31, 1.5])
def test_max_output_tokens_option_other_than_a_positive_int32_is_ignored(cap: Any) -> None:
    config = payload(req(max_tokens=4096), ctx(max_output_tokens=cap))["generationConfig"]
    assert config["maxOutputTokens"] == 4096  # the config loader refuses such values


# ================================================================ requests: refusals

REFUSALS: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("n_over_8", req(n=9), "n", {}),
    ("audio_output", req(audio={"format": "wav", "voice": "alloy"}), "audio", {}),
    (
        "audio_modality",
        req(modalities=["text", "audio"], audio={"format": "mp3", "voice": "alloy"}),
        "audio",
        {},
    ),
    (
        "custom_tool",
        req(tools=[{"type": "custom", "custom": {"name": "grammar"}}]),
        "tools[0].type",
        {},
    ),
    (
        "function_name_starting_with_digit",
        req(tools=[{"type": "function", "function": {"name": "1fn"}}]),
        "tools[0].function.name",
        {},
    ),
    (
        "parameters_not_an_object_schema",
        req(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]
        ),
        "tools[0].function.parameters",
        {},
    ),
    (
        "tool_arguments_not_json",
        req(
            user(),
            {"role": "assistant", "content": None, "tool_calls": [call("c1", args="{oops")]},
            tool("c1"),
        ),
        "messages[1].tool_calls[0].function.arguments",
        {},
    ),
    (
        "tool_arguments_not_an_object",
        req(
            user(),
            {"role": "assistant", "content": None, "tool_calls": [call("c1", args="[1]")]},
            tool("c1"),
        ),
        "messages[1].tool_calls[0].function.arguments",
        {},
    ),
    (
        "tool_result_for_unknown_call",
        req(
            user(),
            {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
            tool("c2"),
        ),
        "messages[2].tool_call_id",
        {},
    ),
    ("tool_result_without_any_call", req(user(), tool("c1")), "messages[1].tool_call_id", {}),
    (
        "tool_result_twice",
        req(
            user(),
            {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
            tool("c1"),
            tool("c1"),
        ),
        "messages[3].tool_call_id",
        {},
    ),
    (
        "tool_call_unanswered",
        req(
            user(),
            {"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2")]},
            tool("c1"),
            user("next"),
            {"role": "assistant", "content": "ok"},
        ),
        "messages[1].tool_calls[1].id",
        {},
    ),
    (
        "tool_call_unanswered_at_end",
        req(user(), {"role": "assistant", "content": None, "tool_calls": [call("c1")]}),
        "messages[1].tool_calls[0].id",
        {},
    ),
    (
        "legacy_function_result_without_call",
        req(user(), {"role": "function", "name": "f", "content": "x"}),
        "messages[1].name",
        {},
    ),
    (
        "http_image_with_fetch_media_off",
        req(user([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])),
        "messages[0].content[0].image_url.url",
        {"fetch_media": False},
    ),
    (
        "http_image_not_fetched",
        req(user([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])),
        "messages[0].content[0].image_url.url",
        {},
    ),
    (
        "openai_file_id",
        req(user([{"type": "file", "file": {"file_id": "file-abc"}}])),
        "messages[0].content[0].file.file_id",
        {},
    ),
    (
        "raw_file_data_of_unknown_type",
        req(user([{"type": "file", "file": {"file_data": "aGVsbG8="}}])),
        "messages[0].content[0].file.file_data",
        {},
    ),
    ("only_system_messages", req({"role": "system", "content": "x"}), "messages", {}),
    (
        "gif_image",
        req(user([{"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{GIF}"}}])),
        "messages[0].content[0].image_url.url",
        {},
    ),
    (
        "fetched_media_of_unsupported_type",
        req(user([{"type": "image_url", "image_url": {"url": "https://example.com/a.gif"}}])),
        "messages[0].content[0].image_url.url",
        {"media": {"https://example.com/a.gif": Media("image/gif", b"GIF89a")}},
    ),
    (
        "empty_audio",
        req(user([{"type": "input_audio", "input_audio": {"data": "", "format": "mp3"}}])),
        "messages[0].content[0].input_audio.data",
        {},
    ),
    (
        "empty_file_data",
        req(user([{"type": "file", "file": {"file_data": "", "filename": "a.pdf"}}])),
        "messages[0].content[0].file.file_data",
        {},
    ),
    (
        "tool_call_before_any_user_message",
        req(
            {"role": "system", "content": "s"},
            {"role": "assistant", "content": "hm"},
            {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
            tool("c1"),
        ),
        "messages[2].tool_calls",
        {},
    ),
    (
        "duplicate_function_names",
        req(tools=[weather_tool(), weather_tool()]),
        "tools[1].function.name",
        {},
    ),
    # The validator refuses these first; the translator holds on its own too.
    ("max_tokens_over_int32", {**req(), "max_tokens": 2**31}, "max_tokens", {}),
    (
        "max_completion_tokens_over_int32",
        {**req(), "max_completion_tokens": 2**40},
        "max_completion_tokens",
        {},
    ),
    ("top_k_not_an_integer", req(top_k="40"), "top_k", {}),
    ("only_empty_text", req(user("")), "messages", {}),
    (
        "png_label_on_bytes_of_no_image",
        req(user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}])),
        "messages[0].content[0].image_url.url",
        {},
    ),
    (
        "gif_bytes_under_a_png_label",
        req(user([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{GIF}"}}])),
        "messages[0].content[0].image_url.url",
        {},
    ),
    (
        "pdf_label_on_text_bytes",
        req(
            user([{"type": "file", "file": {"file_data": "data:application/pdf;base64,aGVsbG8="}}])
        ),
        "messages[0].content[0].file.file_data",
        {},
    ),
    (
        "fetched_gif_served_as_jpeg",
        req(user([{"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}])),
        "messages[0].content[0].image_url.url",
        {"media": {"https://example.com/a.jpg": Media("image/jpeg", GIF_BYTES)}},
    ),
]


@pytest.mark.parametrize(
    ("body", "param", "options"),
    [(b, p, o) for _, b, p, o in REFUSALS],
    ids=[n for n, _, _, _ in REFUSALS],
)
def test_refusals_name_the_field(body: dict[str, Any], param: str, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        payload(body, ctx(**options))
    assert info.value.param == param
    assert info.value.http_status == 400


# ================================================================ the pitfalls of section E


def test_E1_function_call_with_stop_is_tool_calls_non_streamed() -> None:
    out = orjson.loads(P.parse_response((FIXTURES / "tool_call.json").read_bytes(), ctx()).body)
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_E1_stop_in_a_later_chunk_is_still_tool_calls() -> None:
    out, t = translate((FIXTURES / "tool_call_then_stop.sse").read_bytes(), ctx(stream=True))
    finishes = [f for _, _, f in deltas(out) if f is not None]
    assert finishes == ["tool_calls"]
    assert t.error is None


def test_E2_function_response_is_named_after_the_call_never_the_id() -> None:
    body = req(
        user("weather?"),
        {"role": "assistant", "content": None, "tool_calls": [call("call_XYZ", "get_weather")]},
        tool("call_XYZ", "sunny"),
    )
    response = payload(body)["contents"][2]["parts"][0]["functionResponse"]
    assert response == {"name": "get_weather", "response": {"output": "sunny"}}


def test_E3_tool_and_function_results_use_role_user() -> None:
    body = req(
        user("go"),
        {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
        tool("c1"),
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": '{"ok": true}'},
    )
    contents = payload(body)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    assert contents[4]["parts"] == [
        {"functionResponse": {"name": "f", "response": {"output": {"ok": True}}}}
    ]


def test_E4_thought_signature_survives_the_client_round_trip() -> None:
    first = orjson.loads(P.parse_response((FIXTURES / "tool_call.json").read_bytes(), ctx()).body)
    tool_call = first["choices"][0]["message"]["tool_calls"][0]
    assert set(tool_call["id"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    )
    # The client appends the assistant message as the SDK dumps it, then the result.
    history = req(user("weather?"), first["choices"][0]["message"], tool(tool_call["id"], "21C"))
    contents = payload(history)["contents"]
    part = contents[1]["parts"][0]
    assert part["thoughtSignature"] == SIG1  # byte-exact, in Gemini's own base64
    assert part["functionCall"] == {"name": "get_weather", "args": {"city": "Paris", "unit": "c"}}
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_E4_streamed_signature_and_gemini_ids_round_trip() -> None:
    out, _ = translate((FIXTURES / "parallel_tools.sse").read_bytes(), ctx(stream=True))
    calls = [d["tool_calls"][0] for _, d, _ in deltas(out) if "tool_calls" in d]
    message = {"role": "assistant", "content": "Checking both.", "tool_calls": calls}
    for c in calls:
        c.pop("index")
    history = req(user("both?"), message, tool(calls[1]["id"], "rain"), tool(calls[0]["id"], "sun"))
    contents = payload(history)["contents"]
    fixture = [
        orjson.loads(line[6:])
        for line in (FIXTURES / "parallel_tools.sse").read_bytes().split(b"\r\n\r\n")
        if line
    ]
    sent = fixture[1]["candidates"][0]["content"]["parts"]
    assert contents[1]["parts"][1:] == sent  # ids and the first call's signature, exactly
    results = [p["functionResponse"] for p in contents[2]["parts"]]
    assert [(r["id"], r["response"]["output"]) for r in results] == [
        ("k3r9a1bz", "sun"),
        ("m0x7q2cd", "rain"),
    ]


def test_E4_gemini_3_history_with_carried_signature_passes_the_strict_fake() -> None:
    signature = mint_thought_signature("turn-1")
    call_id = encode_call_id("gid_a1", signature)
    body = req(
        user("go"),
        {"role": "assistant", "content": None, "tool_calls": [call(call_id), call("plain")]},
        tool(call_id),
        tool("plain"),
    )
    out = payload(body, ctx(upstream_model="gemini-3-pro-preview"))
    assert out["contents"][1]["parts"][0]["thoughtSignature"] == signature
    assert "thoughtSignature" not in out["contents"][1]["parts"][1]
    check_request(out, model="gemini-3-pro-preview")


def test_E4_calls_without_signature_get_the_sentinel_on_the_first_call_only() -> None:
    body = req(
        user("go"),
        {"role": "assistant", "content": None, "tool_calls": [call("a"), call("b")]},
        tool("a"),
        tool("b"),
    )
    parts = payload(body)["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in parts[1]
    assert all("id" not in p["functionCall"] for p in parts)  # foreign ids stay home


def test_E5_tool_schemas_go_as_json_schema_without_what_gemini_refuses() -> None:
    params = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "where": {"$ref": "#/definitions/Place", "description": "dropped beside $ref"},
            "$ref": {"type": "string"},  # a property name, not a keyword: kept
            "tags": {"type": "array", "items": {"$schema": "x", "type": "string"}},
        },
        "definitions": {"Place": {"type": "object", "additionalProperties": False}},
        "additionalProperties": False,
        "required": ["where"],
    }
    tools = [{"type": "function", "function": {"name": "f", "parameters": params, "strict": True}}]
    decl = payload(req(tools=tools))["tools"][0]["functionDeclarations"][0]
    assert "parameters" not in decl and "strict" not in decl
    assert decl["parametersJsonSchema"] == {
        "type": "object",
        "properties": {
            "where": {"$ref": "#/definitions/Place"},
            "$ref": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "definitions": {"Place": {"type": "object", "additionalProperties": False}},
        "additionalProperties": False,
        "required": ["where"],
    }
    assert params["$schema"]  # the client's schema is not mutated


def test_E10_stream_usage_is_the_last_usage_metadata_never_a_sum() -> None:
    out, t = translate((FIXTURES / "text.sse").read_bytes(), ctx(stream=True, include_usage=True))
    assert t.usage["prompt_tokens"] == 8 and t.usage["completion_tokens"] == 5
    assert events(out)[-2]["usage"]["total_tokens"] == 13


def test_E11_usage_chunk_is_separate_and_only_when_asked() -> None:
    raw = (FIXTURES / "text.sse").read_bytes()
    out, t = translate(raw, ctx(stream=True, include_usage=True))
    evs = events(out)
    assert evs[-1] == b"[DONE]"
    assert evs[-2]["choices"] == [] and evs[-2]["usage"]["completion_tokens"] == 5
    assert evs[-3]["choices"][0]["finish_reason"] == "stop"
    assert all(e["usage"] is None for e in evs[:-2])
    out, t = translate(raw, ctx(stream=True, include_usage=False))
    evs = events(out)
    assert all("usage" not in e for e in evs[:-1])
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"
    assert t.usage is not None  # still known for accounting


def test_E17_user_turn_with_only_media_gets_a_text_part() -> None:
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    contents = payload(req(user([image])))["contents"]
    assert contents[0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"text": " "},
    ]
    with_text = payload(req(user([image, {"type": "text", "text": "what?"}])))["contents"]
    assert len(with_text[0]["parts"]) == 2


def test_E18_same_role_turns_are_merged_and_results_grouped_in_call_order() -> None:
    body = req(
        user("a"),
        user([{"type": "text", "text": "b"}]),
        {"role": "assistant", "content": "thinking", "tool_calls": [call("c1"), call("c2")]},
        {"role": "assistant", "content": "more"},
        tool("c2", '{"t": 2}'),
        tool("c1", "[1, 2]"),
        user("and now?"),
    )
    contents = payload(body)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"] == [{"text": "a"}, {"text": "b"}]
    assert [next(iter(p)) for p in contents[1]["parts"]] == [
        "text",
        "functionCall",
        "functionCall",
        "text",
    ]
    outputs = [p.get("functionResponse", {}).get("response") for p in contents[2]["parts"]]
    assert outputs == [{"output": [1, 2]}, {"output": {"t": 2}}, None]
    assert contents[2]["parts"][2] == {"text": "and now?"}
