"""Property tests of gateway.openai.validate.

- Every request drawn from `valid_requests()` is accepted, unchanged.
- One mutation of a valid request (a required key deleted, a value of the wrong type,
  a number out of range, an unknown enum value) is rejected, and `param` is exactly
  the mutated path, resolved against the mutated body to prove it is real.
- For any JSON value, the validator returns the body or raises `InvalidRequest` whose
  `param` resolves; nothing else escapes.
- Every file in `corpus/validate/` gives its expected outcome (valid-*, invalid-*).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequest
from gateway.openai.validate import MAX_DEPTH, validate_chat_request

CORPUS = Path(__file__).parent / "corpus" / "validate"
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Segment = str | int
JsonPath = tuple[Segment, ...]

# --------------------------------------------------------------------------- paths

_PARAM = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[\d+\])*")
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_param(param: str) -> JsonPath:
    """`messages[2].content[0].type` -> ("messages", 2, "content", 0, "type")."""
    assert _PARAM.fullmatch(param), f"malformed param {param!r}"
    return tuple(key if key else int(index) for key, index in _SEGMENT.findall(param))


def format_path(path: JsonPath) -> str:
    text = ""
    for seg in path:
        text += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if text else seg)
    return text


def resolve(body: Any, param: str, *, missing: bool) -> None:
    """Assert `param` is a real path into `body`; a missing key's parent must be real."""
    path = parse_param(param)
    node = body
    for depth, seg in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(seg, int):
            assert isinstance(node, list) and seg < len(node), (param, node)
            node = node[seg]
            continue
        assert isinstance(node, dict), (param, node)
        if seg not in node:
            assert last and missing, f"{param!r} does not resolve"
            return
        node = node[seg]
    if missing:  # named as missing but present: only null may stand for absent
        assert node is None, (param, node)


def check_rejection(body: Any, context: str = "") -> InvalidRequest:
    """Validate `body` expecting a 400; check its param resolves; return the error."""
    try:
        validate_chat_request(body)
    except InvalidRequest as error:
        if error.param is not None:
            resolve(body, error.param, missing=error.message.startswith("Missing required"))
            assert f"'{error.param}'" in error.message
        return error
    pytest.fail(f"accepted an invalid body {context}")


# --------------------------------------------------------------------------- valid requests

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
ENUMS: dict[str, tuple[str, ...]] = {
    "reasoning_effort": ("none", "minimal", "low", "medium", "high", "xhigh", "max"),
    "verbosity": ("low", "medium", "high"),
    "service_tier": ("auto", "default", "flex", "scale", "priority", "fast"),
}

text = st.text(max_size=12)
names = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)

urls = st.sampled_from(
    [
        "https://example.com/cat.png",
        "http://localhost:8080/a.jpg?size=2",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/jpeg;base64,/9j/4AAQ",
    ]
)
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": text})
image_part = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries(
            {"url": urls}, optional={"detail": st.sampled_from(["auto", "low", "high"])}
        ),
    }
)
audio_part = st.fixed_dictionaries(
    {
        "type": st.just("input_audio"),
        "input_audio": st.fixed_dictionaries(
            {"data": st.just("UklGRg=="), "format": st.sampled_from(["wav", "mp3"])}
        ),
    }
)
file_part = st.fixed_dictionaries(
    {"type": st.just("file"), "file": st.fixed_dictionaries({"file_id": text})}
)
refusal_part = st.fixed_dictionaries({"type": st.just("refusal"), "refusal": text})


def parts(*kinds: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(*kinds), min_size=1, max_size=3)


system_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer"]), "content": text | parts(text_part)},
    optional={"name": text},
)
user_message = st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": text | parts(text_part, image_part, audio_part, file_part),
    },
    optional={"name": text, "x_vendor": json_values},
)
tool_call = st.fixed_dictionaries(
    {
        "id": text,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": names, "arguments": text}),
    }
)
assistant_text = st.fixed_dictionaries(
    {"role": st.just("assistant"), "content": text | parts(text_part, refusal_part)},
    optional={"name": text, "refusal": st.none() | text, "tool_calls": st.none()},
)
assistant_calls = st.fixed_dictionaries(
    {"role": st.just("assistant"), "tool_calls": st.lists(tool_call, min_size=1, max_size=2)},
    optional={"content": st.none() | text},
)
tool_message = st.fixed_dictionaries(
    {"role": st.just("tool"), "tool_call_id": text, "content": text | parts(text_part)}
)
function_message = st.fixed_dictionaries(
    {"role": st.just("function"), "name": names, "content": st.none() | text}
)
messages = st.lists(
    st.one_of(
        system_message,
        user_message,
        assistant_text,
        assistant_calls,
        tool_message,
        function_message,
    ),
    min_size=1,
    max_size=6,
)


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def numbers_between(lo: int, hi: int) -> st.SearchStrategy[Any]:
    return st.integers(lo, hi) | st.floats(lo, hi)


OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": nullable(numbers_between(0, 2)),
    "top_p": nullable(numbers_between(0, 1)),
    "presence_penalty": nullable(numbers_between(-2, 2)),
    "frequency_penalty": nullable(numbers_between(-2, 2)),
    "n": nullable(st.integers(1, 128)),
    "max_tokens": nullable(st.integers(1, 10**6) | st.integers(1, 2**31 - 1)),
    "max_completion_tokens": nullable(st.integers(1, 10**6) | st.integers(1, 2**31 - 1)),
    "seed": nullable(st.integers(-(2**63), 2**63 - 1)),
    "stop": nullable(text | st.lists(text, min_size=1, max_size=4)),
    "logit_bias": nullable(
        st.dictionaries(st.from_regex(r"[0-9]{1,6}", fullmatch=True), st.integers(-100, 100))
    ),
    "metadata": nullable(st.dictionaries(st.text(max_size=64), text, max_size=16)),
    "user": text,
    "store": nullable(st.booleans()),
    "parallel_tool_calls": st.booleans(),
    "response_format": st.one_of(
        st.just({"type": "text"}),
        st.just({"type": "json_object"}),
        st.fixed_dictionaries(
            {
                "type": st.just("json_schema"),
                "json_schema": st.fixed_dictionaries(
                    {"name": names}, optional={"schema": json_objects, "strict": st.booleans()}
                ),
            }
        ),
    ),
    **{key: nullable(st.sampled_from(values)) for key, values in ENUMS.items()},
    "x_vendor_field": json_values,
}


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body. Keys that others depend on come first (stream, logprobs, tools)."""
    body: dict[str, Any] = {
        "model": draw(st.text(min_size=1, max_size=20)),
        "messages": draw(messages),
    }
    for key, strategy in OPTIONAL_FIELDS.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if draw(st.booleans()):
        body["stream"] = True
        if draw(st.booleans()):
            body["stream_options"] = {"include_usage": draw(st.booleans())}
    if draw(st.booleans()):
        body["logprobs"] = True
        if draw(st.booleans()):
            body["top_logprobs"] = draw(st.integers(0, 20))
    if draw(st.booleans()):
        tool_names = draw(st.lists(names, min_size=1, max_size=3))
        body["tools"] = [
            {
                "type": "function",
                "function": draw(
                    st.fixed_dictionaries(
                        {"name": st.just(name)},
                        optional={"description": text, "parameters": json_objects},
                    )
                ),
            }
            for name in tool_names
        ]
        choice = draw(st.sampled_from(["none", "auto", "required", "named", None]))
        if choice == "named":
            picked = draw(st.sampled_from(tool_names))
            body["tool_choice"] = {"type": "function", "function": {"name": picked}}
        elif choice is not None:
            body["tool_choice"] = choice
    return body


@PROPS
@given(valid_requests())
def test_valid_requests_are_accepted_unchanged(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    assert validate_chat_request(body) is body
    assert body == before


# --------------------------------------------------------------------------- mutations

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


def outside_float(lo: float, hi: float) -> st.SearchStrategy[Any]:
    """Numbers out of [lo, hi], often within 1 of the boundary."""
    return st.one_of(
        st.floats(hi, hi + 1, exclude_min=True),
        st.floats(lo - 1, lo, exclude_max=True),
        st.floats(min_value=hi, exclude_min=True, allow_infinity=False),
        st.floats(max_value=lo, exclude_max=True, allow_infinity=False),
        st.sampled_from([lo - 1, hi + 1]),
    )


def not_one_of(values: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.text(max_size=8).filter(lambda s: s not in values)


RANGES: dict[str, st.SearchStrategy[Any]] = {
    "temperature": outside_float(0, 2),
    "top_p": outside_float(0, 1),
    "presence_penalty": outside_float(-2, 2),
    "frequency_penalty": outside_float(-2, 2),
    "n": outside(1, 128),
    "max_tokens": outside(1, 2**31 - 1),
    "max_completion_tokens": outside(1, 2**31 - 1),
    "seed": outside(-(2**63), 2**63 - 1),
    "top_logprobs": outside(0, 20),
}
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

# A site: (path, operation, argument). Operations: "delete" (argument None), "type"
# (the acceptable type tags), "value" (a strategy of bad values of the right type).
Site = tuple[JsonPath, str, Any]


def _part_sites(path: JsonPath, part: dict[str, Any]) -> list[Site]:
    kind = part["type"]
    sites: list[Site] = [
        (path, "type", OBJ),
        ((*path, "type"), "delete", None),
        ((*path, "type"), "value", not_one_of(PART_TYPES)),
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
        sites += [(fmt, "delete", None), (fmt, "value", not_one_of(("wav", "mp3")))]
    return sites


def _message_sites(i: int, msg: dict[str, Any]) -> list[Site]:
    path: JsonPath = ("messages", i)
    role = msg["role"]
    sites: list[Site] = [
        (path, "type", OBJ),
        ((*path, "role"), "delete", None),
        ((*path, "role"), "type", STR),
        ((*path, "role"), "value", not_one_of(ROLES)),
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
        sites.append(((*call, "type"), "value", not_one_of(("function", "custom"))))
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
            sites.append(((key,), "value", not_one_of(ENUMS[key])))
    sites.append((("model",), "value", st.just("")))
    for token in body.get("logit_bias") or ():
        sites.append((("logit_bias", token), "value", outside(-100, 100)))
    if isinstance(body.get("tool_choice"), str):
        sites.append((("tool_choice",), "value", not_one_of(("none", "auto", "required"))))
    for i, msg in enumerate(body["messages"]):
        sites += _message_sites(i, msg)
    for i, tool in enumerate(body.get("tools", ())):
        fn: JsonPath = ("tools", i, "function")
        sites += [
            (("tools", i), "type", OBJ),
            (("tools", i, "type"), "delete", None),
            (("tools", i, "type"), "value", not_one_of(("function", "custom"))),
            (fn, "delete", None),
            ((*fn, "name"), "delete", None),
            ((*fn, "name"), "value", st.sampled_from(["", "has space", "x" * 65, "dot.ted"])),
        ]
        if "parameters" in tool["function"]:
            sites.append(((*fn, "parameters"), "type", OBJ))
    fmt = body.get("response_format")
    if fmt is not None:
        sites += [(("response_format", "type"), "delete", None)]
        sites += [(("response_format", "type"), "value", not_one_of(RESPONSE_FORMATS))]
        if fmt["type"] == "json_schema":
            name: JsonPath = ("response_format", "json_schema", "name")
            sites += [(name, "delete", None), (name, "type", STR)]
    return sites


def apply(body: dict[str, Any], path: JsonPath, op: str, value: Any) -> None:
    node: Any = body
    for seg in path[:-1]:
        node = node[seg]
    if op == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value


@settings(PROPS, max_examples=100)
@given(st.data())
def test_mutations_are_rejected_at_their_path(data: st.DataObject) -> None:
    """Each site of a valid body in turn, mutated alone, is the error's param."""
    body = data.draw(valid_requests(), label="valid body")
    for path, op, arg in mutation_sites(body):
        where = format_path(path)
        if op == "delete":
            value = None
        elif op == "type":
            bad_tags = st.sampled_from(sorted(set(TAGS) - arg))
            value = data.draw(bad_tags.flatmap(TAGS.__getitem__), label=f"{where} (type)")
        else:
            value = data.draw(arg, label=f"{where} (value)")
        mutated = copy.deepcopy(body)  # drawn values may be shared (st.just): never edit them
        apply(mutated, path, op, value)
        error = check_rejection(mutated, f"{op} {where}: {value!r}")
        assert error.param == where, (op, value, error.message)


@PROPS
@given(st.sampled_from(sorted(RANGES)).flatmap(lambda key: st.tuples(st.just(key), RANGES[key])))
def test_out_of_range_numbers_are_rejected(case: tuple[str, Any]) -> None:
    key, value = case
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if key == "top_logprobs":
        body["logprobs"] = True
    body[key] = value
    error = check_rejection(body)
    assert error.param == key
    assert error.message.startswith(f"Invalid value for '{key}'")


# --------------------------------------------------------------------------- any JSON


@PROPS
@given(json_values)
def test_any_json_value_is_accepted_or_rejected_cleanly(value: Any) -> None:
    try:
        assert validate_chat_request(value) is value
    except InvalidRequest:
        check_rejection(value)


request_like = st.fixed_dictionaries(
    {
        "model": json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(ROLES) | json_scalars},
                optional={
                    "content": json_values | st.lists(json_objects, max_size=3),
                    "tool_calls": st.lists(json_objects, max_size=2),
                    "tool_call_id": json_values,
                    "name": json_values,
                },
            ),
            max_size=3,
        ),
    },
    optional={
        key: json_values
        for key in (*TOP_TYPES, "audio", "modalities", "prediction", "functions", "function_call")
        if key not in ("model", "messages")
    },
)


@PROPS
@given(request_like)
def test_request_shaped_json_is_accepted_or_rejected_cleanly(body: dict[str, Any]) -> None:
    try:
        assert validate_chat_request(body) is body
    except InvalidRequest:
        check_rejection(body)


@PROPS
@given(st.integers(1, 3 * MAX_DEPTH), st.sampled_from(["x_ext", "x.ext"]))
def test_nesting_limit_is_exact(depth: int, key: str) -> None:
    """An unknown field `depth` containers deep sits at levels 2..depth+1 of the body."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], key: value}
    if depth + 1 <= MAX_DEPTH:
        assert validate_chat_request(body) is body
    else:
        error = check_rejection(body)
        assert error.param == (key if key == "x_ext" else None)


# --------------------------------------------------------------------------- seed corpus


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


def test_corpus_has_both_outcomes() -> None:
    names = [path.name for path in corpus_files()]
    assert any(name.startswith("valid-") for name in names)
    assert any(name.startswith("invalid-") for name in names)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda path: path.name)
def test_corpus_outcome(path: Path) -> None:
    body = orjson.loads(path.read_bytes())
    if path.name.startswith("valid-"):
        assert validate_chat_request(body) is body
    else:
        assert path.name.startswith("invalid-"), "corpus files are valid-* or invalid-*"
        check_rejection(body)
