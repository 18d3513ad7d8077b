"""Invalid requests made from valid ones: one change, and the path it was made at.

Each *site* of a valid body is a place where one change makes the body invalid under
the request schema (docs/wire-formats.md A2-A4): a required key deleted, a value of a
JSON type the schema does not allow there, a number out of its documented range, a
string outside its enumeration, a malformed name or image URL. A conforming endpoint
answers the mutated body with a 4xx whose `param` is the site's path, so the path is
recorded with the change (`Mutation.param`).

`mutation_sites` lists a body's sites; `mutated` draws a body from a strategy of valid
ones and applies one of its sites. fuzz/test_validate_props.py holds the gateway's
validator to these sites; ``python -m bench conform`` holds any endpoint to them.

Pure module: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

from bench.contract.paths import JsonPath, format_path

__all__ = [
    "ENUMS",
    "PART_TYPES",
    "RANGES",
    "RESPONSE_FORMATS",
    "ROLES",
    "TAGS",
    "TOP_TYPES",
    "Mutation",
    "Site",
    "apply",
    "bad_value",
    "mutated",
    "mutation_sites",
    "outside",
]

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
ENUMS: dict[str, tuple[str, ...]] = {
    "reasoning_effort": ("none", "minimal", "low", "medium", "high", "xhigh", "max"),
    "verbosity": ("low", "medium", "high"),
    "service_tier": ("auto", "default", "flex", "scale", "priority", "fast"),
}

# JSON type tags, and a strategy of values of each.
TAGS: dict[str, st.SearchStrategy[Any]] = {
    "str": st.text(max_size=5),
    "int": st.integers(),
    "num": st.floats(allow_nan=False, allow_infinity=False),
    "bool": st.booleans(),
    "null": st.none(),
    "arr": st.lists(st.integers(), max_size=2),
    "obj": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
}
NUMBER = frozenset({"int", "num", "null"})
INTEGER = frozenset({"int", "null"})
FLAG = frozenset({"bool", "null"})
STR = frozenset({"str"})
OBJ = frozenset({"obj"})
STR_OR_ARR = frozenset({"str", "arr"})


def outside(lo: int, hi: int | None) -> st.SearchStrategy[Any]:
    """Integers out of [lo, hi], often right at the boundary."""
    below = st.integers(lo - 3, lo - 1) | st.integers(max_value=lo - 1)
    return below if hi is None else below | st.integers(hi + 1, hi + 3) | st.integers(hi + 1)


def _outside_float(lo: float, hi: float) -> st.SearchStrategy[Any]:
    """Numbers out of [lo, hi], often within 1 of the boundary."""
    return st.one_of(
        st.floats(hi, hi + 1, exclude_min=True),
        st.floats(lo - 1, lo, exclude_max=True),
        st.floats(min_value=hi, exclude_min=True, allow_infinity=False),
        st.floats(max_value=lo, exclude_max=True, allow_infinity=False),
        st.sampled_from([lo - 1, hi + 1]),
    )


def _not_one_of(values: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.text(max_size=8).filter(lambda s: s not in values)


RANGES: dict[str, st.SearchStrategy[Any]] = {
    "temperature": _outside_float(0, 2),
    "top_p": _outside_float(0, 1),
    "presence_penalty": _outside_float(-2, 2),
    "frequency_penalty": _outside_float(-2, 2),
    "n": outside(1, 128),
    "max_tokens": outside(1, None),
    "max_completion_tokens": outside(1, None),
    "seed": outside(-(2**63), 2**63 - 1),
    "top_logprobs": outside(0, 20),
}
"""Out-of-range values of the top-level numbers."""

TOP_TYPES: dict[str, frozenset[str]] = {
    "model": STR,
    "messages": frozenset({"arr"}),
    **dict.fromkeys(("temperature", "top_p", "presence_penalty", "frequency_penalty"), NUMBER),
    **dict.fromkeys(("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs"), INTEGER),
    **dict.fromkeys(("stream", "logprobs", "store"), FLAG),
    "parallel_tool_calls": frozenset({"bool"}),
    "user": STR,
    "stop": frozenset({"str", "arr", "null"}),
    **dict.fromkeys(("logit_bias", "metadata", "stream_options"), frozenset({"obj", "null"})),
    "tools": frozenset({"arr"}),
    "tool_choice": frozenset({"str", "obj"}),
    "response_format": OBJ,
    **dict.fromkeys(ENUMS, frozenset({"str", "null"})),
}
"""The JSON types each top-level field may have (null where the schema says nullable)."""

Op = Literal["delete", "type", "value"]
Site = tuple[JsonPath, Op, Any]
"""(path, operation, argument): "delete" (None), "type" (the acceptable type tags), or
"value" (a strategy of bad values of the right type)."""


def _part_sites(path: JsonPath, part: dict[str, Any]) -> list[Site]:
    kind = part["type"]
    sites: list[Site] = [
        (path, "type", OBJ),
        ((*path, "type"), "delete", None),
        ((*path, "type"), "value", _not_one_of(PART_TYPES)),
    ]
    if kind in ("text", "refusal"):
        sites += [((*path, kind), "delete", None), ((*path, kind), "type", STR)]
    elif kind == "image_url":
        url = (*path, "image_url", "url")
        bad_urls = st.sampled_from(["ftp://x.org/a", "example.com/a.png", "data:image/png,x"])
        sites += [
            ((*path, "image_url"), "type", OBJ),
            (url, "delete", None),
            (url, "type", STR),
            (url, "value", bad_urls),
        ]
    elif kind == "input_audio":
        fmt = (*path, "input_audio", "format")
        sites += [(fmt, "delete", None), (fmt, "value", _not_one_of(("wav", "mp3")))]
    return sites


def _message_sites(i: int, msg: dict[str, Any]) -> list[Site]:
    path: JsonPath = ("messages", i)
    role = msg["role"]
    sites: list[Site] = [
        (path, "type", OBJ),
        ((*path, "role"), "delete", None),
        ((*path, "role"), "type", STR),
        ((*path, "role"), "value", _not_one_of(ROLES)),
    ]
    if "name" in msg:
        sites.append(((*path, "name"), "type", STR))
    if role in ("system", "developer", "user", "tool"):
        sites += [((*path, "content"), "delete", None), ((*path, "content"), "type", STR_OR_ARR)]
    if role == "tool":
        sites += [((*path, "tool_call_id"), "delete", None), ((*path, "tool_call_id"), "type", STR)]
    if role == "function":
        sites.append(((*path, "name"), "delete", None))
    if isinstance(msg.get("content"), list):
        for j, part in enumerate(msg["content"]):
            sites += _part_sites((*path, "content", j), part)
    for k, _call in enumerate(msg.get("tool_calls") or ()):
        call: JsonPath = (*path, "tool_calls", k)
        sites.append((call, "type", OBJ))
        for key in ("id", "type", "function"):
            sites.append(((*call, key), "delete", None))
        sites.append(((*call, "type"), "value", _not_one_of(("function", "custom"))))
        for key in ("name", "arguments"):
            sites += [((*call, "function", key), "delete", None)]
            sites += [((*call, "function", key), "type", STR)]
    return sites


def mutation_sites(body: dict[str, Any]) -> list[Site]:
    """Every place one change must make `body` invalid, with the change to make."""
    sites: list[Site] = [(("model",), "delete", None), (("messages",), "delete", None)]
    for key, value in body.items():
        if key in TOP_TYPES:
            sites.append(((key,), "type", TOP_TYPES[key]))
        if key in RANGES and value is not None:
            sites.append(((key,), "value", RANGES[key]))
        if key in ENUMS and value is not None:
            sites.append(((key,), "value", _not_one_of(ENUMS[key])))
    sites.append((("model",), "value", st.just("")))
    for token in body.get("logit_bias") or ():
        sites.append((("logit_bias", token), "value", outside(-100, 100)))
    if isinstance(body.get("tool_choice"), str):
        sites.append((("tool_choice",), "value", _not_one_of(("none", "auto", "required"))))
    for i, msg in enumerate(body["messages"]):
        sites += _message_sites(i, msg)
    referenced = _chosen_tools(body.get("tool_choice"))
    for i, tool in enumerate(body.get("tools", ())):
        fn: JsonPath = ("tools", i, "function")
        if "parameters" in tool["function"]:
            sites.append(((*fn, "parameters"), "type", OBJ))
        if tool["function"]["name"] in referenced:
            continue  # breaking it would break the tool choice too: two errors, not one
        sites += [
            (("tools", i), "type", OBJ),
            (("tools", i, "type"), "delete", None),
            (("tools", i, "type"), "value", _not_one_of(("function", "custom"))),
            (fn, "delete", None),
            ((*fn, "name"), "delete", None),
            ((*fn, "name"), "value", st.sampled_from(["", "has space", "x" * 65, "dot.ted"])),
        ]
    fmt = body.get("response_format")
    if fmt is not None:
        sites += [(("response_format", "type"), "delete", None)]
        sites += [(("response_format", "type"), "value", _not_one_of(RESPONSE_FORMATS))]
        if fmt["type"] == "json_schema":
            name: JsonPath = ("response_format", "json_schema", "name")
            sites += [(name, "delete", None), (name, "type", STR)]
    return sites


def _chosen_tools(choice: Any) -> set[str]:
    """The tool names a `tool_choice` object refers to."""
    if not isinstance(choice, dict):
        return set()
    refs = [choice]
    allowed = choice.get("allowed_tools")
    if isinstance(allowed, dict) and isinstance(allowed.get("tools"), list):
        refs = allowed["tools"]
    found = set()
    for ref in refs:
        function = ref.get("function") if isinstance(ref, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            found.add(function["name"])
    return found


def apply(body: dict[str, Any], path: JsonPath, op: Op, value: Any) -> None:
    """Make the change in place: delete the key at `path`, or set it to `value`."""
    node: Any = body
    for seg in path[:-1]:
        node = node[seg]
    if op == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value


def bad_value(site: Site) -> st.SearchStrategy[Any]:
    """The values that make `site`'s change: none to draw for a deletion."""
    _path, op, arg = site
    if op == "delete":
        return st.none()
    if op == "type":
        return st.sampled_from(sorted(set(TAGS) - arg)).flatmap(TAGS.__getitem__)
    strategy: st.SearchStrategy[Any] = arg
    return strategy


@dataclass(frozen=True)
class Mutation:
    """One change made to a valid body: what, where, and the value set (if any)."""

    path: JsonPath
    op: Op
    value: Any

    @property
    def param(self) -> str:
        """The `param` an error about this change must name."""
        return format_path(self.path)

    def describe(self) -> str:
        if self.op == "delete":
            return f"deleted {self.param}"
        what = "a value of a wrong type" if self.op == "type" else "an invalid value"
        return f"set {self.param} to {what}: {self.value!r}"


def unshared(value: Any) -> Any:
    """A copy of a JSON value in which no dict or list appears twice.

    A drawn body may hold one object at two places (st.just, or hypothesis reusing a
    value); `copy.deepcopy` keeps such sharing, so a change at one path would also
    change the other and the error would name the wrong one.
    """
    if isinstance(value, dict):
        return {k: unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unshared(v) for v in value]
    return value


@st.composite
def mutated(
    draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]]
) -> tuple[dict[str, Any], Mutation]:
    """A body from `bodies` with one site changed, and the change."""
    body = draw(bodies)
    site = draw(st.sampled_from(mutation_sites(body)))
    value = draw(bad_value(site), label=f"{format_path(site[0])} ({site[1]})")
    changed = unshared(body)  # never edit drawn values, and change one place only
    apply(changed, site[0], site[1], value)
    return changed, Mutation(site[0], site[1], value)
