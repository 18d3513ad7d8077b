"""The `messages` of a chat request: each role's shape and its content parts.

The common shapes (role + string content) take a short fast path.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from gateway.openai.validate.rules import (
    ABSENT,
    MISSING,
    TOOL_KINDS,
    Violation,
    check_extras,
    optional_str,
    required,
    type_error,
    value_error,
    want_array,
    want_enum,
    want_object,
    want_str,
)

__all__ = ["AUDIO_REF_KEYS", "TEXT_ONLY", "check_messages", "check_parts"]

_HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*", re.IGNORECASE)
_DATA_URL = re.compile(r"data:[a-zA-Z0-9.+-]+/[a-zA-Z0-9.+-]+;base64,")

# Enumerations of the request schema (docs/wire-formats.md A2-A4).
_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
TEXT_ONLY: Final = ("text",)
_USER_PARTS: Final = ("text", "image_url", "input_audio", "file")
_ASSISTANT_PARTS: Final = ("text", "refusal")
_AUDIO_IN: Final = ("wav", "mp3")
_IMAGE_DETAIL: Final = ("auto", "low", "high")

_TEXT_PART_KEYS: Final = frozenset(("type", "text"))
_REFUSAL_PART_KEYS: Final = frozenset(("type", "refusal"))
_IMAGE_PART_KEYS: Final = frozenset(("type", "image_url"))
_IMAGE_URL_KEYS: Final = frozenset(("url", "detail"))
_AUDIO_PART_KEYS: Final = frozenset(("type", "input_audio"))
_INPUT_AUDIO_KEYS: Final = frozenset(("data", "format"))
_FILE_PART_KEYS: Final = frozenset(("type", "file"))
_FILE_KEYS: Final = frozenset(("file_data", "file_id", "filename"))


def _check_text_part(part: dict[str, Any], level: int) -> None:
    want_str(required(part, "text", "text"), "text")
    check_extras(part, _TEXT_PART_KEYS, level)


def _check_refusal_part(part: dict[str, Any], level: int) -> None:
    want_str(required(part, "refusal", "refusal"), "refusal")
    check_extras(part, _REFUSAL_PART_KEYS, level)


def _check_image_part(part: dict[str, Any], level: int) -> None:
    image = want_object(required(part, "image_url", "image_url"), "image_url")
    url = want_str(required(image, "url", "image_url.url"), "image_url.url")
    if _HTTP_URL.fullmatch(url) is None:
        data = _DATA_URL.match(url)  # anchored at the start: never scans the payload
        if data is None or data.end() == len(url):
            raise value_error("image_url.url", "expected an http(s) URL or a base64 data URL")
    detail = image.get("detail", MISSING)
    if detail is not MISSING:
        want_enum(detail, "image_url.detail", _IMAGE_DETAIL)
    check_extras(part, _IMAGE_PART_KEYS, level)
    try:
        check_extras(image, _IMAGE_URL_KEYS, level + 1)
    except Violation as v:
        raise v.within("image_url") from None


def _check_audio_part(part: dict[str, Any], level: int) -> None:
    audio = want_object(required(part, "input_audio", "input_audio"), "input_audio")
    want_str(required(audio, "data", "input_audio.data"), "input_audio.data")
    want_enum(required(audio, "format", "input_audio.format"), "input_audio.format", _AUDIO_IN)
    check_extras(part, _AUDIO_PART_KEYS, level)
    try:
        check_extras(audio, _INPUT_AUDIO_KEYS, level + 1)
    except Violation as v:
        raise v.within("input_audio") from None


def _check_file_part(part: dict[str, Any], level: int) -> None:
    file = want_object(required(part, "file", "file"), "file")
    try:
        for key in ("file_data", "file_id", "filename"):
            optional_str(file, key)
        if "file_data" not in file and "file_id" not in file:
            raise value_error("", "expected 'file_data' or 'file_id'")
        check_extras(file, _FILE_KEYS, level + 1)
    except Violation as v:
        raise v.within("file") from None
    check_extras(part, _FILE_PART_KEYS, level)


_PART_CHECKS: Final[dict[str, Callable[[dict[str, Any], int], None]]] = {
    "text": _check_text_part,
    "image_url": _check_image_part,
    "input_audio": _check_audio_part,
    "file": _check_file_part,
    "refusal": _check_refusal_part,
}


def check_parts(
    content: object, allowed: tuple[str, ...], where: str, path: str, level: int
) -> None:
    """A string, or a non-empty array of parts of the `allowed` types, at nesting `level`.

    `where` names the role for the error message (" in a user message").
    """
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise type_error(path, "a string or an array of content parts", content)
    if not content:
        raise value_error(path, "expected a string or a non-empty array, but got an empty array")
    for i, part in enumerate(content):
        try:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in allowed:
                _PART_CHECKS[kind](part, level + 1)
            else:  # not an object, or a type this role does not take: say which
                part = want_object(part, "")
                want_enum(required(part, "type", "type"), "type", allowed, where)
        except Violation as v:
            raise v.within(f"{path}[{i}]") from None


# --------------------------------------------------------------------------- messages

_SYSTEM_KEYS: Final = frozenset(("role", "content", "name"))
_USER_KEYS: Final = _SYSTEM_KEYS
_TOOL_KEYS: Final = frozenset(("role", "content", "tool_call_id"))
_FUNCTION_KEYS: Final = frozenset(("role", "content", "name"))
_ASSISTANT_KEYS: Final = frozenset(
    ("role", "content", "name", "refusal", "tool_calls", "function_call", "audio")
)
_TOOL_CALL_KEYS: Final = frozenset(("id", "type", "function", "custom"))
AUDIO_REF_KEYS: Final = frozenset(("id",))
# tool_calls[].type -> (keys of the call body, the key holding the model's string payload)
_CALL_SHAPES: Final = {
    "function": (frozenset(("name", "arguments")), "arguments"),
    "custom": (frozenset(("name", "input")), "input"),
}

_MESSAGE_LEVEL: Final = 3  # body (1) > messages (2) > messages[i] (3)


def _check_system(msg: dict[str, Any]) -> None:
    """system and developer: text content, optional name."""
    content = required(msg, "content", "content")
    if not isinstance(content, str):
        where = " in a system message" if msg["role"] == "system" else " in a developer message"
        check_parts(content, TEXT_ONLY, where, "content", _MESSAGE_LEVEL + 1)
    if len(msg) > 2:  # more than role and content
        optional_str(msg, "name")
        check_extras(msg, _SYSTEM_KEYS, _MESSAGE_LEVEL)


def _check_user(msg: dict[str, Any]) -> None:
    content = required(msg, "content", "content")
    if not isinstance(content, str):
        check_parts(content, _USER_PARTS, " in a user message", "content", _MESSAGE_LEVEL + 1)
    if len(msg) > 2:  # more than role and content
        optional_str(msg, "name")
        check_extras(msg, _USER_KEYS, _MESSAGE_LEVEL)


def _check_tool(msg: dict[str, Any]) -> None:
    content = required(msg, "content", "content")
    if not isinstance(content, str):
        check_parts(content, TEXT_ONLY, " in a tool message", "content", _MESSAGE_LEVEL + 1)
    if not isinstance(msg.get("tool_call_id"), str):
        want_str(required(msg, "tool_call_id", "tool_call_id"), "tool_call_id")
    if len(msg) > 3:  # more than role, content and tool_call_id
        check_extras(msg, _TOOL_KEYS, _MESSAGE_LEVEL)


def _check_function(msg: dict[str, Any]) -> None:
    """Deprecated role "function": a name, and content that is a string or null."""
    content = required(msg, "content", "content")
    if content is not None:
        want_str(content, "content")
    want_str(required(msg, "name", "name"), "name")
    check_extras(msg, _FUNCTION_KEYS, _MESSAGE_LEVEL)


def _check_assistant(msg: dict[str, Any]) -> None:
    """Content may be null or absent when the turn carries tool calls (or audio, a refusal).

    `tool_calls`, `function_call`, `refusal` and `audio` accept null: SDK users append the
    response message as dumped (`message.model_dump()`), nulls included.
    """
    if len(msg) == 2 and isinstance(msg.get("content"), str):
        return  # the common shape: role and text content only
    tool_calls = msg.get("tool_calls")
    if tool_calls is not None:
        _check_tool_calls(tool_calls)
    function_call = msg.get("function_call")
    if function_call is not None:
        try:
            known, payload = _CALL_SHAPES["function"]
            _check_called(function_call, known, payload, _MESSAGE_LEVEL + 1)
        except Violation as v:
            raise v.within("function_call") from None
    refusal = msg.get("refusal")
    if refusal is not None:
        want_str(refusal, "refusal")
    audio = msg.get("audio")
    if audio is not None:
        want_str(required(want_object(audio, "audio"), "id", "audio.id"), "audio.id")
        try:
            check_extras(audio, AUDIO_REF_KEYS, _MESSAGE_LEVEL + 1)
        except Violation as v:
            raise v.within("audio") from None
    content = msg.get("content", MISSING)
    if content is MISSING or content is None:
        if not tool_calls and function_call is None and audio is None and refusal is None:
            if content is MISSING:
                raise Violation(ABSENT, "content")
            raise type_error("content", "a string or an array of content parts", content)
    else:
        check_parts(
            content, _ASSISTANT_PARTS, " in an assistant message", "content", _MESSAGE_LEVEL + 1
        )
    optional_str(msg, "name")
    check_extras(msg, _ASSISTANT_KEYS, _MESSAGE_LEVEL)


def _check_tool_calls(value: object) -> None:
    for i, call in enumerate(want_array(value, "tool_calls")):
        try:
            call = want_object(call, "")
            kind = want_enum(required(call, "type", "type"), "type", TOOL_KINDS)
            want_str(required(call, "id", "id"), "id")
            known, payload = _CALL_SHAPES[kind]
            called = required(call, kind, kind)
            try:
                _check_called(called, known, payload, 6)
            except Violation as v:
                raise v.within(kind) from None
            check_extras(call, _TOOL_CALL_KEYS, 5)
        except Violation as v:
            raise v.within(f"tool_calls[{i}]") from None


def _check_called(value: object, known: frozenset[str], payload: str, level: int) -> None:
    """A call the model made, `{name, <payload>}` at nesting `level`.

    The payload (`arguments`, `input`) is a string: JSON-encoded, never an object.
    """
    called = want_object(value, "")
    want_str(required(called, "name", "name"), "name")
    want_str(required(called, payload, payload), payload)
    check_extras(called, known, level)


_ROLE_CHECKS: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    "system": _check_system,
    "developer": _check_system,
    "user": _check_user,
    "assistant": _check_assistant,
    "tool": _check_tool,
    "function": _check_function,
}


def check_messages(value: object, body: dict[str, Any]) -> None:
    """A non-empty array of messages, each checked by its role."""
    messages = want_array(value, "messages")
    if not messages:
        raise value_error("messages", "expected a non-empty array, but got an empty array")
    for i, msg in enumerate(messages):
        try:
            role = msg.get("role") if isinstance(msg, dict) else None
            check = _ROLE_CHECKS.get(role) if isinstance(role, str) else None
            if check is None:  # not an object, or no valid role: say which
                msg = want_object(msg, "")
                want_enum(required(msg, "role", "role"), "role", _ROLES)
            else:
                check(msg)
        except Violation as v:
            raise v.within(f"messages[{i}]") from None
