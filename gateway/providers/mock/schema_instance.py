"""A deterministic JSON value that satisfies a JSON Schema, for the mock provider.

`instance_for(schema, seed=...)` returns the same value for the same schema and seed,
and a different but equally valid one for another seed. Values look plausible rather
than minimal: every declared property is filled, arrays get one item unless told
otherwise, strings are words (or follow `format`/`pattern`), numbers are small.

How it works: `$ref` and `allOf` are merged into one flat schema; `anyOf`, `oneOf`
and `if`/`then`/`else` become alternatives tried in order; `not` and `uniqueItems`
are met by trying variants of a value. Every candidate is checked by a small
validator for the same keywords, so what comes out is valid or an error is raised.

Supported: boolean schemas, `type` (also lists), `enum`, `const`, `allOf`, `anyOf`,
`oneOf`, `not`, `if`/`then`/`else`, local `$ref` (`#`, `#/$defs/...`,
`#/definitions/...`, any JSON pointer into the document); objects: `properties`,
`required`, `additionalProperties`, `patternProperties`, `minProperties`,
`maxProperties`, `propertyNames` and `dependentRequired` (checked only); arrays:
`items` (also the draft-4 list form with `additionalItems`), `prefixItems`,
`minItems`, `maxItems`, `uniqueItems`, `contains` (met by the first item);
strings: `minLength`, `maxLength`, `pattern`, `format` (date-time, date, time,
email, uri/url/iri, uri-reference, uuid, hostname, ipv4, ipv6, duration; other
formats are ignored, and a format is dropped when the length limits exclude it);
numbers: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers, or
draft-4 booleans) and `multipleOf`.

`pattern` is sampled from a parse of the regular expression: literals, escapes
(``\\d \\w \\s``, their negations, ``\\n \\t \\xHH \\uHHHH``), classes with ranges
and negation, ``.``, groups (plain, ``(?:)``, named), alternation, the quantifiers
``? * + {m} {m,} {m,n}`` (lazy or not) and the anchors ``^ $ \\b \\B \\A \\Z``.
Unsupported, and reported as `SchemaInstanceError`: lookarounds, backreferences,
inline flags, ``\\p{...}`` classes. The sample is checked with `re.search`.

Not supported (ignored, so a value may violate them): `dependentSchemas`,
`unevaluatedProperties`, `unevaluatedItems`, `minContains`/`maxContains` beyond what
one matching item gives, `$dynamicRef`, remote or `$id`/anchor-based `$ref`.
Recursion through `$ref` is bounded: past a few levels only required properties and
`minItems` items are generated; a schema that requires infinite nesting fails.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from itertools import product
from typing import Any, Final
from urllib.parse import unquote

from gateway.providers.mock.schema_keywords import (
    MAX_BRANCHES,
    STRING_FORMATS,
    SchemaInstanceError,
    bounds,
    count_or_none,
    email,
    fit,
    is_multiple,
    is_number,
    is_type,
    item_schemas,
    json_equal,
    merge,
    number_or_none,
    pick,
    rotate,
    type_list,
)
from gateway.providers.mock.schema_pattern import pattern_sample

__all__ = ["SchemaInstanceError", "instance_for"]


_TYPES: Final = ("string", "integer", "number", "boolean", "object", "array", "null")
# Without `type`, a keyword hints at the kind of value a schema author meant.
_TYPE_HINTS: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    (
        "object",
        frozenset(
            {
                "properties",
                "required",
                "additionalProperties",
                "patternProperties",
                "minProperties",
                "maxProperties",
                "propertyNames",
                "dependentRequired",
            }
        ),
    ),
    (
        "array",
        frozenset({"items", "prefixItems", "additionalItems", "minItems", "maxItems", "contains"}),
    ),
    ("string", frozenset({"minLength", "maxLength", "pattern", "format"})),
    (
        "number",
        frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}),
    ),
)
_FALLBACK_ORDER: Final = ("string", "integer", "boolean", "object", "array", "null", "number")
_BRANCH_KEYS: Final = ("anyOf", "oneOf", "if", "then", "else")

_SOFT_REF_DEPTH: Final = 3  # past this many $ref hops, generate only what is required
_HARD_REF_DEPTH: Final = 32  # past this, the schema demands unbounded nesting
_MAX_HOPS: Final = 64  # $ref/allOf chains that never reach a value: a cycle
_MAX_OUTPUT: Final = 200_000  # characters + items in one generated document
_BUDGET: Final = 20_000  # generation steps per call, against combinatorial schemas
_VARIANT_TRIES: Final = 16  # values tried for `not` and `uniqueItems`
_INT64: Final = 2**63

_WORDS: Final = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
)


def instance_for(schema: Mapping[str, Any], *, seed: str = "") -> Any:
    """A JSON value valid against `schema`; the same for the same schema and seed.

    Raises `SchemaInstanceError` when no valid value can be produced.
    """
    generator = _Generator(schema, seed)
    try:
        value = generator.generate(schema, "", 0, 0)
        valid = generator.conforms(value, schema)
    except RecursionError:
        raise SchemaInstanceError("the schema nests too deeply") from None
    if not valid:
        raise SchemaInstanceError("no value satisfies every keyword of the schema")
    return value


class _Generator:
    """One `instance_for` call: the root document, the seed and a step budget."""

    def __init__(self, root: Any, seed: str) -> None:
        self.root = root
        self.seed = seed
        self.steps = 0
        self.size = 0  # characters and items generated so far

    def spend(self, amount: int, path: str) -> None:
        """Count output size; a schema demanding a huge document is refused up front
        (the mock runs in the event loop: one request must not stall the worker)."""
        self.size += amount
        if self.size > _MAX_OUTPUT:
            raise SchemaInstanceError(f"{path or '/'}: the schema demands too large a document")

    # -- shared ------------------------------------------------------------------

    def resolve(self, ref: str) -> Any:
        """The subschema a local `$ref` points to."""
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            raise SchemaInstanceError(f"unsupported $ref {ref!r}: only local JSON pointers")
        node = self.root
        for raw in ref[2:].split("/"):
            token = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SchemaInstanceError(f"$ref {ref!r} points nowhere")
        return node

    def hash(self, path: str, variant: int = 0) -> int:
        data = f"{self.seed}\x00{path}\x00{variant}".encode()
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")

    # -- validation ----------------------------------------------------------------

    def conforms(self, value: Any, schema: Any, hops: int = 0) -> bool:
        """Whether `value` satisfies `schema` for every keyword this module supports."""
        if schema is True:
            return True
        if schema is False:
            return False
        if not isinstance(schema, Mapping):
            return True
        if hops > _MAX_HOPS:
            raise SchemaInstanceError("the schema refers to itself without consuming a value")
        ref = schema.get("$ref")
        if isinstance(ref, str) and not self.conforms(value, self.resolve(ref), hops + 1):
            return False
        return self._local_ok(value, schema) and self._applicators_ok(value, schema, hops)

    def _local_ok(self, value: Any, schema: Mapping[str, Any]) -> bool:
        types = type_list(schema.get("type"))
        if types is not None and not any(is_type(value, t) for t in types):
            return False
        if "const" in schema and not json_equal(value, schema["const"]):
            return False
        enum = schema.get("enum")
        if isinstance(enum, list) and not any(json_equal(value, x) for x in enum):
            return False
        if is_number(value):
            return self._number_ok(value, schema)
        if isinstance(value, str):
            return self._string_ok(value, schema)
        if isinstance(value, list):
            return self._array_ok(value, schema)
        if isinstance(value, Mapping):
            return self._object_ok(value, schema)
        return True

    def _applicators_ok(self, value: Any, schema: Mapping[str, Any], hops: int) -> bool:
        subs = schema.get("allOf")
        if isinstance(subs, list) and not all(self.conforms(value, s, hops + 1) for s in subs):
            return False
        subs = schema.get("anyOf")
        if isinstance(subs, list) and not any(self.conforms(value, s, hops + 1) for s in subs):
            return False
        subs = schema.get("oneOf")
        if isinstance(subs, list) and sum(self.conforms(value, s, hops + 1) for s in subs) != 1:
            return False
        if "not" in schema and self.conforms(value, schema["not"], hops + 1):
            return False
        if "if" in schema:
            branch = "then" if self.conforms(value, schema["if"], hops + 1) else "else"
            if branch in schema and not self.conforms(value, schema[branch], hops + 1):
                return False
        return True

    def _number_ok(self, value: int | float, schema: Mapping[str, Any]) -> bool:
        low, low_exclusive = bounds(schema, "min")
        if low is not None and (value < low or (low_exclusive and value == low)):
            return False
        high, high_exclusive = bounds(schema, "max")
        if high is not None and (value > high or (high_exclusive and value == high)):
            return False
        divisor = number_or_none(schema.get("multipleOf"))
        return divisor is None or divisor <= 0 or is_multiple(value, divisor)

    def _string_ok(self, value: str, schema: Mapping[str, Any]) -> bool:
        low, high = count_or_none(schema.get("minLength")), count_or_none(schema.get("maxLength"))
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return False
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                return re.search(pattern, value) is not None
            except re.error:
                return False
        return True

    def _array_ok(self, value: list[Any], schema: Mapping[str, Any]) -> bool:
        low, high = count_or_none(schema.get("minItems")), count_or_none(schema.get("maxItems"))
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return False
        prefix, rest = item_schemas(schema)
        for index, item in enumerate(value):
            sub = prefix[index] if index < len(prefix) else rest
            if not self.conforms(item, sub):
                return False
        if schema.get("uniqueItems") is True and any(
            json_equal(value[i], value[j]) for i in range(len(value)) for j in range(i)
        ):
            return False
        if "contains" in schema:
            matches = sum(self.conforms(item, schema["contains"]) for item in value)
            least, most = (
                count_or_none(schema.get("minContains")),
                count_or_none(schema.get("maxContains")),
            )
            if matches < (1 if least is None else least) or (most is not None and matches > most):
                return False
        return True

    def _object_ok(self, value: Mapping[str, Any], schema: Mapping[str, Any]) -> bool:
        low, high = (
            count_or_none(schema.get("minProperties")),
            count_or_none(schema.get("maxProperties")),
        )
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return False
        required = schema.get("required")
        if isinstance(required, list) and any(name not in value for name in required):
            return False
        for name, item in value.items():
            if not self.conforms(item, self.property_schema(schema, name)):
                return False
            if "propertyNames" in schema and not self.conforms(name, schema["propertyNames"]):
                return False
        dependent = schema.get("dependentRequired")
        if isinstance(dependent, Mapping):
            for name, needs in dependent.items():
                if name in value and isinstance(needs, list) and any(n not in value for n in needs):
                    return False
        return True

    def property_schema(self, schema: Mapping[str, Any], name: str) -> Any:
        """What the value of property `name` must satisfy under an object schema."""
        subs: list[Any] = []
        properties = schema.get("properties")
        if isinstance(properties, Mapping) and name in properties:
            subs.append(properties[name])
        patterns = schema.get("patternProperties")
        if isinstance(patterns, Mapping):
            for pattern, sub in patterns.items():
                try:
                    if re.search(pattern, name):
                        subs.append(sub)
                except re.error as exc:
                    raise SchemaInstanceError(f"bad patternProperties {pattern!r}") from exc
        if not subs:
            return schema.get("additionalProperties", True)
        return subs[0] if len(subs) == 1 else {"allOf": subs}

    # -- generation ----------------------------------------------------------------

    def generate(self, schema: Any, path: str, refs: int, variant: int) -> Any:
        """A value for `schema` at `path`; `refs` counts the $ref hops above it."""
        self.steps += 1
        if self.steps > _BUDGET:
            raise SchemaInstanceError("the schema has too many combinations to explore")
        flat, refs = self._flatten(schema, refs, 0)
        if refs > _HARD_REF_DEPTH:
            raise SchemaInstanceError(f"{path or '/'}: the schema requires unbounded nesting")
        branches = self._branches(flat)
        if branches:
            base = {k: v for k, v in flat.items() if k not in _BRANCH_KEYS}
            # A oneOf value may match several branches: try a few variants of each.
            tries = _VARIANT_TRIES // 4 if "oneOf" in flat else 1
            for branch, attempt in product(branches, range(tries)):
                try:
                    value = self.generate({"allOf": [base, branch]}, path, refs, variant + attempt)
                except SchemaInstanceError:
                    continue
                if self.conforms(value, flat):
                    return value
            raise SchemaInstanceError(f"{path or '/'}: no alternative can be satisfied")
        if "not" in flat:
            base = {k: v for k, v in flat.items() if k != "not"}
            for attempt in range(_VARIANT_TRIES):
                try:
                    value = self.generate(base, path, refs, variant + attempt)
                except SchemaInstanceError:
                    continue
                if self.conforms(value, flat):
                    return value
            raise SchemaInstanceError(f"{path or '/'}: every value tried is excluded by 'not'")
        return self._typed(flat, path, refs, variant)

    def _flatten(self, schema: Any, refs: int, hops: int) -> tuple[dict[str, Any], int]:
        """`schema` with its `$ref` and `allOf` merged in, and the $ref hops taken."""
        if hops > _MAX_HOPS:
            raise SchemaInstanceError("the schema refers to itself without consuming a value")
        if schema is True:
            return {}, refs
        if schema is False or not isinstance(schema, Mapping):
            raise SchemaInstanceError("a subschema is false or not a schema")
        flat = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target, refs = self._flatten(self.resolve(ref), refs + 1, hops + 1)
            flat = merge(flat, target)
        subs = schema.get("allOf")
        if isinstance(subs, list):
            for sub in subs:
                part, refs = self._flatten(sub, refs, hops + 1)
                flat = merge(flat, part)
        return flat, refs

    def _branches(self, flat: Mapping[str, Any]) -> list[Any]:
        groups: list[list[Any]] = []
        for key in ("anyOf", "oneOf"):
            subs = flat.get(key)
            if isinstance(subs, list):
                groups.append(subs)
        if "if" in flat and ("then" in flat or "else" in flat):
            condition = flat["if"]
            groups.append(
                [
                    {"allOf": [condition, flat.get("then", True)]},
                    {"allOf": [{"not": condition}, flat.get("else", True)]},
                ]
            )
        if not groups:
            return []
        if len(groups) == 1:
            return groups[0]
        combos = [{"allOf": list(combo)} for combo in product(*groups)]
        return combos[:MAX_BRANCHES]

    def _typed(self, flat: dict[str, Any], path: str, refs: int, variant: int) -> Any:
        if "const" in flat:
            if self.conforms(flat["const"], flat):
                return copy.deepcopy(flat["const"])
            raise SchemaInstanceError(f"{path or '/'}: 'const' contradicts other keywords")
        enum = flat.get("enum")
        if isinstance(enum, list):
            start = self.hash(path) + variant
            for offset in range(len(enum)):
                candidate = enum[(start + offset) % len(enum)]
                if self.conforms(candidate, flat):
                    return copy.deepcopy(candidate)
            raise SchemaInstanceError(f"{path or '/'}: no 'enum' value satisfies the schema")
        makers: dict[str, Callable[[int], Any]] = {
            "null": lambda v: None,
            "boolean": lambda v: (self.hash(path) + v) % 2 == 0,
            "integer": lambda v: self._number(flat, path, v, integer=True),
            "number": lambda v: self._number(flat, path, v, integer=False),
            "string": lambda v: self._string(flat, path, v),
            "array": lambda v: self._array(flat, path, refs, v),
            "object": lambda v: self._object(flat, path, refs, v),
        }
        types = self._candidate_types(flat)
        # Variants walk every (type, value variant) pair: the type first, then the value.
        for name in rotate(types, variant):
            try:
                value = makers[name](variant // max(1, len(types)))
            except SchemaInstanceError:
                continue
            if self.conforms(value, flat):
                return value
        raise SchemaInstanceError(f"{path or '/'}: no value of an allowed type fits")

    @staticmethod
    def _candidate_types(flat: Mapping[str, Any]) -> list[str]:
        declared = type_list(flat.get("type"))
        if declared is not None:
            known = [t for t in dict.fromkeys(declared) if t in _TYPES]
            return [t for t in known if t != "null"] + [t for t in known if t == "null"]
        hinted = [name for name, keys in _TYPE_HINTS if not keys.isdisjoint(flat)]
        return hinted + [t for t in _FALLBACK_ORDER if t not in hinted]

    def _number(self, flat: Mapping[str, Any], path: str, variant: int, *, integer: bool) -> Any:
        low, low_exclusive = bounds(flat, "min")
        high, high_exclusive = bounds(flat, "max")
        divisor = number_or_none(flat.get("multipleOf"))
        if divisor is not None and divisor <= 0:
            divisor = None
        target = 1 + self.hash(path) % 100 + variant
        if divisor is not None and not float(divisor).is_integer():
            return self._fractional_multiple(flat, divisor, target, variant, integer=integer)
        step = 1 if divisor is None else int(divisor)
        # Integers are k * step with k in [k_low, k_high].
        int_low = (
            None if low is None else (math.floor(low) + 1 if low_exclusive else math.ceil(low))
        )
        int_high = (
            None if high is None else (math.ceil(high) - 1 if high_exclusive else math.floor(high))
        )
        k_low = None if int_low is None else -(-int_low // step)
        k_high = None if int_high is None else int_high // step
        if k_low is None or k_high is None or k_low <= k_high:
            k = pick(max(1, target // step), k_low, k_high)
            value = k * step
            if not integer and divisor is None and variant % 2:  # odd variants: a fraction
                fraction = value + 0.5
                if self._number_ok(fraction, flat):
                    return fraction
            return value if abs(value) < _INT64 else float(value)
        if integer or divisor is not None or low is None or high is None:
            raise SchemaInstanceError(f"{path or '/'}: no integer in the allowed range")
        middle = low + (high - low) / 2
        if low < middle < high or (middle == low == high and not (low_exclusive or high_exclusive)):
            return middle
        raise SchemaInstanceError(f"{path or '/'}: the allowed range is empty")

    def _fractional_multiple(
        self, flat: Mapping[str, Any], divisor: int | float, target: int, variant: int, *,
        integer: bool,
    ) -> Any:  # fmt: skip
        """A multiple of a fractional `multipleOf` near `target`; odd variants of a
        "number" prefer one that is not a whole number."""
        low, _ = bounds(flat, "min")
        high, _ = bounds(flat, "max")
        if low is not None:
            start = math.ceil(low / divisor)
        elif high is not None and high < target:
            start = math.floor(high / divisor) - 200
        else:
            start = round(target / divisor)
        want_fraction = not integer and variant % 2 == 1
        for k in range(start, start + 400):
            value = k * divisor
            whole = float(value).is_integer()
            if (integer and not whole) or (want_fraction and whole):
                continue
            candidate = int(value) if integer and abs(value) < _INT64 else value
            if self._number_ok(candidate, flat):
                return candidate
        if want_fraction:
            return self._fractional_multiple(flat, divisor, target, 0, integer=False)
        raise SchemaInstanceError("no multiple of 'multipleOf' found in the allowed range")

    def _string(self, flat: Mapping[str, Any], path: str, variant: int) -> str:
        low = count_or_none(flat.get("minLength")) or 0
        high = count_or_none(flat.get("maxLength"))
        self.spend(low, path)
        if high is not None and high < low:
            raise SchemaInstanceError(f"{path or '/'}: maxLength is below minLength")
        h = self.hash(path, variant)
        pattern = flat.get("pattern")
        if isinstance(pattern, str):
            return pattern_sample(pattern, low, high, h)
        word = _WORDS[(self.hash(path) + variant) % len(_WORDS)]
        if variant >= len(_WORDS):
            word += str(variant // len(_WORDS))
        fmt = flat.get("format")
        if fmt in ("email", "idn-email"):
            return email(word, low, high)
        formatter = STRING_FORMATS.get(fmt) if isinstance(fmt, str) else None
        if formatter is not None:
            formatted = formatter(h, word)
            if low <= len(formatted) and (high is None or len(formatted) <= high):
                return formatted
        return fit(word, low, high)

    def _array(self, flat: Mapping[str, Any], path: str, refs: int, variant: int) -> list[Any]:
        prefix, rest = item_schemas(flat)
        least = count_or_none(flat.get("minItems")) or 0
        most = count_or_none(flat.get("maxItems"))
        if rest is False:
            most = len(prefix) if most is None else min(most, len(prefix))
        contains = flat.get("contains")
        # Odd variants (and deep recursion) take the fewest items allowed.
        minimal = refs > _SOFT_REF_DEPTH or variant % 2 == 1
        variant //= 2
        wanted = least if minimal else max(least, len(prefix) or 1)
        if contains is not None:
            wanted = max(wanted, 1)
        size = wanted if most is None else min(wanted, most)
        if size < least or (contains is not None and size < 1):
            raise SchemaInstanceError(f"{path or '/'}: the item count limits exclude each other")
        self.spend(size, path)
        unique = flat.get("uniqueItems") is True
        items: list[Any] = []
        for index in range(size):
            sub = prefix[index] if index < len(prefix) else rest
            if contains is not None and index == 0:
                sub = {"allOf": [sub, contains]}
            items.append(self._item(sub, f"{path}/{index}", refs, variant, items if unique else []))
        return items

    def _item(self, sub: Any, path: str, refs: int, variant: int, taken: list[Any]) -> Any:
        for attempt in range(_VARIANT_TRIES if taken else 1):
            value = self.generate(sub, path, refs, variant + attempt)
            if not any(json_equal(value, other) for other in taken):
                return value
        raise SchemaInstanceError(f"{path}: cannot find distinct items for 'uniqueItems'")

    def _object(
        self, flat: Mapping[str, Any], path: str, refs: int, variant: int
    ) -> dict[str, Any]:
        properties = flat.get("properties")
        declared = list(properties) if isinstance(properties, Mapping) else []
        required_raw = flat.get("required")
        required = (
            [n for n in required_raw if isinstance(n, str)]
            if isinstance(required_raw, list)
            else []
        )
        # Odd variants (and deep recursion) leave out the optional properties.
        minimal = refs > _SOFT_REF_DEPTH or variant % 2 == 1
        variant //= 2
        optional = [] if minimal else [n for n in declared if n not in required]
        most = count_or_none(flat.get("maxProperties"))
        if most is not None:
            if len(required) > most:
                raise SchemaInstanceError(f"{path or '/'}: more required properties than allowed")
            optional = optional[: most - len(required)]
        chosen = set(required) | set(optional)
        names = [n for n in declared if n in chosen] + [n for n in required if n not in declared]
        least = count_or_none(flat.get("minProperties")) or 0
        spare = [n for n in declared if n not in chosen]
        extra = 0
        while len(names) < least:
            if spare:
                names.append(spare.pop(0))
            else:
                extra += 1
                names.append(f"extra_{extra}")
        out: dict[str, Any] = {}
        for name in names:
            sub = self.property_schema(flat, name)
            out[name] = self.generate(sub, f"{path}/{name}", refs, variant)
        return out
