"""Property tests of gateway.openai.validate.

The requests and their mutations are the contract's (bench/contract/), the same the
conformance tool sends to any endpoint.

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
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.contract.mutations import (
    RANGES,
    ROLES,
    TOP_TYPES,
    apply,
    bad_value,
    mutation_sites,
    unshared,
)
from bench.contract.paths import MISSING, format_path, parse_param, resolve
from bench.contract.strategies import chat_requests
from gateway.errors import InvalidRequest
from gateway.openai.validate import MAX_DEPTH, validate_chat_request

CORPUS = Path(__file__).parent / "corpus" / "validate"
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- paths


def resolve_param(body: Any, param: str, *, missing: bool) -> None:
    """Assert `param` is a real path into `body`; a missing key's parent must be real."""
    path = parse_param(param)
    assert path is not None, f"malformed param {param!r}"
    if missing:  # named as missing: its parent is real, and it is absent (or null)
        parent = resolve(body, path[:-1])
        assert isinstance(parent, dict | list), (param, parent)
        assert resolve(body, path) in (MISSING, None), (param, body)
    else:
        assert resolve(body, path) is not MISSING, f"{param!r} does not resolve"


def check_rejection(body: Any, context: str = "") -> InvalidRequest:
    """Validate `body` expecting a 400; check its param resolves; return the error."""
    try:
        validate_chat_request(body)
    except InvalidRequest as error:
        if error.param is not None:
            resolve_param(body, error.param, missing=error.message.startswith("Missing required"))
            assert f"'{error.param}'" in error.message
        return error
    pytest.fail(f"accepted an invalid body {context}")


# --------------------------------------------------------------------------- valid requests

# The contract's valid requests (bench/contract/strategies.py), with any model name and
# the vendor extension keys a validator must let through.
valid_requests = partial(chat_requests, st.text(min_size=1, max_size=20), extensions=True)

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


@PROPS
@given(valid_requests())
def test_valid_requests_are_accepted_unchanged(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    assert validate_chat_request(body) is body
    assert body == before


# --------------------------------------------------------------------------- mutations


def test_a_mutation_changes_one_place_even_where_the_body_shares_an_object() -> None:
    """Found by a CI-length run: one content part object at messages[0] and [2]."""
    part = {"type": "text", "text": "hi"}
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [part]},
            {"role": "assistant", "content": "0"},
            {"role": "user", "content": [part]},
        ],
    }
    changed = unshared(body)
    path = parse_param("messages[2].content[0].type")
    assert path is not None
    apply(changed, path, "delete", None)
    error = check_rejection(changed, "delete messages[2].content[0].type")
    assert error.param == "messages[2].content[0].type"


@settings(PROPS, max_examples=100)
@given(st.data())
def test_mutations_are_rejected_at_their_path(data: st.DataObject) -> None:
    """Each site of a valid body in turn (bench/contract/mutations.py), mutated alone, is
    the error's param."""
    body = data.draw(valid_requests(), label="valid body")
    for site in mutation_sites(body):
        path, op, _ = site
        where = format_path(path)
        value = data.draw(bad_value(site), label=f"{where} ({op})")
        mutated = unshared(body)  # never edit drawn values, and change one place only
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
