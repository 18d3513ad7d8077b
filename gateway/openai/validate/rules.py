"""The rules every check of a chat request is built from: typed getters that raise a
`Violation`, its wording, and the bound on nesting depth.

A `Violation`'s path is relative to the object being checked; callers prefix their
own segment on the way out (`within`), so paths are only built on failure, and
`to_error` renders it in OpenAI's own wording.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from gateway.errors import InvalidRequest

__all__ = [
    "ABSENT",
    "MAX_DEPTH",
    "MISSING",
    "TOOL_KINDS",
    "FieldCheck",
    "Violation",
    "check_depth",
    "check_extras",
    "describe",
    "enum_field",
    "int_field",
    "key_path",
    "number_field",
    "optional_str",
    "required",
    "show",
    "type_error",
    "value_error",
    "want_array",
    "want_bool",
    "want_enum",
    "want_int",
    "want_name",
    "want_number",
    "want_object",
    "want_str",
]

MAX_DEPTH: Final = 64
"""Deepest container nesting accepted anywhere in a body (the body itself is 1)."""

MISSING: Final = object()  # what `.get(key, MISSING)` says of an absent key (null is None)

# Violation kinds; each renders as one of OpenAI's three message shapes.
ABSENT: Final = "missing"
_TYPE: Final = "type"
_VALUE: Final = "value"

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # tool / function / json_schema names
_SAFE_KEY = re.compile(r"[^.\[\]']+")  # a map key that can appear in a path as-is

TOOL_KINDS: Final = ("function", "custom")  # tools[].type, tool_calls[].type


class Violation(Exception):
    """Internal: a broken rule at `path`, relative to the object being checked."""

    def __init__(self, kind: str, path: str, problem: str = "") -> None:
        super().__init__(path)
        self.kind = kind
        self.path = path
        self.problem = problem

    def within(self, prefix: str) -> Violation:
        """Prefix the path with the enclosing segment (`messages[3]`, `content[0]`)."""
        self.path = prefix + "." + self.path if self.path else prefix
        return self

    def to_error(self) -> InvalidRequest:
        """The client-facing 400, worded like OpenAI's own messages."""
        path = self.path
        if not path:
            return InvalidRequest(f"Invalid request body: {self.problem}.", param=None)
        if self.kind == ABSENT:
            message = f"Missing required parameter: '{path}'."
        elif self.kind == _TYPE:
            message = f"Invalid type for '{path}': {self.problem}."
        else:
            message = f"Invalid value for '{path}': {self.problem}."
        return InvalidRequest(message, param=path)


# --------------------------------------------------------------------------- primitives


# A top-level field's check, as the validators' field tables hold them: (value, body).
FieldCheck = Callable[[object, dict[str, Any]], None]


def int_field(name: str, lo: int, hi: int | None) -> FieldCheck:
    """An optional integer field in [lo, hi] (null or absent passes)."""

    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            want_int(value, name, lo, hi)

    return check


def number_field(name: str, lo: float, hi: float) -> FieldCheck:
    """An optional number field in [lo, hi] (null or absent passes)."""

    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            want_number(value, name, lo, hi)

    return check


def enum_field(name: str, allowed: tuple[str, ...]) -> FieldCheck:
    """An optional field that is one of `allowed` (null or absent passes)."""

    def check(value: object, body: dict[str, Any]) -> None:
        if value is not None:
            want_enum(value, name, allowed)

    return check


def describe(value: object) -> str:
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


def show(value: object) -> str:
    """A short rendering of a client value for an error message (never echo megabytes)."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:40] + "..."
        return "'" + text + "'"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return "a very large integer"
    return repr(value)


def type_error(path: str, expected: str, value: object) -> Violation:
    """A "wrong JSON type" violation: `expected` is worded with an article."""
    return Violation(_TYPE, path, f"expected {expected}, but got {describe(value)} instead")


def value_error(path: str, problem: str) -> Violation:
    """A "right type, wrong value" violation."""
    return Violation(_VALUE, path, problem)


def required(obj: dict[str, Any], key: str, path: str) -> object:
    """`obj[key]`, or a "Missing required parameter" violation at `path`."""
    value = obj.get(key, MISSING)
    if value is MISSING:
        raise Violation(ABSENT, path)
    return value


def want_str(value: object, path: str) -> str:
    """`value` as a string, or a type violation at `path`."""
    if not isinstance(value, str):
        raise type_error(path, "a string", value)
    return value


def want_bool(value: object, path: str) -> None:
    """`value` is a boolean, or a type violation at `path`."""
    if not isinstance(value, bool):
        raise type_error(path, "a boolean", value)


def want_object(value: object, path: str) -> dict[str, Any]:
    """`value` as a JSON object, or a type violation at `path`."""
    if not isinstance(value, dict):
        raise type_error(path, "an object", value)
    return value


def want_array(value: object, path: str) -> list[Any]:
    """`value` as a JSON array, or a type violation at `path`."""
    if not isinstance(value, list):
        raise type_error(path, "an array", value)
    return value


def want_int(value: object, path: str, lo: int, hi: int | None) -> None:
    """An integer (never a boolean) within [lo, hi]; hi None means unbounded."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise type_error(path, "an integer", value)
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise value_error(path, f"expected an integer {bounds}, but got {show(value)} instead")


def want_number(value: object, path: str, lo: float, hi: float) -> None:
    """A JSON number (integer or decimal, never a boolean) within [lo, hi]."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise type_error(path, "a number", value)
    if not lo <= value <= hi:  # written so that NaN fails too
        raise value_error(
            path, f"expected a number between {lo:g} and {hi:g}, but got {show(value)} instead"
        )


def want_enum(value: object, path: str, allowed: tuple[str, ...], where: str = "") -> str:
    """`value` as one of the `allowed` strings; `where` adds context to the message."""
    if not isinstance(value, str):
        raise type_error(path, "a string", value)
    if value not in allowed:
        choices = ", ".join(f"'{a}'" for a in allowed)
        raise value_error(path, f"expected one of {choices}{where}, but got {show(value)} instead")
    return value


def want_name(value: object, path: str) -> None:
    """A tool, function or schema name: `^[a-zA-Z0-9_-]{1,64}$`."""
    if _NAME.fullmatch(want_str(value, path)) is None:
        raise value_error(
            path,
            f"expected a name of 1 to 64 characters from a-z, A-Z, 0-9, '_' and '-', "
            f"but got {show(value)} instead",
        )


def optional_str(obj: dict[str, Any], key: str) -> None:
    """`obj[key]`, when present, is a string (null is not accepted)."""
    value = obj.get(key, MISSING)
    if value is not MISSING:
        want_str(value, key)


def key_path(key: object) -> str:
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


def check_depth(value: object, path: str, level: int) -> None:
    """A free-form value found at nesting `level` (its container's level + 1) is shallow enough."""
    if isinstance(value, dict | list) and (
        level > MAX_DEPTH or _nests_deeper(value, MAX_DEPTH - level)
    ):
        raise value_error(path, f"nesting exceeds {MAX_DEPTH} levels")


def check_extras(obj: dict[str, Any], known: frozenset[str], level: int) -> None:
    """Unknown keys of `obj` (at nesting `level`) pass through, but must not nest too deep."""
    if obj.keys() <= known:  # the common case: a C-level subset test, no Python loop
        return
    for key, value in obj.items():
        if key not in known and isinstance(value, dict | list):
            check_depth(value, key_path(key), level + 1)
