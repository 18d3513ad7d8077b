"""The chat-completions request validator: every known top-level field, and the entry.

`validate_chat_request` checks the required fields first, then the body's fields in
their order, each with its check in `_FIELDS`; unknown fields pass through but must
not nest too deep. Messages and tools have modules of their own.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from gateway.errors import InvalidRequest
from gateway.openai.validate.messages import AUDIO_REF_KEYS, TEXT_ONLY, check_messages, check_parts
from gateway.openai.validate.rules import (
    ABSENT,
    MISSING,
    Violation,
    check_depth,
    check_extras,
    describe,
    enum_field,
    int_field,
    key_path,
    number_field,
    optional_str,
    required,
    show,
    type_error,
    value_error,
    want_array,
    want_bool,
    want_enum,
    want_int,
    want_object,
    want_str,
)
from gateway.openai.validate.tools import (
    check_function_call,
    check_functions,
    check_response_format,
    check_tool_choice,
    check_tools,
)

__all__ = ["MAX_OUTPUT_TOKENS", "validate_chat_request"]

_TOKEN_ID = re.compile(r"[0-9]{1,10}")

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# OpenAI's schema gives `max_tokens` and `max_completion_tokens` no upper bound (the
# API checks each model's own limit); the largest any vendor's field can carry is a
# signed 32-bit integer (Gemini's `maxOutputTokens` is an int32), far above any model's
# output. Bounded here so that nothing downstream (the limiter's arithmetic, a
# vendor's parser) sees 2**64 (docs/reliability.md R13).
MAX_OUTPUT_TOKENS: Final = 2**31 - 1

# Enumerations of the request schema (docs/wire-formats.md A2-A4).
_AUDIO_OUT: Final = ("wav", "aac", "mp3", "flac", "opus", "pcm16")
_REASONING_EFFORT: Final = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_SERVICE_TIERS: Final = ("auto", "default", "flex", "scale", "priority", "fast")
_LOW_MEDIUM_HIGH: Final = ("low", "medium", "high")

_STREAM_OPTION_KEYS: Final = frozenset(("include_usage", "include_obfuscation"))
_AUDIO_OUT_KEYS: Final = frozenset(("format", "voice"))
_PREDICTION_KEYS: Final = frozenset(("type", "content"))
_WEB_SEARCH_KEYS: Final = frozenset(("search_context_size", "user_location"))
_LOCATION_KEYS: Final = frozenset(("type", "approximate"))
_APPROXIMATE_KEYS: Final = frozenset(("city", "country", "region", "timezone"))


def _check_stream_options(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    options = want_object(value, "stream_options")
    if body.get("stream") is not True:
        raise value_error("stream_options", "only allowed when 'stream' is true")
    try:
        for key in ("include_usage", "include_obfuscation"):
            flag = options.get(key, MISSING)
            if flag is not MISSING:
                want_bool(flag, key)
        check_extras(options, _STREAM_OPTION_KEYS, 2)
    except Violation as v:
        raise v.within("stream_options") from None


def _check_stop(value: object, body: dict[str, Any]) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise type_error("stop", "a string or an array of strings", value)
    if not 1 <= len(value) <= 4:
        raise value_error("stop", f"expected 1 to 4 strings, but got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise type_error(f"stop[{i}]", "a string", item)


def _check_logit_bias(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    for token, bias in want_object(value, "logit_bias").items():
        if not isinstance(token, str) or _TOKEN_ID.fullmatch(token) is None:
            raise value_error(
                "logit_bias", f"keys must be token ids (integer strings), but got {show(token)}"
            )
        if not isinstance(bias, int) or isinstance(bias, bool) or not -100 <= bias <= 100:
            want_int(bias, f"logit_bias.{token}", -100, 100)


def _check_top_logprobs(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    want_int(value, "top_logprobs", 0, 20)
    if body.get("logprobs") is not True:
        raise value_error("top_logprobs", "only allowed when 'logprobs' is true")


def _check_metadata(value: object, body: dict[str, Any]) -> None:
    """At most 16 string pairs; keys up to 64 characters, values up to 512."""
    if value is None:
        return
    metadata = want_object(value, "metadata")
    if len(metadata) > 16:
        raise value_error("metadata", f"expected at most 16 pairs, but got {len(metadata)}")
    for key, item in metadata.items():
        if not isinstance(key, str) or len(key) > 64:
            raise value_error("metadata", f"keys must be at most 64 characters: {show(key)}")
        if not isinstance(item, str) or len(item) > 512:
            path = key_path(key)
            path = f"metadata.{path}" if path else "metadata"
            if len(want_str(item, path)) > 512:
                raise value_error(path, "values must be at most 512 characters")


def _check_modalities(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    for i, item in enumerate(want_array(value, "modalities")):
        if item != "text" and item != "audio":
            want_enum(item, f"modalities[{i}]", ("text", "audio"))
        if item == "audio" and body.get("audio") is None:
            raise Violation(ABSENT, "audio")


def _check_audio(value: object, body: dict[str, Any]) -> None:
    """Audio output: a format and a voice (a name, or `{id}` of a custom voice)."""
    if value is None:
        return
    audio = want_object(value, "audio")
    want_enum(required(audio, "format", "audio.format"), "audio.format", _AUDIO_OUT)
    voice = required(audio, "voice", "audio.voice")
    if isinstance(voice, dict):
        want_str(required(voice, "id", "audio.voice.id"), "audio.voice.id")
        try:
            check_extras(voice, AUDIO_REF_KEYS, 3)
        except Violation as v:
            raise v.within("audio.voice") from None
    elif not isinstance(voice, str):
        raise type_error("audio.voice", "a string or an object", voice)
    try:
        check_extras(audio, _AUDIO_OUT_KEYS, 2)
    except Violation as v:
        raise v.within("audio") from None


def _check_prediction(value: object, body: dict[str, Any]) -> None:
    """Predicted output: `{type: "content", content: string | text parts}`."""
    if value is None:
        return
    prediction = want_object(value, "prediction")
    try:
        want_enum(required(prediction, "type", "type"), "type", ("content",))
        content = required(prediction, "content", "content")
        check_parts(content, TEXT_ONLY, " in a prediction", "content", 3)
        check_extras(prediction, _PREDICTION_KEYS, 2)
    except Violation as v:
        raise v.within("prediction") from None


def _check_web_search(value: object, body: dict[str, Any]) -> None:
    options = want_object(value, "web_search_options")
    try:
        size = options.get("search_context_size", MISSING)
        if size is not MISSING:
            want_enum(size, "search_context_size", _LOW_MEDIUM_HIGH)
        location = options.get("user_location")
        if location is not None:
            location = want_object(location, "user_location")
            want_enum(
                required(location, "type", "user_location.type"),
                "user_location.type",
                ("approximate",),
            )
            approx = required(location, "approximate", "user_location.approximate")
            approx = want_object(approx, "user_location.approximate")
            try:
                for key in ("city", "country", "region", "timezone"):
                    optional_str(approx, key)
                check_extras(approx, _APPROXIMATE_KEYS, 4)
            except Violation as v:
                raise v.within("user_location.approximate") from None
            try:
                check_extras(location, _LOCATION_KEYS, 3)
            except Violation as v:
                raise v.within("user_location") from None
        check_extras(options, _WEB_SEARCH_KEYS, 2)
    except Violation as v:
        raise v.within("web_search_options") from None


def _check_model(value: object, body: dict[str, Any]) -> None:
    if not want_str(value, "model"):
        raise value_error("model", "expected a non-empty string")


MAX_FALLBACK_MODELS: Final = 8


def _check_models(value: object, body: dict[str, Any]) -> None:
    """The request's own fallback list (OpenRouter's `models`): model ids tried in order
    after `model`. Not part of OpenAI's schema; the gateway removes it before the
    upstream sees the request, and checks each id against the key's scope."""
    if value is None:
        return
    models = want_array(value, "models")
    if not 1 <= len(models) <= MAX_FALLBACK_MODELS:
        raise value_error(
            "models", f"expected 1 to {MAX_FALLBACK_MODELS} model ids, but got {len(models)}"
        )
    for i, item in enumerate(models):
        if not want_str(item, f"models[{i}]"):
            raise value_error(f"models[{i}]", "expected a non-empty string")


# --------------------------------------------------------------------------- field table

_Check = Callable[[object, dict[str, Any]], None]


def _bool_field(name: str, *, nullable: bool) -> _Check:
    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None or not nullable:
            want_bool(value, name)

    return check


def _str_field(name: str, max_len: int | None = None) -> _Check:
    def check(value: object, body: dict[str, Any]) -> None:
        text = want_str(value, name)
        if max_len is not None and len(text) > max_len:
            raise value_error(name, f"expected at most {max_len} characters")

    return check


# Every known top-level field. Nullability follows the OpenAI SDK's request types.
_FIELDS: Final[dict[str, _Check]] = {
    "model": _check_model,
    "models": _check_models,
    "messages": check_messages,
    "stream": _bool_field("stream", nullable=True),
    "stream_options": _check_stream_options,
    "max_tokens": int_field("max_tokens", 1, MAX_OUTPUT_TOKENS),
    "max_completion_tokens": int_field("max_completion_tokens", 1, MAX_OUTPUT_TOKENS),
    "temperature": number_field("temperature", 0, 2),
    "top_p": number_field("top_p", 0, 1),
    "n": int_field("n", 1, 128),
    "stop": _check_stop,
    "presence_penalty": number_field("presence_penalty", -2, 2),
    "frequency_penalty": number_field("frequency_penalty", -2, 2),
    "logit_bias": _check_logit_bias,
    "logprobs": _bool_field("logprobs", nullable=True),
    "top_logprobs": _check_top_logprobs,
    "seed": int_field("seed", _INT64_MIN, _INT64_MAX),
    "user": _str_field("user"),
    "safety_identifier": _str_field("safety_identifier", 64),
    "prompt_cache_key": _str_field("prompt_cache_key"),
    "tools": check_tools,
    "tool_choice": check_tool_choice,
    "parallel_tool_calls": _bool_field("parallel_tool_calls", nullable=False),
    "functions": check_functions,
    "function_call": check_function_call,
    "response_format": check_response_format,
    "reasoning_effort": enum_field("reasoning_effort", _REASONING_EFFORT),
    "verbosity": enum_field("verbosity", _LOW_MEDIUM_HIGH),
    "metadata": _check_metadata,
    "store": _bool_field("store", nullable=True),
    "service_tier": enum_field("service_tier", _SERVICE_TIERS),
    "modalities": _check_modalities,
    "audio": _check_audio,
    "prediction": _check_prediction,
    "web_search_options": _check_web_search,
}


# --------------------------------------------------------------------------- entry point


def validate_chat_request(body: object) -> dict[str, Any]:
    """Check a parsed OpenAI chat-completions request body; return it unchanged (typed as dict).

    Raise gateway.errors.InvalidRequest(message, param=path) on the first violation:
    required fields first, then the body's fields in their order.
    """
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, but got {describe(body)}.", param=None
        )
    try:
        if "model" not in body:
            raise Violation(ABSENT, "model")
        if "messages" not in body:
            raise Violation(ABSENT, "messages")
        for key, value in body.items():
            check = _FIELDS.get(key)
            if check is not None:
                check(value, body)
            elif isinstance(value, dict | list):
                check_depth(value, key_path(key), 2)
    except Violation as v:
        raise v.to_error() from None
    return body
