"""Validation of OpenAI chat-completions request bodies (wire-formats.md A2-A4).

`validate_chat_request` checks a parsed body against the OpenAI request schema and
raises `InvalidRequest` naming the first violation by its field path, in OpenAI's
own syntax and wording (`messages[2].content[0].image_url.url`).

What it enforces, beyond the schema:
- Unknown keys pass through (top level, messages, parts: vendor extensions), but
  known keys are type-checked wherever they appear.
- The body nests at most `MAX_DEPTH` containers deep (the root object is level 1).
  orjson parses up to 1024 levels but serialises only 254, and translators recurse,
  so a deeper body would fail later as a 500. Only free-form values (tool schemas,
  unknown keys) are walked; the structured parts are shallow by construction.

It is on the hot path of every request, so it is hand-written: no schema library,
no copies, and no path strings on success. Checks raise an internal `_Violation`
whose path is relative to the object being checked; callers prefix their own
segment on the way out, so paths are only built on failure. The common message
shapes (role + string content) take a short fast path.

Null is accepted where the OpenAI SDK's request types make a field Optional, and
for an assistant message's tool_calls/function_call/refusal/audio (SDK users echo
the response message back with its nulls); translators must treat null as absent.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from gateway.errors import InvalidRequest

__all__ = ["MAX_DEPTH", "validate_chat_request"]

MAX_DEPTH: Final = 64
"""Deepest container nesting accepted anywhere in a body (the body itself is 1)."""

_MISSING: Final = object()

# Violation kinds; each renders as one of OpenAI's three message shapes.
_ABSENT: Final = "missing"
_TYPE: Final = "type"
_VALUE: Final = "value"

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # tool / function / json_schema names
_HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*", re.IGNORECASE)
_DATA_URL = re.compile(r"data:[a-zA-Z0-9.+-]+/[a-zA-Z0-9.+-]+;base64,")
_SAFE_KEY = re.compile(r"[^.\[\]']+")  # a map key that can appear in a path as-is
_TOKEN_ID = re.compile(r"[0-9]{1,10}")

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# Enumerations of the request schema (wire-formats.md A2-A4).
_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
_TEXT_ONLY: Final = ("text",)
_USER_PARTS: Final = ("text", "image_url", "input_audio", "file")
_ASSISTANT_PARTS: Final = ("text", "refusal")
_TOOL_KINDS: Final = ("function", "custom")
_AUDIO_IN: Final = ("wav", "mp3")
_AUDIO_OUT: Final = ("wav", "aac", "mp3", "flac", "opus", "pcm16")
_IMAGE_DETAIL: Final = ("auto", "low", "high")
_ALLOWED_TOOLS_MODES: Final = ("auto", "required")
_REASONING_EFFORT: Final = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_SERVICE_TIERS: Final = ("auto", "default", "flex", "scale", "priority", "fast")
_LOW_MEDIUM_HIGH: Final = ("low", "medium", "high")


class _Violation(Exception):
    """Internal: a broken rule at `path`, relative to the object being checked."""

    def __init__(self, kind: str, path: str, problem: str = "") -> None:
        super().__init__(path)
        self.kind = kind
        self.path = path
        self.problem = problem

    def within(self, prefix: str) -> _Violation:
        """Prefix the path with the enclosing segment (`messages[3]`, `content[0]`)."""
        self.path = prefix + "." + self.path if self.path else prefix
        return self

    def to_error(self) -> InvalidRequest:
        """The client-facing 400, worded like OpenAI's own messages."""
        path = self.path
        if not path:
            return InvalidRequest(f"Invalid request body: {self.problem}.", param=None)
        if self.kind == _ABSENT:
            message = f"Missing required parameter: '{path}'."
        elif self.kind == _TYPE:
            message = f"Invalid type for '{path}': {self.problem}."
        else:
            message = f"Invalid value for '{path}': {self.problem}."
        return InvalidRequest(message, param=path)


# --------------------------------------------------------------------------- primitives


def _describe(value: object) -> str:
    """The JSON type of `value` with an article, for "but got ..." phrases."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "an unsupported value"


def _show(value: object) -> str:
    """A short rendering of a client value for an error message (never echo megabytes)."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:40] + "..."
        return "'" + text + "'"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return "a very large integer"
    return repr(value)


def _type_error(path: str, expected: str, value: object) -> _Violation:
    return _Violation(_TYPE, path, f"expected {expected}, but got {_describe(value)} instead")


def _value_error(path: str, problem: str) -> _Violation:
    return _Violation(_VALUE, path, problem)


def _required(obj: dict[str, Any], key: str, path: str) -> object:
    """`obj[key]`, or a "Missing required parameter" violation at `path`."""
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise _Violation(_ABSENT, path)
    return value


def _want_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _type_error(path, "a string", value)
    return value


def _want_bool(value: object, path: str) -> None:
    if not isinstance(value, bool):
        raise _type_error(path, "a boolean", value)


def _want_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error(path, "an object", value)
    return value


def _want_array(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _type_error(path, "an array", value)
    return value


def _want_int(value: object, path: str, lo: int, hi: int | None) -> None:
    """An integer (never a boolean) within [lo, hi]; hi None means unbounded."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _type_error(path, "an integer", value)
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise _value_error(path, f"expected an integer {bounds}, but got {_show(value)} instead")


def _want_number(value: object, path: str, lo: float, hi: float) -> None:
    """A JSON number (integer or decimal, never a boolean) within [lo, hi]."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _type_error(path, "a number", value)
    if not lo <= value <= hi:  # written so that NaN fails too
        raise _value_error(
            path, f"expected a number between {lo:g} and {hi:g}, but got {_show(value)} instead"
        )


def _want_enum(value: object, path: str, allowed: tuple[str, ...], where: str = "") -> str:
    if not isinstance(value, str):
        raise _type_error(path, "a string", value)
    if value not in allowed:
        choices = ", ".join(f"'{a}'" for a in allowed)
        raise _value_error(
            path, f"expected one of {choices}{where}, but got {_show(value)} instead"
        )
    return value


def _want_name(value: object, path: str) -> None:
    """A tool, function or schema name: `^[a-zA-Z0-9_-]{1,64}$`."""
    if _NAME.fullmatch(_want_str(value, path)) is None:
        raise _value_error(
            path,
            f"expected a name of 1 to 64 characters from a-z, A-Z, 0-9, '_' and '-', "
            f"but got {_show(value)} instead",
        )


def _optional_str(obj: dict[str, Any], key: str) -> None:
    """`obj[key]`, when present, is a string (null is not accepted)."""
    value = obj.get(key, _MISSING)
    if value is not _MISSING:
        _want_str(value, key)


def _key_path(key: object) -> str:
    """`key` as a path segment, or "" (the enclosing object) if it would be ambiguous."""
    if isinstance(key, str) and _SAFE_KEY.fullmatch(key) is not None:
        return key
    return ""


# --------------------------------------------------------------------------- nesting depth


def _nests_deeper(node: dict[str, Any] | list[Any], room: int) -> bool:
    """True if `node` holds containers nested more than `room` levels below itself."""
    for child in node.values() if isinstance(node, dict) else node:
        if isinstance(child, dict | list) and (room <= 0 or _nests_deeper(child, room - 1)):
            return True
    return False


def _check_depth(value: object, path: str, level: int) -> None:
    """A free-form value found at nesting `level` (its container's level + 1) is shallow enough."""
    if isinstance(value, dict | list) and (
        level > MAX_DEPTH or _nests_deeper(value, MAX_DEPTH - level)
    ):
        raise _value_error(path, f"nesting exceeds {MAX_DEPTH} levels")


def _check_extras(obj: dict[str, Any], known: frozenset[str], level: int) -> None:
    """Unknown keys of `obj` (at nesting `level`) pass through, but must not nest too deep."""
    if obj.keys() <= known:  # the common case: a C-level subset test, no Python loop
        return
    for key, value in obj.items():
        if key not in known and isinstance(value, dict | list):
            _check_depth(value, _key_path(key), level + 1)


# --------------------------------------------------------------------------- content parts

_TEXT_PART_KEYS: Final = frozenset(("type", "text"))
_REFUSAL_PART_KEYS: Final = frozenset(("type", "refusal"))
_IMAGE_PART_KEYS: Final = frozenset(("type", "image_url"))
_IMAGE_URL_KEYS: Final = frozenset(("url", "detail"))
_AUDIO_PART_KEYS: Final = frozenset(("type", "input_audio"))
_INPUT_AUDIO_KEYS: Final = frozenset(("data", "format"))
_FILE_PART_KEYS: Final = frozenset(("type", "file"))
_FILE_KEYS: Final = frozenset(("file_data", "file_id", "filename"))


def _check_text_part(part: dict[str, Any], level: int) -> None:
    _want_str(_required(part, "text", "text"), "text")
    _check_extras(part, _TEXT_PART_KEYS, level)


def _check_refusal_part(part: dict[str, Any], level: int) -> None:
    _want_str(_required(part, "refusal", "refusal"), "refusal")
    _check_extras(part, _REFUSAL_PART_KEYS, level)


def _check_image_part(part: dict[str, Any], level: int) -> None:
    image = _want_object(_required(part, "image_url", "image_url"), "image_url")
    url = _want_str(_required(image, "url", "image_url.url"), "image_url.url")
    if _HTTP_URL.fullmatch(url) is None:
        data = _DATA_URL.match(url)  # anchored at the start: never scans the payload
        if data is None or data.end() == len(url):
            raise _value_error("image_url.url", "expected an http(s) URL or a base64 data URL")
    detail = image.get("detail", _MISSING)
    if detail is not _MISSING:
        _want_enum(detail, "image_url.detail", _IMAGE_DETAIL)
    _check_extras(part, _IMAGE_PART_KEYS, level)
    try:
        _check_extras(image, _IMAGE_URL_KEYS, level + 1)
    except _Violation as v:
        raise v.within("image_url") from None


def _check_audio_part(part: dict[str, Any], level: int) -> None:
    audio = _want_object(_required(part, "input_audio", "input_audio"), "input_audio")
    _want_str(_required(audio, "data", "input_audio.data"), "input_audio.data")
    _want_enum(_required(audio, "format", "input_audio.format"), "input_audio.format", _AUDIO_IN)
    _check_extras(part, _AUDIO_PART_KEYS, level)
    try:
        _check_extras(audio, _INPUT_AUDIO_KEYS, level + 1)
    except _Violation as v:
        raise v.within("input_audio") from None


def _check_file_part(part: dict[str, Any], level: int) -> None:
    file = _want_object(_required(part, "file", "file"), "file")
    try:
        for key in ("file_data", "file_id", "filename"):
            _optional_str(file, key)
        if "file_data" not in file and "file_id" not in file:
            raise _value_error("", "expected 'file_data' or 'file_id'")
        _check_extras(file, _FILE_KEYS, level + 1)
    except _Violation as v:
        raise v.within("file") from None
    _check_extras(part, _FILE_PART_KEYS, level)


_PART_CHECKS: Final[dict[str, Callable[[dict[str, Any], int], None]]] = {
    "text": _check_text_part,
    "image_url": _check_image_part,
    "input_audio": _check_audio_part,
    "file": _check_file_part,
    "refusal": _check_refusal_part,
}


def _check_parts(
    content: object, allowed: tuple[str, ...], where: str, path: str, level: int
) -> None:
    """A string, or a non-empty array of parts of the `allowed` types, at nesting `level`.

    `where` names the role for the error message (" in a user message").
    """
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _type_error(path, "a string or an array of content parts", content)
    if not content:
        raise _value_error(path, "expected a string or a non-empty array, but got an empty array")
    for i, part in enumerate(content):
        try:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in allowed:
                _PART_CHECKS[kind](part, level + 1)
            else:  # not an object, or a type this role does not take: say which
                part = _want_object(part, "")
                _want_enum(_required(part, "type", "type"), "type", allowed, where)
        except _Violation as v:
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
_AUDIO_REF_KEYS: Final = frozenset(("id",))
# tool_calls[].type -> (keys of the call body, the key holding the model's string payload)
_CALL_SHAPES: Final = {
    "function": (frozenset(("name", "arguments")), "arguments"),
    "custom": (frozenset(("name", "input")), "input"),
}

_MESSAGE_LEVEL: Final = 3  # body (1) > messages (2) > messages[i] (3)


def _check_system(msg: dict[str, Any]) -> None:
    """system and developer: text content, optional name."""
    content = _required(msg, "content", "content")
    if not isinstance(content, str):
        where = " in a system message" if msg["role"] == "system" else " in a developer message"
        _check_parts(content, _TEXT_ONLY, where, "content", _MESSAGE_LEVEL + 1)
    if len(msg) > 2:  # more than role and content
        _optional_str(msg, "name")
        _check_extras(msg, _SYSTEM_KEYS, _MESSAGE_LEVEL)


def _check_user(msg: dict[str, Any]) -> None:
    content = _required(msg, "content", "content")
    if not isinstance(content, str):
        _check_parts(content, _USER_PARTS, " in a user message", "content", _MESSAGE_LEVEL + 1)
    if len(msg) > 2:  # more than role and content
        _optional_str(msg, "name")
        _check_extras(msg, _USER_KEYS, _MESSAGE_LEVEL)


def _check_tool(msg: dict[str, Any]) -> None:
    content = _required(msg, "content", "content")
    if not isinstance(content, str):
        _check_parts(content, _TEXT_ONLY, " in a tool message", "content", _MESSAGE_LEVEL + 1)
    if not isinstance(msg.get("tool_call_id"), str):
        _want_str(_required(msg, "tool_call_id", "tool_call_id"), "tool_call_id")
    if len(msg) > 3:  # more than role, content and tool_call_id
        _check_extras(msg, _TOOL_KEYS, _MESSAGE_LEVEL)


def _check_function(msg: dict[str, Any]) -> None:
    """Deprecated role "function": a name, and content that is a string or null."""
    content = _required(msg, "content", "content")
    if content is not None:
        _want_str(content, "content")
    _want_str(_required(msg, "name", "name"), "name")
    _check_extras(msg, _FUNCTION_KEYS, _MESSAGE_LEVEL)


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
        except _Violation as v:
            raise v.within("function_call") from None
    refusal = msg.get("refusal")
    if refusal is not None:
        _want_str(refusal, "refusal")
    audio = msg.get("audio")
    if audio is not None:
        _want_str(_required(_want_object(audio, "audio"), "id", "audio.id"), "audio.id")
        try:
            _check_extras(audio, _AUDIO_REF_KEYS, _MESSAGE_LEVEL + 1)
        except _Violation as v:
            raise v.within("audio") from None
    content = msg.get("content", _MISSING)
    if content is _MISSING or content is None:
        if not tool_calls and function_call is None and audio is None and refusal is None:
            if content is _MISSING:
                raise _Violation(_ABSENT, "content")
            raise _type_error("content", "a string or an array of content parts", content)
    else:
        _check_parts(
            content, _ASSISTANT_PARTS, " in an assistant message", "content", _MESSAGE_LEVEL + 1
        )
    _optional_str(msg, "name")
    _check_extras(msg, _ASSISTANT_KEYS, _MESSAGE_LEVEL)


def _check_tool_calls(value: object) -> None:
    for i, call in enumerate(_want_array(value, "tool_calls")):
        try:
            call = _want_object(call, "")
            kind = _want_enum(_required(call, "type", "type"), "type", _TOOL_KINDS)
            _want_str(_required(call, "id", "id"), "id")
            known, payload = _CALL_SHAPES[kind]
            called = _required(call, kind, kind)
            try:
                _check_called(called, known, payload, 6)
            except _Violation as v:
                raise v.within(kind) from None
            _check_extras(call, _TOOL_CALL_KEYS, 5)
        except _Violation as v:
            raise v.within(f"tool_calls[{i}]") from None


def _check_called(value: object, known: frozenset[str], payload: str, level: int) -> None:
    """A call the model made, `{name, <payload>}` at nesting `level`.

    The payload (`arguments`, `input`) is a string: JSON-encoded, never an object.
    """
    called = _want_object(value, "")
    _want_str(_required(called, "name", "name"), "name")
    _want_str(_required(called, payload, payload), payload)
    _check_extras(called, known, level)


_ROLE_CHECKS: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    "system": _check_system,
    "developer": _check_system,
    "user": _check_user,
    "assistant": _check_assistant,
    "tool": _check_tool,
    "function": _check_function,
}


def _check_messages(value: object, body: dict[str, Any]) -> None:
    messages = _want_array(value, "messages")
    if not messages:
        raise _value_error("messages", "expected a non-empty array, but got an empty array")
    for i, msg in enumerate(messages):
        try:
            role = msg.get("role") if isinstance(msg, dict) else None
            check = _ROLE_CHECKS.get(role) if isinstance(role, str) else None
            if check is None:  # not an object, or no valid role: say which
                msg = _want_object(msg, "")
                _want_enum(_required(msg, "role", "role"), "role", _ROLES)
            else:
                check(msg)
        except _Violation as v:
            raise v.within(f"messages[{i}]") from None


# --------------------------------------------------------------------------- tools

_TOOL_KEYS_DEF: Final = frozenset(("type", "function", "custom"))
_FUNCTION_DEF_KEYS: Final = frozenset(("name", "description", "parameters", "strict"))
_CUSTOM_DEF_KEYS: Final = frozenset(("name", "description", "format"))
_CHOICE_KEYS: Final = frozenset(("type", "function", "custom"))
_NAME_ONLY: Final = frozenset(("name",))
_ALLOWED_CHOICE_KEYS: Final = frozenset(("type", "allowed_tools"))
_ALLOWED_TOOLS_KEYS: Final = frozenset(("mode", "tools"))


def _check_function_def(value: object, level: int) -> None:
    """`{name, description?, parameters?, strict?}`; `value` sits at nesting `level`."""
    fn = _want_object(value, "")
    _want_name(_required(fn, "name", "name"), "name")
    _optional_str(fn, "description")
    params = fn.get("parameters", _MISSING)
    if params is not _MISSING:
        _want_object(params, "parameters")
        _check_depth(params, "parameters", level + 1)
    strict = fn.get("strict")
    if strict is not None:
        _want_bool(strict, "strict")
    _check_extras(fn, _FUNCTION_DEF_KEYS, level)


def _check_custom_def(value: object, level: int) -> None:
    """`{name, description?, format?}` of a custom (free-text input) tool."""
    custom = _want_object(value, "")
    if not _want_str(_required(custom, "name", "name"), "name"):
        raise _value_error("name", "expected a non-empty string")
    _optional_str(custom, "description")
    fmt = custom.get("format", _MISSING)
    if fmt is not _MISSING:
        _want_object(fmt, "format")
        _check_depth(fmt, "format", level + 1)
    _check_extras(custom, _CUSTOM_DEF_KEYS, level)


def _check_tools(value: object, body: dict[str, Any]) -> None:
    for i, tool in enumerate(_want_array(value, "tools")):
        try:
            tool = _want_object(tool, "")
            kind = _want_enum(_required(tool, "type", "type"), "type", _TOOL_KINDS)
            spec = _required(tool, kind, kind)
            try:
                if kind == "function":
                    _check_function_def(spec, 4)
                else:
                    _check_custom_def(spec, 4)
            except _Violation as v:
                raise v.within(kind) from None
            _check_extras(tool, _TOOL_KEYS_DEF, 3)
        except _Violation as v:
            raise v.within(f"tools[{i}]") from None


def _check_functions(value: object, body: dict[str, Any]) -> None:
    """Deprecated `functions`: a list of function definitions."""
    for i, fn in enumerate(_want_array(value, "functions")):
        try:
            _check_function_def(fn, 3)
        except _Violation as v:
            raise v.within(f"functions[{i}]") from None


def _has_tool(tools: object, kind: str, name: str) -> bool:
    """Whether `tools` (validated or not) defines a `kind` tool called `name`."""
    if not isinstance(tools, list):
        return False
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == kind:
            spec = tool.get(kind)
            if isinstance(spec, dict) and spec.get("name") == name:
                return True
    return False


def _check_named_choice(choice: dict[str, Any], kind: str, tools: object, level: int) -> None:
    """`{type: kind, <kind>: {name}}`, naming a tool that `tools` defines."""
    spec = _want_object(_required(choice, kind, kind), kind)
    try:
        name = _want_str(_required(spec, "name", "name"), "name")
        if not _has_tool(tools, kind, name):
            raise _value_error("name", f"no {kind} tool named {_show(name)} in 'tools'")
        _check_extras(spec, _NAME_ONLY, level + 1)
    except _Violation as v:
        raise v.within(kind) from None
    _check_extras(choice, _CHOICE_KEYS, level)


def _check_tool_choice(value: object, body: dict[str, Any]) -> None:
    """A mode string, or an object naming tools that `tools` defines."""
    tools = body.get("tools")
    if isinstance(value, str):
        _want_enum(value, "tool_choice", ("none", "auto", "required"))
        if value == "required" and not tools:
            raise _value_error("tool_choice", "'required' is only allowed when 'tools' are given")
        return
    choice = _want_object(value, "tool_choice")
    try:
        kind = _want_enum(
            _required(choice, "type", "type"), "type", ("function", "custom", "allowed_tools")
        )
        if not tools:
            raise _value_error("", "a tool choice is only allowed when 'tools' are given")
        if kind != "allowed_tools":
            _check_named_choice(choice, kind, tools, 2)
            return
        allowed = _want_object(_required(choice, "allowed_tools", "allowed_tools"), "allowed_tools")
        _want_enum(
            _required(allowed, "mode", "allowed_tools.mode"),
            "allowed_tools.mode",
            _ALLOWED_TOOLS_MODES,
        )
        refs = _want_array(
            _required(allowed, "tools", "allowed_tools.tools"), "allowed_tools.tools"
        )
        for i, ref in enumerate(refs):
            try:
                ref = _want_object(ref, "")
                ref_kind = _want_enum(_required(ref, "type", "type"), "type", _TOOL_KINDS)
                _check_named_choice(ref, ref_kind, tools, 5)
            except _Violation as v:
                raise v.within(f"allowed_tools.tools[{i}]") from None
        _check_extras(choice, _ALLOWED_CHOICE_KEYS, 2)
        try:
            _check_extras(allowed, _ALLOWED_TOOLS_KEYS, 3)
        except _Violation as v:
            raise v.within("allowed_tools") from None
    except _Violation as v:
        raise v.within("tool_choice") from None


def _check_function_call(value: object, body: dict[str, Any]) -> None:
    """Deprecated `function_call`: "none", "auto" or `{name}` of a defined function."""
    if isinstance(value, str):
        _want_enum(value, "function_call", ("none", "auto"))
        return
    choice = _want_object(value, "function_call")
    name = _want_str(_required(choice, "name", "function_call.name"), "function_call.name")
    functions = body.get("functions")
    if not functions:
        raise _value_error("function_call", "only allowed when 'functions' are given")
    if not any(isinstance(f, dict) and f.get("name") == name for f in functions):
        raise _value_error("function_call.name", f"no function named {_show(name)} in 'functions'")
    try:
        _check_extras(choice, _NAME_ONLY, 2)
    except _Violation as v:
        raise v.within("function_call") from None


# --------------------------------------------------------------------------- other fields

_RESPONSE_FORMAT_KEYS: Final = frozenset(("type", "json_schema"))
_JSON_SCHEMA_KEYS: Final = frozenset(("name", "description", "schema", "strict"))
_STREAM_OPTION_KEYS: Final = frozenset(("include_usage", "include_obfuscation"))
_AUDIO_OUT_KEYS: Final = frozenset(("format", "voice"))
_PREDICTION_KEYS: Final = frozenset(("type", "content"))
_WEB_SEARCH_KEYS: Final = frozenset(("search_context_size", "user_location"))
_LOCATION_KEYS: Final = frozenset(("type", "approximate"))
_APPROXIMATE_KEYS: Final = frozenset(("city", "country", "region", "timezone"))


def _check_response_format(value: object, body: dict[str, Any]) -> None:
    fmt = _want_object(value, "response_format")
    kind = _want_enum(
        _required(fmt, "type", "response_format.type"),
        "response_format.type",
        ("text", "json_object", "json_schema"),
    )
    if kind == "json_schema":
        spec = _want_object(
            _required(fmt, "json_schema", "response_format.json_schema"),
            "response_format.json_schema",
        )
        try:
            _want_name(_required(spec, "name", "name"), "name")
            _optional_str(spec, "description")
            schema = spec.get("schema", _MISSING)
            if schema is not _MISSING:
                _want_object(schema, "schema")
                _check_depth(schema, "schema", 4)
            strict = spec.get("strict")
            if strict is not None:
                _want_bool(strict, "strict")
            _check_extras(spec, _JSON_SCHEMA_KEYS, 3)
        except _Violation as v:
            raise v.within("response_format.json_schema") from None
    try:
        _check_extras(fmt, _RESPONSE_FORMAT_KEYS, 2)
    except _Violation as v:
        raise v.within("response_format") from None


def _check_stream_options(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    options = _want_object(value, "stream_options")
    if body.get("stream") is not True:
        raise _value_error("stream_options", "only allowed when 'stream' is true")
    try:
        for key in ("include_usage", "include_obfuscation"):
            flag = options.get(key, _MISSING)
            if flag is not _MISSING:
                _want_bool(flag, key)
        _check_extras(options, _STREAM_OPTION_KEYS, 2)
    except _Violation as v:
        raise v.within("stream_options") from None


def _check_stop(value: object, body: dict[str, Any]) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _type_error("stop", "a string or an array of strings", value)
    if not 1 <= len(value) <= 4:
        raise _value_error("stop", f"expected 1 to 4 strings, but got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _type_error(f"stop[{i}]", "a string", item)


def _check_logit_bias(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    for token, bias in _want_object(value, "logit_bias").items():
        if not isinstance(token, str) or _TOKEN_ID.fullmatch(token) is None:
            raise _value_error(
                "logit_bias", f"keys must be token ids (integer strings), but got {_show(token)}"
            )
        if not isinstance(bias, int) or isinstance(bias, bool) or not -100 <= bias <= 100:
            _want_int(bias, f"logit_bias.{token}", -100, 100)


def _check_top_logprobs(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    _want_int(value, "top_logprobs", 0, 20)
    if body.get("logprobs") is not True:
        raise _value_error("top_logprobs", "only allowed when 'logprobs' is true")


def _check_metadata(value: object, body: dict[str, Any]) -> None:
    """At most 16 string pairs; keys up to 64 characters, values up to 512."""
    if value is None:
        return
    metadata = _want_object(value, "metadata")
    if len(metadata) > 16:
        raise _value_error("metadata", f"expected at most 16 pairs, but got {len(metadata)}")
    for key, item in metadata.items():
        if not isinstance(key, str) or len(key) > 64:
            raise _value_error("metadata", f"keys must be at most 64 characters: {_show(key)}")
        if not isinstance(item, str) or len(item) > 512:
            path = _key_path(key)
            path = f"metadata.{path}" if path else "metadata"
            if len(_want_str(item, path)) > 512:
                raise _value_error(path, "values must be at most 512 characters")


def _check_modalities(value: object, body: dict[str, Any]) -> None:
    if value is None:
        return
    for i, item in enumerate(_want_array(value, "modalities")):
        if item != "text" and item != "audio":
            _want_enum(item, f"modalities[{i}]", ("text", "audio"))
        if item == "audio" and body.get("audio") is None:
            raise _Violation(_ABSENT, "audio")


def _check_audio(value: object, body: dict[str, Any]) -> None:
    """Audio output: a format and a voice (a name, or `{id}` of a custom voice)."""
    if value is None:
        return
    audio = _want_object(value, "audio")
    _want_enum(_required(audio, "format", "audio.format"), "audio.format", _AUDIO_OUT)
    voice = _required(audio, "voice", "audio.voice")
    if isinstance(voice, dict):
        _want_str(_required(voice, "id", "audio.voice.id"), "audio.voice.id")
        try:
            _check_extras(voice, _AUDIO_REF_KEYS, 3)
        except _Violation as v:
            raise v.within("audio.voice") from None
    elif not isinstance(voice, str):
        raise _type_error("audio.voice", "a string or an object", voice)
    try:
        _check_extras(audio, _AUDIO_OUT_KEYS, 2)
    except _Violation as v:
        raise v.within("audio") from None


def _check_prediction(value: object, body: dict[str, Any]) -> None:
    """Predicted output: `{type: "content", content: string | text parts}`."""
    if value is None:
        return
    prediction = _want_object(value, "prediction")
    try:
        _want_enum(_required(prediction, "type", "type"), "type", ("content",))
        content = _required(prediction, "content", "content")
        _check_parts(content, _TEXT_ONLY, " in a prediction", "content", 3)
        _check_extras(prediction, _PREDICTION_KEYS, 2)
    except _Violation as v:
        raise v.within("prediction") from None


def _check_web_search(value: object, body: dict[str, Any]) -> None:
    options = _want_object(value, "web_search_options")
    try:
        size = options.get("search_context_size", _MISSING)
        if size is not _MISSING:
            _want_enum(size, "search_context_size", _LOW_MEDIUM_HIGH)
        location = options.get("user_location")
        if location is not None:
            location = _want_object(location, "user_location")
            _want_enum(
                _required(location, "type", "user_location.type"),
                "user_location.type",
                ("approximate",),
            )
            approx = _required(location, "approximate", "user_location.approximate")
            approx = _want_object(approx, "user_location.approximate")
            try:
                for key in ("city", "country", "region", "timezone"):
                    _optional_str(approx, key)
                _check_extras(approx, _APPROXIMATE_KEYS, 4)
            except _Violation as v:
                raise v.within("user_location.approximate") from None
            try:
                _check_extras(location, _LOCATION_KEYS, 3)
            except _Violation as v:
                raise v.within("user_location") from None
        _check_extras(options, _WEB_SEARCH_KEYS, 2)
    except _Violation as v:
        raise v.within("web_search_options") from None


def _check_model(value: object, body: dict[str, Any]) -> None:
    if not _want_str(value, "model"):
        raise _value_error("model", "expected a non-empty string")


# --------------------------------------------------------------------------- field table

_Check = Callable[[object, dict[str, Any]], None]


def _bool_field(name: str, *, nullable: bool) -> _Check:
    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None or not nullable:
            _want_bool(value, name)

    return check


def _int_field(name: str, lo: int, hi: int | None) -> _Check:
    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            _want_int(value, name, lo, hi)

    return check


def _number_field(name: str, lo: float, hi: float) -> _Check:
    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            _want_number(value, name, lo, hi)

    return check


def _enum_field(name: str, allowed: tuple[str, ...]) -> _Check:
    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            _want_enum(value, name, allowed)

    return check


def _str_field(name: str, max_len: int | None = None) -> _Check:
    def check(value: object, body: dict[str, Any]) -> None:
        text = _want_str(value, name)
        if max_len is not None and len(text) > max_len:
            raise _value_error(name, f"expected at most {max_len} characters")

    return check


# Every known top-level field. Nullability follows the OpenAI SDK's request types.
_FIELDS: Final[dict[str, _Check]] = {
    "model": _check_model,
    "messages": _check_messages,
    "stream": _bool_field("stream", nullable=True),
    "stream_options": _check_stream_options,
    "max_tokens": _int_field("max_tokens", 1, None),
    "max_completion_tokens": _int_field("max_completion_tokens", 1, None),
    "temperature": _number_field("temperature", 0, 2),
    "top_p": _number_field("top_p", 0, 1),
    "n": _int_field("n", 1, 128),
    "stop": _check_stop,
    "presence_penalty": _number_field("presence_penalty", -2, 2),
    "frequency_penalty": _number_field("frequency_penalty", -2, 2),
    "logit_bias": _check_logit_bias,
    "logprobs": _bool_field("logprobs", nullable=True),
    "top_logprobs": _check_top_logprobs,
    "seed": _int_field("seed", _INT64_MIN, _INT64_MAX),
    "user": _str_field("user"),
    "safety_identifier": _str_field("safety_identifier", 64),
    "prompt_cache_key": _str_field("prompt_cache_key"),
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "parallel_tool_calls": _bool_field("parallel_tool_calls", nullable=False),
    "functions": _check_functions,
    "function_call": _check_function_call,
    "response_format": _check_response_format,
    "reasoning_effort": _enum_field("reasoning_effort", _REASONING_EFFORT),
    "verbosity": _enum_field("verbosity", _LOW_MEDIUM_HIGH),
    "metadata": _check_metadata,
    "store": _bool_field("store", nullable=True),
    "service_tier": _enum_field("service_tier", _SERVICE_TIERS),
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
            f"The request body must be a JSON object, but got {_describe(body)}.", param=None
        )
    try:
        if "model" not in body:
            raise _Violation(_ABSENT, "model")
        if "messages" not in body:
            raise _Violation(_ABSENT, "messages")
        for key, value in body.items():
            check = _FIELDS.get(key)
            if check is not None:
                check(value, body)
            elif isinstance(value, dict | list):
                _check_depth(value, _key_path(key), 2)
    except _Violation as v:
        raise v.to_error() from None
    return body
