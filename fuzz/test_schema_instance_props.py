"""Property: for generated satisfiable JSON Schemas, instance_for returns a valid value.

The strategy builds schemas over the supported keywords that are satisfiable by
construction (bounds in order, oneOf branches of disjoint types, allOf made by
splitting one schema's keywords), so every failure to produce a value is a bug.
Values are checked with the `jsonschema` package, formats asserted.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.providers.mock.schema_instance import instance_for

Schema = dict[str, Any]
# Pairwise disjoint types (integer and number overlap, so only one of them is here).
DISJOINT = ("null", "boolean", "string", "integer", "array", "object")
FORMATS = ("date-time", "date", "time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname")
PATTERNS = (
    r"^[a-z]+$",
    r"^\d{3}-\d{2}$",
    r"^(red|green|blue)$",
    r"^[A-Z][a-z]{2,5}( [A-Z][a-z]+)?$",
    r"ab+c",
    r"^[^\s]{4}$",
    r"^\w+@\w+\.com$",
)
NAMES = ("a", "b", "city", "x-y", "n_1", "Zed")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "golf", "kilo", "papa", "xray", "zulu")
# Keywords that only mean something together stay in the same allOf part.
GROUPS = (
    frozenset({"properties", "additionalProperties", "patternProperties", "required"}),
    frozenset({"prefixItems", "items", "contains", "minItems", "maxItems"}),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-50, 50),
    st.floats(-100, 100, allow_nan=False).map(lambda f: round(f, 2)),
    st.sampled_from(["x", "alpha", "", "Zed"]),
)


def _optional(draw: st.DrawFn, value: Any, schema: Schema, key: str) -> None:
    if draw(st.booleans()):
        schema[key] = value


@st.composite
def integer_schemas(draw: st.DrawFn) -> Schema:
    schema: Schema = {"type": "integer"}
    step = draw(st.sampled_from([None, 1, 2, 3, 5, 0.5]))
    low = draw(st.none() | st.integers(-1000, 1000))
    if step is not None:
        schema["multipleOf"] = step
    if low is not None:
        high = low + draw(st.integers(6 if step else 2, 60))  # room for a multiple
        low_key = draw(st.sampled_from(["minimum", "exclusiveMinimum"]))
        high_key = draw(st.sampled_from(["maximum", "exclusiveMaximum", None]))
        schema[low_key] = low
        if high_key:
            schema[high_key] = high
    return schema


@st.composite
def number_schemas(draw: st.DrawFn) -> Schema:
    schema: Schema = {"type": "number"}
    low = draw(st.floats(-1e6, 1e6, allow_nan=False))
    width = draw(st.floats(1e-3, 1e3))
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = low + width
    if width >= 2 and draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([0.5, 0.25, 1, 2]))
    return schema


@st.composite
def string_schemas(draw: st.DrawFn) -> Schema:
    schema: Schema = {"type": "string"}
    kind = draw(st.sampled_from(["lengths", "format", "pattern", "enum"]))
    if kind == "lengths":
        low = draw(st.integers(0, 30))
        _optional(draw, low, schema, "minLength")
        _optional(draw, low + draw(st.integers(0, 10)), schema, "maxLength")
    elif kind == "format":
        schema["format"] = draw(st.sampled_from(FORMATS))
    elif kind == "pattern":
        schema["pattern"] = draw(st.sampled_from(PATTERNS))
    else:
        schema["enum"] = draw(st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True))
    return schema


def typed(name: str, children: st.SearchStrategy[Any]) -> st.SearchStrategy[Schema]:
    """Schemas whose values all have JSON type `name`."""
    if name == "null":
        return st.just({"type": "null"})
    if name == "boolean":
        return st.sampled_from([{"type": "boolean"}, {"type": "boolean", "enum": [False]}])
    if name == "integer":
        return integer_schemas()
    if name == "number":
        return number_schemas()
    if name == "string":
        return string_schemas()
    if name == "array":
        return array_schemas(children)
    return object_schemas(children)


@st.composite
def array_schemas(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> Schema:
    schema: Schema = {"type": "array"}
    least = draw(st.integers(0, 3))
    if draw(st.booleans()):
        prefix = draw(st.lists(children, min_size=1, max_size=3))
        schema["prefixItems"] = prefix
        closed = draw(st.booleans())
        if closed:
            schema["items"] = False
            least = min(least, len(prefix))
        else:
            _optional(draw, draw(children), schema, "items")
    else:
        _optional(draw, draw(children), schema, "items")
        if "items" not in schema and draw(st.booleans()):
            schema["contains"] = draw(children)
            least = max(least, 1)
        elif least <= 1 and draw(st.booleans()):
            schema["uniqueItems"] = True
    _optional(draw, least, schema, "minItems")
    _optional(draw, max(least, 1) + draw(st.integers(0, 3)), schema, "maxItems")
    return schema


@st.composite
def object_schemas(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> Schema:
    schema: Schema = {"type": "object"}
    names = draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True))
    if names:
        schema["properties"] = {name: draw(children) for name in names}
        schema["required"] = draw(
            st.lists(st.sampled_from(names), max_size=len(names), unique=True)
        )
    closed = draw(st.booleans())
    if closed:
        schema["additionalProperties"] = False
    else:
        _optional(draw, draw(children), schema, "additionalProperties")
    required = len(schema.get("required", []))
    ceiling = len(names) if closed else len(names) + 2
    least = draw(st.integers(0, ceiling))
    _optional(draw, least, schema, "minProperties")
    _optional(draw, max(least, required) + draw(st.integers(0, 2)), schema, "maxProperties")
    return schema


@st.composite
def unique_arrays(draw: st.DrawFn) -> Schema:
    """uniqueItems with several items from a domain just large enough."""
    size = draw(st.integers(2, 5))
    items = draw(
        st.sampled_from(
            [
                {"type": "integer", "minimum": 0, "maximum": size - 1},
                {"enum": list(range(size))},
                {"type": "string", "maxLength": 1},
                {"type": ["boolean", "null"]},
                {"type": "array", "maxItems": 1, "items": {"type": "boolean"}},
            ]
        )
    )
    return {"type": "array", "items": items, "minItems": min(size, 3), "uniqueItems": True}


@st.composite
def exclusions(draw: st.DrawFn) -> Schema:
    """`not` or `enum` that rule out most of the values the generator likes best."""
    kind = draw(st.sampled_from(["strings", "integers", "enum filter", "overlap"]))
    if kind == "strings":
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, unique=True))
        return {"type": "string", "not": {"enum": words}}
    if kind == "integers":
        numbers = draw(st.lists(st.integers(0, 10), max_size=10, unique=True))
        return {"type": "integer", "minimum": 0, "maximum": 10, "not": {"enum": numbers}}
    if kind == "enum filter":
        wanted = draw(st.sampled_from(["string", "integer", "boolean", "null"]))
        fit = {"string": "ok", "integer": 7, "boolean": True, "null": None}[wanted]
        others = draw(st.lists(scalars, max_size=4))
        return {"type": wanted, "enum": [*others, fit]}
    # Overlapping oneOf branches: only a non-integer number is valid.
    number = draw(number_schemas())
    if float(number.get("multipleOf", 0.5)).is_integer():
        del number["multipleOf"]  # whole multiples would all be integers
    return {"oneOf": [number, draw(integer_schemas())]}


def combinators(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    type_pairs = st.lists(st.sampled_from(DISJOINT), min_size=2, max_size=3, unique=True)
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda subs: {"anyOf": subs}),
        type_pairs.flatmap(
            lambda names: st.tuples(*(typed(n, children) for n in names)).map(
                lambda subs: {"oneOf": list(subs)}
            )
        ),
        type_pairs.flatmap(
            lambda names: st.tuples(typed(names[0], children), typed(names[1], children)).map(
                lambda pair: {"if": {"type": names[0]}, "then": pair[0], "else": pair[1]}
            )
        ),
        type_pairs.flatmap(
            lambda names: typed(names[0], children).map(
                lambda sub: {**sub, "not": {"type": names[1]}}
            )
        ),
        st.tuples(children, st.randoms(use_true_random=False)).map(lambda t: split(*t)),
        scalars.map(lambda value: {"const": value}),
        unique_arrays(),
        exclusions(),
        st.lists(scalars, min_size=1, max_size=4).map(lambda values: {"enum": values}),
    )


def split(schema: Any, rng: Any) -> Any:
    """An allOf of two schemas that together say what `schema` says."""
    if not isinstance(schema, dict) or len(schema) < 2:
        return {"allOf": [schema]}
    units = [sorted(group & schema.keys()) for group in GROUPS if group & schema.keys()]
    units += [[key] for key in schema if not any(key in group for group in GROUPS)]
    parts: list[Schema] = [{}, {}]
    for unit in units:
        part = parts[rng.randrange(2)]
        part.update({key: schema[key] for key in unit})
    return {"allOf": parts}


def schemas() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.just({}),
        st.just(True),
        *(typed(name, st.just({})) for name in ("null", "boolean", "integer", "number", "string")),
    )

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(typed("array", children), typed("object", children), combinators(children))

    return st.recursive(leaves, extend, max_leaves=8)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A root schema, sometimes reaching its body through `$defs` and `$ref`."""
    body = draw(schemas())
    style = draw(st.sampled_from(["plain", "ref", "ref items", "ref property"]))
    if style == "plain":
        return body
    definitions = {"$defs": {"thing": body}}
    ref = {"$ref": "#/$defs/thing"}
    if style == "ref":
        return {**definitions, **ref}
    if style == "ref items":
        return {**definitions, "type": "array", "items": ref}
    return {**definitions, "type": "object", "properties": {"p": ref}, "required": ["p"]}


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(documents(), st.sampled_from(["", "1", "seed"]))
def test_instance_validates(schema: Any, seed: str) -> None:
    value = instance_for(schema, seed=seed)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [e.message for e in validator.iter_errors(value)]
    assert not errors, (value, errors)
    assert instance_for(schema, seed=seed) == value
