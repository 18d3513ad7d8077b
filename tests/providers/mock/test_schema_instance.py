"""instance_for: values checked by `jsonschema` over a table of schemas, plus failures."""

from __future__ import annotations

import datetime
import ipaddress
import re
import uuid
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from gateway.providers.mock.schema_instance import SchemaInstanceError, instance_for

DRAFT7 = "http://json-schema.org/draft-07/schema#"
DRAFT4 = "http://json-schema.org/draft-04/schema#"

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["value"],
        }
    },
    "$ref": "#/$defs/node",
}

VALID: dict[str, Any] = {
    "empty": {},
    "true": True,
    "null": {"type": "null"},
    "boolean": {"type": "boolean"},
    "type list prefers non-null": {"type": ["null", "string"]},
    "weather tool": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
        },
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict nullable": {
        "type": "object",
        "properties": {"note": {"type": ["string", "null"]}, "n": {"anyOf": [{"type": "null"}]}},
        "required": ["note", "n"],
        "additionalProperties": False,
    },
    "required without properties": {"type": "object", "required": ["a", "b"]},
    "min properties from additional": {
        "type": "object",
        "additionalProperties": {"type": "integer"},
        "minProperties": 3,
    },
    "max properties keeps required": {
        "type": "object",
        "properties": {"a": {}, "b": {}, "c": {}},
        "required": ["c"],
        "maxProperties": 2,
    },
    "pattern properties": {
        "type": "object",
        "properties": {"x_id": {"type": "string"}},
        "patternProperties": {"_id$": {"pattern": "^[0-9]+$"}},
    },
    "property names": {
        "type": "object",
        "propertyNames": {"maxLength": 3},
        "properties": {"abc": {"type": "integer"}},
    },
    "const": {"const": {"a": [1, 2]}},
    "enum of mixed": {"enum": [None, 3, "x", [1]]},
    "enum filtered by type": {"type": "integer", "enum": ["1", 1.5, 2]},
    "integer range": {"type": "integer", "minimum": -5, "maximum": -3},
    "integer exclusive": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 12},
    "integer multiple": {"type": "integer", "multipleOf": 7, "minimum": 100},
    "integer fractional multiple": {"type": "integer", "multipleOf": 0.75},
    "number narrow": {"type": "number", "exclusiveMinimum": 0.1, "exclusiveMaximum": 0.2},
    "number multiple": {"type": "number", "multipleOf": 0.1, "minimum": 0.25, "maximum": 0.5},
    "number point": {"type": "number", "minimum": 2.5, "maximum": 2.5},
    "huge minimum": {"type": "integer", "minimum": 1e20},
    "draft4 exclusive flag": {
        "$schema": DRAFT4,
        "type": "integer",
        "minimum": 3,
        "exclusiveMinimum": True,
        "maximum": 4,
    },
    "string lengths": {"type": "string", "minLength": 12, "maxLength": 13},
    "string empty": {"type": "string", "maxLength": 0},
    "date-time": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "time": {"type": "string", "format": "time"},
    "email": {"type": "string", "format": "email"},
    "short email": {"type": "string", "format": "email", "maxLength": 3},
    "uri": {"type": "string", "format": "uri"},
    "uuid": {"type": "string", "format": "uuid"},
    "ipv4": {"type": "string", "format": "ipv4"},
    "ipv6": {"type": "string", "format": "ipv6"},
    "hostname": {"type": "string", "format": "hostname"},
    "unknown format": {"type": "string", "format": "x-custom"},
    "array default": {"type": "array", "items": {"type": "string"}},
    "array unique ints": {
        "type": "array",
        "items": {"type": "integer", "minimum": 3, "maximum": 6},
        "minItems": 4,
        "uniqueItems": True,
    },
    "array unique enum": {
        "type": "array",
        "items": {"enum": ["a", "b", "c"]},
        "minItems": 3,
        "uniqueItems": True,
    },
    "array unique booleans": {
        "type": "array",
        "items": {"type": "boolean"},
        "minItems": 2,
        "uniqueItems": True,
    },
    "array bounds": {"type": "array", "minItems": 3, "maxItems": 3},
    "prefix items closed": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "boolean"}],
        "items": False,
    },
    "draft7 tuple items": {
        "$schema": DRAFT7,
        "type": "array",
        "items": [{"type": "integer"}, {"type": "null"}],
        "additionalItems": False,
        "minItems": 2,
    },
    "contains": {
        "type": "array",
        "items": {"type": ["string", "integer"]},
        "contains": {"type": "integer"},
    },
    "allOf merge": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"a": {"maxLength": 2}, "b": {"const": 3}}, "required": ["b"]},
        ]
    },
    "allOf numbers": {
        "allOf": [{"minimum": 5}, {"maximum": 9}, {"multipleOf": 4}, {"type": "integer"}]
    },
    "anyOf skips impossible": {
        "anyOf": [
            {"type": "object", "required": ["a"], "additionalProperties": False},
            {"type": "string", "minLength": 2},
        ]
    },
    "oneOf overlapping": {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    "oneOf objects": {
        "oneOf": [
            {"type": "object", "properties": {"kind": {"const": "a"}}, "required": ["kind"]},
            {"type": "object", "properties": {"kind": {"const": "b"}}, "required": ["kind"]},
        ]
    },
    "anyOf with sibling": {
        "type": "object",
        "properties": {"x": {"type": "integer"}},
        "anyOf": [{"required": ["y"]}, {"required": ["x"]}],
    },
    "not type": {"not": {"type": ["string", "integer"]}},
    "not const": {"type": "string", "not": {"enum": ["alpha", "bravo", "charlie"]}},
    "if then else": {
        "type": "object",
        "properties": {"kind": {"enum": ["a", "b"]}},
        "required": ["kind"],
        "if": {"properties": {"kind": {"const": "a"}}},
        "then": {"required": ["x"]},
        "else": {"required": ["y"]},
    },
    "ref definitions": {
        "definitions": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "type": "object",
        "properties": {
            "from": {"$ref": "#/definitions/code"},
            "to": {"$ref": "#/definitions/code"},
        },
    },
    "ref with siblings": {
        "$defs": {"n": {"type": "integer"}},
        "$ref": "#/$defs/n",
        "minimum": 50,
    },
    "ref escaped pointer": {
        "$defs": {"a/b": {"type": "boolean"}, "c~d": {"type": "null"}},
        "type": "array",
        "prefixItems": [{"$ref": "#/$defs/a~1b"}, {"$ref": "#/$defs/c~0d"}],
    },
    "recursive tree": TREE,
    "recursive through root": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
        },
        "required": ["name", "next"],
    },
    "openai structured output": {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                    "required": ["explanation", "output"],
                    "additionalProperties": False,
                },
            },
            "final_answer": {"type": "string"},
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": False,
    },
}

PATTERNS = [
    r"^[A-Z]{3}-\d{4}$",
    r"^\+?[0-9]{7,12}$",
    r"^(foo|bar)+\.txt$",
    r"^[^a-z]{2,}$",
    r"^[a-f0-9]{8}(-[a-f0-9]{4}){3}-[a-f0-9]{12}$",
    r"^(?:\w+\.)*\w+@example\.(com|org)$",
    r"^(?P<year>\d{4})-(?:\d\d)$",
    r"colou?r",
    r"^\s*\S+\s*$",
    r"^[\w.-]{3,5}$",
    r"^a.c$",
    r"^\x41\u0042[]a]$",
    r"^x*?y+?z{2,3}?$",
    r"^\bword\b$",
]

FORMAT_CHECKS: dict[str, Callable[[str], object]] = {
    "date-time": lambda v: datetime.datetime.fromisoformat(v),
    "date": lambda v: datetime.date.fromisoformat(v),
    "time": lambda v: datetime.time.fromisoformat(v),
    "uuid": lambda v: uuid.UUID(v),
    "ipv4": lambda v: ipaddress.IPv4Address(v),
    "ipv6": lambda v: ipaddress.IPv6Address(v),
}


def check(value: Any, schema: Any) -> None:
    """Validate with jsonschema (formats asserted) and, for formats, with the stdlib."""
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(value)
    if isinstance(schema, dict) and schema.get("format") in FORMAT_CHECKS:
        FORMAT_CHECKS[schema["format"]](value)


@pytest.mark.parametrize("schema", list(VALID.values()), ids=list(VALID))
@pytest.mark.parametrize("seed", ["", "7", "other seed"])
def test_instances_validate(schema: Any, seed: str) -> None:
    value = instance_for(schema, seed=seed)
    check(value, schema)
    assert instance_for(schema, seed=seed) == value


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("seed", ["", "1"])
def test_pattern_samples_match(pattern: str, seed: str) -> None:
    schema = {"type": "string", "pattern": pattern}
    value = instance_for(schema, seed=seed)
    assert re.search(pattern, value), value
    check(value, schema)


def test_pattern_with_lengths() -> None:
    schema = {"type": "string", "pattern": "^[a-z]+$", "minLength": 20, "maxLength": 22}
    value = instance_for(schema)
    assert 20 <= len(value) <= 22
    check(value, schema)


def test_plausible_values() -> None:
    value = instance_for(VALID["weather tool"], seed="s")
    assert set(value) == {"location", "unit", "days"}  # optional properties are filled
    assert isinstance(value["location"], str) and value["location"]


def test_seed_varies_the_value() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    values = {repr(instance_for(schema, seed=str(i))) for i in range(10)}
    assert len(values) > 5


def test_recursion_is_bounded() -> None:
    def depth(node: dict[str, Any]) -> int:
        return 1 + max((depth(c) for c in node.get("children", [])), default=0)

    value = instance_for(TREE)
    assert 2 <= depth(value) <= 6


UNSATISFIABLE = {
    "false": False,
    "empty type list": {"type": []},
    "min above max": {"type": "integer", "minimum": 5, "maximum": 4},
    "exclusive point": {"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1},
    "no integer in range": {"type": "integer", "minimum": 1.2, "maximum": 1.8},
    "no multiple in range": {"type": "integer", "multipleOf": 10, "minimum": 1, "maximum": 9},
    "lengths": {"type": "string", "minLength": 3, "maxLength": 2},
    "enum vs type": {"type": "string", "enum": [1, 2]},
    "const vs type": {"type": "string", "const": 1},
    "required vs closed": {"type": "object", "required": ["a"], "additionalProperties": False},
    "too many required": {"type": "object", "required": ["a", "b"], "maxProperties": 1},
    "unique booleans": {
        "type": "array",
        "items": {"type": "boolean"},
        "minItems": 3,
        "uniqueItems": True,
    },
    "item counts": {"type": "array", "minItems": 2, "maxItems": 1},
    "oneOf identical": {"oneOf": [{"type": "string"}, {"type": "string"}]},
    "not anything": {"not": {}},
    "allOf conflict": {"allOf": [{"type": "string"}, {"type": "integer"}]},
    "infinite nesting": {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
    "ref cycle": {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    },
    "dangling ref": {"$ref": "#/$defs/missing"},
    "remote ref": {"$ref": "https://example.com/schema.json"},
    "lookahead pattern": {"type": "string", "pattern": "^(?=a)a$"},
    "backreference pattern": {"type": "string", "pattern": r"^(a)\1$"},
    "bad pattern": {"type": "string", "pattern": "(["},
}


@pytest.mark.parametrize("schema", list(UNSATISFIABLE.values()), ids=list(UNSATISFIABLE))
def test_unsatisfiable_or_unsupported_raises(schema: Any) -> None:
    with pytest.raises(SchemaInstanceError):
        instance_for(schema)


def test_combinatorial_schema_is_cut_off() -> None:
    # Each level has 3 branches of which only the last is satisfiable deep down.
    schema: Any = {"type": "integer", "minimum": 1, "maximum": 0}
    for _ in range(12):
        schema = {"anyOf": [{"type": "array", "items": schema, "minItems": 1}] * 3}
    with pytest.raises(SchemaInstanceError):
        instance_for(schema)


def test_a_schema_demanding_a_huge_document_is_refused_quickly() -> None:
    """The mock runs in the event loop: one request must not stall the worker (without
    the output budget this builds a 10 GB document)."""
    schema = {
        "type": "array",
        "minItems": 100_000,
        "items": {"type": "string", "minLength": 100_000},
    }
    with pytest.raises(SchemaInstanceError):
        instance_for(schema)
