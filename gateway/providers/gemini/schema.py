"""JSON Schema cleaning for Gemini's `parametersJsonSchema` and `responseJsonSchema`.

The gateway sends client schemas to Gemini as real JSON Schema (the two `*JsonSchema`
fields), not as the OpenAPI-subset `parameters` / `responseSchema` protos: those reject
every keyword they do not know (`additionalProperties`, `$ref`, `const`, `uniqueItems`,
...) and a faithful conversion would mean inlining `$ref`s, which breaks recursive
schemas and Gemini's nesting limit (docs/wire-formats.md E5). The JSON Schema fields take
the schema as a free-form value, so only what Gemini documents as refused is changed:

- `$schema` is removed wherever it appears (reported refused; carries no constraint);
- a subschema holding `$ref` keeps only its `$`-keywords (`$ref`, `$defs`, `$id`,
  `$anchor`, ...): Gemini refuses `$ref` with sibling keywords, so siblings such as
  `description` are dropped there.

Only keywords whose values are schemas are walked, so a property that happens to be
named `$ref` or `$schema` (a key of `properties`) is kept as it is. Values of `enum`,
`const`, `default` and `examples` are data and are never touched. The input is never
mutated: changed subschemas are copied, unchanged ones are shared.

Pure module: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["clean_schema"]

# Keywords whose value is one subschema.
_ONE: Final = frozenset(
    (
        "additionalProperties",
        "additionalItems",
        "items",  # also the draft-4 list form, handled below
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "contentSchema",
    )
)
# Keywords whose value is a list of subschemas.
_MANY: Final = frozenset(("anyOf", "oneOf", "allOf", "prefixItems"))
# Keywords whose value maps names to subschemas.
_NAMED: Final = frozenset(
    ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
)


def clean_schema(schema: Any) -> Any:
    """`schema` with what Gemini refuses removed (see the module docstring).

    Returns `schema` itself when nothing needed changing.
    """
    if not isinstance(schema, dict):
        return schema  # boolean schemas pass through unchanged
    if "$ref" in schema:
        schema = {k: v for k, v in schema.items() if k.startswith("$") and k != "$schema"}
    elif "$schema" in schema:
        schema = {k: v for k, v in schema.items() if k != "$schema"}
    changed: dict[str, Any] = {}
    for key, value in schema.items():
        new = _clean_keyword(key, value)
        if new is not value:
            changed[key] = new
    return {**schema, **changed} if changed else schema


def _clean_keyword(key: str, value: Any) -> Any:
    """The cleaned value of one keyword; `value` itself when nothing changed."""
    if key in _ONE or key in _MANY:
        if isinstance(value, list):
            new = [clean_schema(v) for v in value]
            return new if any(a is not b for a, b in zip(new, value, strict=True)) else value
        return clean_schema(value) if key in _ONE else value
    if key in _NAMED and isinstance(value, dict):
        named = {name: clean_schema(v) for name, v in value.items()}
        return named if any(named[k] is not value[k] for k in value) else value
    return value
