"""Tools and structured output in a chat request: `tools`, `tool_choice`, the
deprecated `functions` and `function_call`, and `response_format`.

A tool choice must name a tool that `tools` defines, whatever the key order.
Free-form values (parameter schemas, custom tool formats, JSON schemas) are only
checked for their nesting depth.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.openai.validate.rules import (
    MISSING,
    TOOL_KINDS,
    Violation,
    check_depth,
    check_extras,
    optional_str,
    required,
    show,
    value_error,
    want_array,
    want_bool,
    want_enum,
    want_name,
    want_object,
    want_str,
)

__all__ = [
    "check_function_call",
    "check_functions",
    "check_response_format",
    "check_tool_choice",
    "check_tools",
]

_ALLOWED_TOOLS_MODES: Final = ("auto", "required")

_TOOL_KEYS_DEF: Final = frozenset(("type", "function", "custom"))
_FUNCTION_DEF_KEYS: Final = frozenset(("name", "description", "parameters", "strict"))
_CUSTOM_DEF_KEYS: Final = frozenset(("name", "description", "format"))
_CHOICE_KEYS: Final = frozenset(("type", "function", "custom"))
_NAME_ONLY: Final = frozenset(("name",))
_ALLOWED_CHOICE_KEYS: Final = frozenset(("type", "allowed_tools"))
_ALLOWED_TOOLS_KEYS: Final = frozenset(("mode", "tools"))


def _check_function_def(value: object, level: int) -> None:
    """`{name, description?, parameters?, strict?}`; `value` sits at nesting `level`."""
    fn = want_object(value, "")
    want_name(required(fn, "name", "name"), "name")
    optional_str(fn, "description")
    params = fn.get("parameters", MISSING)
    if params is not MISSING:
        want_object(params, "parameters")
        check_depth(params, "parameters", level + 1)
    strict = fn.get("strict")
    if strict is not None:
        want_bool(strict, "strict")
    check_extras(fn, _FUNCTION_DEF_KEYS, level)


def _check_custom_def(value: object, level: int) -> None:
    """`{name, description?, format?}` of a custom (free-text input) tool."""
    custom = want_object(value, "")
    if not want_str(required(custom, "name", "name"), "name"):
        raise value_error("name", "expected a non-empty string")
    optional_str(custom, "description")
    fmt = custom.get("format", MISSING)
    if fmt is not MISSING:
        want_object(fmt, "format")
        check_depth(fmt, "format", level + 1)
    check_extras(custom, _CUSTOM_DEF_KEYS, level)


def check_tools(value: object, body: dict[str, Any]) -> None:
    """An array of tool definitions: `function` (a JSON schema) or `custom` (free text)."""
    for i, tool in enumerate(want_array(value, "tools")):
        try:
            tool = want_object(tool, "")
            kind = want_enum(required(tool, "type", "type"), "type", TOOL_KINDS)
            spec = required(tool, kind, kind)
            try:
                if kind == "function":
                    _check_function_def(spec, 4)
                else:
                    _check_custom_def(spec, 4)
            except Violation as v:
                raise v.within(kind) from None
            check_extras(tool, _TOOL_KEYS_DEF, 3)
        except Violation as v:
            raise v.within(f"tools[{i}]") from None


def check_functions(value: object, body: dict[str, Any]) -> None:
    """Deprecated `functions`: a list of function definitions."""
    for i, fn in enumerate(want_array(value, "functions")):
        try:
            _check_function_def(fn, 3)
        except Violation as v:
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
    spec = want_object(required(choice, kind, kind), kind)
    try:
        name = want_str(required(spec, "name", "name"), "name")
        if not _has_tool(tools, kind, name):
            raise value_error("name", f"no {kind} tool named {show(name)} in 'tools'")
        check_extras(spec, _NAME_ONLY, level + 1)
    except Violation as v:
        raise v.within(kind) from None
    check_extras(choice, _CHOICE_KEYS, level)


def check_tool_choice(value: object, body: dict[str, Any]) -> None:
    """A mode string, or an object naming tools that `tools` defines."""
    tools = body.get("tools")
    if isinstance(value, str):
        want_enum(value, "tool_choice", ("none", "auto", "required"))
        if value == "required" and not tools:
            raise value_error("tool_choice", "'required' is only allowed when 'tools' are given")
        return
    choice = want_object(value, "tool_choice")
    try:
        kind = want_enum(
            required(choice, "type", "type"), "type", ("function", "custom", "allowed_tools")
        )
        if not tools:
            raise value_error("", "a tool choice is only allowed when 'tools' are given")
        if kind != "allowed_tools":
            _check_named_choice(choice, kind, tools, 2)
            return
        allowed = want_object(required(choice, "allowed_tools", "allowed_tools"), "allowed_tools")
        want_enum(
            required(allowed, "mode", "allowed_tools.mode"),
            "allowed_tools.mode",
            _ALLOWED_TOOLS_MODES,
        )
        refs = want_array(required(allowed, "tools", "allowed_tools.tools"), "allowed_tools.tools")
        for i, ref in enumerate(refs):
            try:
                ref = want_object(ref, "")
                ref_kind = want_enum(required(ref, "type", "type"), "type", TOOL_KINDS)
                _check_named_choice(ref, ref_kind, tools, 5)
            except Violation as v:
                raise v.within(f"allowed_tools.tools[{i}]") from None
        check_extras(choice, _ALLOWED_CHOICE_KEYS, 2)
        try:
            check_extras(allowed, _ALLOWED_TOOLS_KEYS, 3)
        except Violation as v:
            raise v.within("allowed_tools") from None
    except Violation as v:
        raise v.within("tool_choice") from None


def check_function_call(value: object, body: dict[str, Any]) -> None:
    """Deprecated `function_call`: "none", "auto" or `{name}` of a defined function."""
    if isinstance(value, str):
        want_enum(value, "function_call", ("none", "auto"))
        return
    choice = want_object(value, "function_call")
    name = want_str(required(choice, "name", "function_call.name"), "function_call.name")
    functions = body.get("functions")
    if not functions:
        raise value_error("function_call", "only allowed when 'functions' are given")
    if not any(isinstance(f, dict) and f.get("name") == name for f in functions):
        raise value_error("function_call.name", f"no function named {show(name)} in 'functions'")
    try:
        check_extras(choice, _NAME_ONLY, 2)
    except Violation as v:
        raise v.within("function_call") from None


# --------------------------------------------------------------------------- response_format

_RESPONSE_FORMAT_KEYS: Final = frozenset(("type", "json_schema"))
_JSON_SCHEMA_KEYS: Final = frozenset(("name", "description", "schema", "strict"))


def check_response_format(value: object, body: dict[str, Any]) -> None:
    """`text`, `json_object`, or `json_schema` with a named schema."""
    fmt = want_object(value, "response_format")
    kind = want_enum(
        required(fmt, "type", "response_format.type"),
        "response_format.type",
        ("text", "json_object", "json_schema"),
    )
    if kind == "json_schema":
        spec = want_object(
            required(fmt, "json_schema", "response_format.json_schema"),
            "response_format.json_schema",
        )
        try:
            want_name(required(spec, "name", "name"), "name")
            optional_str(spec, "description")
            schema = spec.get("schema", MISSING)
            if schema is not MISSING:
                want_object(schema, "schema")
                check_depth(schema, "schema", 4)
            strict = spec.get("strict")
            if strict is not None:
                want_bool(strict, "strict")
            check_extras(spec, _JSON_SCHEMA_KEYS, 3)
        except Violation as v:
            raise v.within("response_format.json_schema") from None
    try:
        check_extras(fmt, _RESPONSE_FORMAT_KEYS, 2)
    except Violation as v:
        raise v.within("response_format") from None
