"""Validation of `POST /v1/responses` bodies: a 400 naming the field, as for chat.

`validate_responses_request` checks a parsed body against the Responses API's request
schema (OpenAI's OpenAPI document, `CreateResponse`) and raises `InvalidRequest`
naming the first violation by its path in the client's own terms
(`input[2].content[0].image_url`, `text.format.schema`). It is built from the chat
validator's rules (gateway/openai/validate/rules.py): same wording, same depth bound.

What it leaves to later steps, on purpose:
- Item and tool types beyond the ones the gateway translates (built-in tools such as
  `web_search`, their call items) are accepted here as objects with a `type`: an
  upstream that speaks the Responses API natively runs them, and the bridge to chat
  completions refuses them by name (gateway/responses/to_chat.py).
- Unknown top-level fields pass through to a native upstream, as chat passes vendor
  extensions through; the bridge ignores them.

Refused outright, whatever the upstream: `background: true` (nothing is queued here)
and `conversation` (no Conversations API here: continue with `previous_response_id`).

Pure module: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from gateway.errors import InvalidRequest
from gateway.openai.validate import MAX_OUTPUT_TOKENS
from gateway.openai.validate.rules import (
    ABSENT,
    MISSING,
    Violation,
    check_depth,
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
    want_name,
    want_object,
    want_str,
)

__all__ = ["MAX_FALLBACK_MODELS", "validate_responses_request"]

MAX_FALLBACK_MODELS: Final = 8  # the request's own `models` list, as on chat
MIN_OUTPUT_TOKENS: Final = 16  # OpenAI's minimum for `max_output_tokens`

_ROLES: Final = ("user", "assistant", "system", "developer")
_INPUT_PARTS: Final = ("input_text", "input_image", "input_file")
_ASSISTANT_PARTS: Final = ("output_text", "refusal", "input_text")
_IMAGE_DETAIL: Final = ("low", "high", "auto", "original")
_ITEM_STATUS: Final = ("in_progress", "completed", "incomplete")
_EFFORT: Final = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_SUMMARY: Final = ("auto", "concise", "detailed")
_VERBOSITY: Final = ("low", "medium", "high")
_TRUNCATION: Final = ("auto", "disabled")
_SERVICE_TIERS: Final = ("auto", "default", "flex", "scale", "priority")
_CHOICE_MODES: Final = ("none", "auto", "required")
_FORMATS: Final = ("text", "json_schema", "json_object")

# The URLs chat's validator takes for an image (gateway/openai/validate/messages.py), so
# that what passes here passes the bridge.
_HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*", re.IGNORECASE)
_DATA_URL = re.compile(r"data:[a-zA-Z0-9.+-]+/[a-zA-Z0-9.+-]+;base64,")

# Nesting levels: body (1) > input (2) > input[i] (3) > content (4) > content[j] (5).
_ITEM_LEVEL: Final = 3


# --------------------------------------------------------------------------- input


def _check_text(part: dict[str, Any], key: str = "text") -> None:
    want_str(required(part, key, key), key)


def _check_image(part: dict[str, Any]) -> None:
    url = part.get("image_url")
    file_id = part.get("file_id")
    if url is None and file_id is None:
        raise value_error("", "expected 'image_url' or 'file_id'")
    if url is not None and _HTTP_URL.fullmatch(want_str(url, "image_url")) is None:
        data = _DATA_URL.match(url)  # anchored at the start: never scans the payload
        if data is None or data.end() == len(url):
            raise value_error("image_url", "expected an http(s) URL or a base64 data URL")
    if file_id is not None:
        want_str(file_id, "file_id")
    detail = part.get("detail")
    if detail is not None:
        want_enum(detail, "detail", _IMAGE_DETAIL)


def _check_file(part: dict[str, Any]) -> None:
    for key in ("file_id", "file_data", "file_url", "filename"):
        value = part.get(key)
        if value is not None:
            want_str(value, key)
    if part.get("file_id") is None and part.get("file_data") is None and not part.get("file_url"):
        raise value_error("", "expected 'file_id', 'file_data' or 'file_url'")
    url = part.get("file_url")
    if url is not None and not url.startswith(("http://", "https://")):
        raise value_error("file_url", "expected an http(s) URL")


_PART_CHECKS: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    "input_text": _check_text,
    "output_text": _check_text,
    "refusal": lambda part: _check_text(part, "refusal"),
    "input_image": _check_image,
    "input_file": _check_file,
}


def _check_parts(content: object, allowed: tuple[str, ...], where: str, path: str) -> None:
    """A non-empty array of content parts of the `allowed` types."""
    parts = want_array(content, path)
    if not parts:
        raise value_error(path, "expected a string or a non-empty array, but got an empty array")
    for j, part in enumerate(parts):
        try:
            part = want_object(part, "")
            kind = want_enum(required(part, "type", "type"), "type", allowed, where)
            _PART_CHECKS[kind](part)
        except Violation as v:
            raise v.within(f"{path}[{j}]") from None


def _check_message(item: dict[str, Any]) -> None:
    role = want_enum(required(item, "role", "role"), "role", _ROLES)
    content = required(item, "content", "content")
    if not isinstance(content, str):
        if role == "assistant":
            _check_parts(content, _ASSISTANT_PARTS, " in an assistant message", "content")
        else:
            _check_parts(content, _INPUT_PARTS, f" in a {role} message", "content")
    _check_status(item)


def _check_status(item: dict[str, Any]) -> None:
    optional_str(item, "id")
    status = item.get("status")
    if status is not None:
        want_enum(status, "status", _ITEM_STATUS)


def _check_function_call(item: dict[str, Any]) -> None:
    if not want_str(required(item, "call_id", "call_id"), "call_id"):
        raise value_error("call_id", "expected a non-empty string")
    want_str(required(item, "name", "name"), "name")
    want_str(required(item, "arguments", "arguments"), "arguments")
    _check_status(item)


def _check_function_output(item: dict[str, Any]) -> None:
    if not want_str(required(item, "call_id", "call_id"), "call_id"):
        raise value_error("call_id", "expected a non-empty string")
    output = required(item, "output", "output")
    if not isinstance(output, str):
        _check_parts(output, _INPUT_PARTS, " in a function call output", "output")
    _check_status(item)


def _check_reasoning(item: dict[str, Any]) -> None:
    optional_str(item, "id")
    summary = item.get("summary", MISSING)
    if summary is not MISSING:
        want_array(summary, "summary")


def _check_reference(item: dict[str, Any]) -> None:
    if not want_str(required(item, "id", "id"), "id"):
        raise value_error("id", "expected a non-empty string")


_ITEM_CHECKS: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    "message": _check_message,
    "function_call": _check_function_call,
    "function_call_output": _check_function_output,
    "reasoning": _check_reasoning,
    "item_reference": _check_reference,
}


def item_type(item: dict[str, Any]) -> str | None:
    """An input item's type: its `type`, or `message` for `{role, content}` without one,
    `item_reference` for a bare `{id}`; None if it has none of these."""
    kind = item.get("type")
    if isinstance(kind, str):
        return kind
    if kind is None:
        if "role" in item:
            return "message"
        if "id" in item:
            return "item_reference"
    return None


def _check_input(value: object, body: dict[str, Any]) -> None:
    if value is None or isinstance(value, str):
        return
    items = want_array(value, "input")
    if not items and body.get("previous_response_id") is None:
        raise value_error("input", "expected a string or a non-empty array, but got an empty array")
    for i, item in enumerate(items):
        try:
            item = want_object(item, "")
            kind = item_type(item)
            if kind is None:
                if item.get("type") is not None:
                    raise type_error("type", "a string", item["type"])
                raise Violation(ABSENT, "type")
            check = _ITEM_CHECKS.get(kind)
            if check is not None:
                check(item)
            check_depth(item, "", _ITEM_LEVEL)
        except Violation as v:
            raise v.within(f"input[{i}]") from None


# --------------------------------------------------------------------------- tools


def _check_tools(value: object, body: dict[str, Any]) -> None:
    for i, tool in enumerate(want_array(value, "tools")):
        try:
            tool = want_object(tool, "")
            kind = want_str(required(tool, "type", "type"), "type")
            if kind == "function":
                want_name(required(tool, "name", "name"), "name")
                description = tool.get("description")
                if description is not None:
                    want_str(description, "description")
                params = tool.get("parameters")
                if params is not None:
                    want_object(params, "parameters")
                strict = tool.get("strict")
                if strict is not None:
                    want_bool(strict, "strict")
            check_depth(tool, "", 3)
        except Violation as v:
            raise v.within(f"tools[{i}]") from None


def function_names(tools: object) -> set[str]:
    """The names of the function tools in `tools` (validated or not)."""
    if not isinstance(tools, list):
        return set()
    return {
        t["name"]
        for t in tools
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
    }


def _check_named_function(choice: dict[str, Any], names: set[str]) -> None:
    name = want_str(required(choice, "name", "name"), "name")
    if name not in names:
        raise value_error("name", f"no function tool named {show(name)} in 'tools'")


def _check_tool_choice(value: object, body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if value is None:
        return
    if isinstance(value, str):
        want_enum(value, "tool_choice", _CHOICE_MODES)
        if value == "required" and not tools:
            raise value_error("tool_choice", "'required' is only allowed when 'tools' are given")
        return
    choice = want_object(value, "tool_choice")
    try:
        kind = want_str(required(choice, "type", "type"), "type")
        names = function_names(tools)
        if kind == "function":
            _check_named_function(choice, names)
        elif kind == "allowed_tools":
            want_enum(required(choice, "mode", "mode"), "mode", ("auto", "required"))
            refs = want_array(required(choice, "tools", "tools"), "tools")
            for i, ref in enumerate(refs):
                try:
                    ref = want_object(ref, "")
                    if want_str(required(ref, "type", "type"), "type") == "function":
                        _check_named_function(ref, names)
                except Violation as v:
                    raise v.within(f"tools[{i}]") from None
        check_depth(choice, "", 2)
    except Violation as v:
        raise v.within("tool_choice") from None


# --------------------------------------------------------------------------- the rest


def _check_text_config(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    text = want_object(value, "text")
    try:
        fmt = text.get("format")
        if fmt is not None:
            fmt = want_object(fmt, "format")
            kind = want_enum(required(fmt, "type", "format.type"), "format.type", _FORMATS)
            if kind == "json_schema":
                try:
                    want_name(required(fmt, "name", "name"), "name")
                    schema = want_object(required(fmt, "schema", "schema"), "schema")
                    check_depth(schema, "schema", 4)
                    optional_str(fmt, "description")
                    strict = fmt.get("strict")
                    if strict is not None:
                        want_bool(strict, "strict")
                except Violation as v:
                    raise v.within("format") from None
        verbosity = text.get("verbosity")
        if verbosity is not None:
            want_enum(verbosity, "verbosity", _VERBOSITY)
    except Violation as v:
        raise v.within("text") from None


def _check_reasoning_config(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    reasoning = want_object(value, "reasoning")
    try:
        for key, allowed in (("effort", _EFFORT), ("summary", _SUMMARY)):
            setting = reasoning.get(key)
            if setting is not None:
                want_enum(setting, key, allowed)
        generate = reasoning.get("generate_summary")
        if generate is not None:
            want_enum(generate, "generate_summary", _SUMMARY)
    except Violation as v:
        raise v.within("reasoning") from None


def _check_metadata(value: object, body: dict[str, Any]) -> None:
    """At most 16 string pairs; keys up to 64 characters, values up to 512."""
    if value is None:
        return
    metadata = want_object(value, "metadata")
    if len(metadata) > 16:
        raise value_error("metadata", f"expected at most 16 pairs, but got {len(metadata)}")
    for key, item in metadata.items():
        if len(key) > 64:
            raise value_error("metadata", f"keys must be at most 64 characters: {show(key)}")
        path = f"metadata.{key_path(key)}" if key_path(key) else "metadata"
        if len(want_str(item, path)) > 512:
            raise value_error(path, "values must be at most 512 characters")


def _check_stream_options(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    options = want_object(value, "stream_options")
    if body.get("stream") is not True:
        raise value_error("stream_options", "only allowed when 'stream' is true")
    flag = options.get("include_obfuscation", MISSING)
    if flag is not MISSING:
        want_bool(flag, "stream_options.include_obfuscation")


def _check_background(value: object, body: dict[str, Any]) -> None:
    if value is not None:
        want_bool(value, "background")
    if value is True:
        raise value_error("background", "background responses are not supported by this gateway")


def _check_conversation(value: object, body: dict[str, Any]) -> None:
    if value is not None:
        raise value_error(
            "conversation",
            "conversations are not supported by this gateway; continue a conversation "
            "with 'previous_response_id'",
        )


def _check_models(value: object, body: dict[str, Any]) -> None:
    """The request's own fallback list, as on chat completions (docs/routing.md)."""
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


def _check_include(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    for i, item in enumerate(want_array(value, "include")):
        want_str(item, f"include[{i}]")


_Check = Callable[[object, dict[str, Any]], None]


def _nullable(check: Callable[[object, str], Any], name: str) -> _Check:
    def run(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            check(value, name)

    return run


def _short_str(name: str, most: int) -> _Check:
    def run(value: object, body: dict[str, Any]) -> None:
        if value is not None and len(want_str(value, name)) > most:
            raise value_error(name, f"expected at most {most} characters")

    return run


def _check_model(value: object, body: dict[str, Any]) -> None:
    if not want_str(value, "model"):
        raise value_error("model", "expected a non-empty string")


def _check_object(name: str) -> _Check:
    def run(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            check_depth(want_object(value, name), name, 2)

    return run


_FIELDS: Final[dict[str, _Check]] = {
    "model": _check_model,
    "models": _check_models,
    "input": _check_input,
    "instructions": _nullable(want_str, "instructions"),
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "parallel_tool_calls": _nullable(want_bool, "parallel_tool_calls"),
    "text": _check_text_config,
    "max_output_tokens": int_field("max_output_tokens", MIN_OUTPUT_TOKENS, MAX_OUTPUT_TOKENS),
    "max_tool_calls": int_field("max_tool_calls", 1, MAX_OUTPUT_TOKENS),
    "temperature": number_field("temperature", 0, 2),
    "top_p": number_field("top_p", 0, 1),
    "top_logprobs": int_field("top_logprobs", 0, 20),
    "reasoning": _check_reasoning_config,
    "metadata": _check_metadata,
    "user": _nullable(want_str, "user"),
    "safety_identifier": _short_str("safety_identifier", 64),
    "prompt_cache_key": _nullable(want_str, "prompt_cache_key"),
    "store": _nullable(want_bool, "store"),
    "stream": _nullable(want_bool, "stream"),
    "stream_options": _check_stream_options,
    "previous_response_id": _nullable(want_str, "previous_response_id"),
    "background": _check_background,
    "conversation": _check_conversation,
    "include": _check_include,
    "truncation": enum_field("truncation", _TRUNCATION),
    "service_tier": enum_field("service_tier", _SERVICE_TIERS),
    "prompt": _check_object("prompt"),
}


def validate_responses_request(body: object) -> dict[str, Any]:
    """Check a parsed `POST /v1/responses` body; return it unchanged (typed as dict).

    Raise InvalidRequest(message, param=path) on the first violation: the required
    fields first, then the body's fields in their order.
    """
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, but got {describe(body)}.", param=None
        )
    try:
        if "model" not in body:
            raise Violation(ABSENT, "model")
        if body.get("input") is None and body.get("previous_response_id") is None:
            raise Violation(ABSENT, "input")
        for key, value in body.items():
            check = _FIELDS.get(key)
            if check is not None:
                check(value, body)
            elif isinstance(value, dict | list):
                check_depth(value, key_path(key), 2)
    except Violation as v:
        raise v.to_error() from None
    return body
