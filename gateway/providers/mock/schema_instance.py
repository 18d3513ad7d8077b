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
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import product
from typing import Any, Final
from urllib.parse import unquote

__all__ = ["SchemaInstanceError", "instance_for"]


class SchemaInstanceError(ValueError):
    """No instance could be produced: the schema is unsatisfiable or unsupported."""


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
_MIN_KEYS: Final = frozenset({"minimum", "minLength", "minItems", "minProperties", "minContains"})
_MAX_KEYS: Final = frozenset({"maximum", "maxLength", "maxItems", "maxProperties", "maxContains"})
_CONJOINED_KEYS: Final = frozenset(
    {"additionalProperties", "additionalItems", "contains", "propertyNames"}
)
_BRANCH_KEYS: Final = ("anyOf", "oneOf", "if", "then", "else")

_SOFT_REF_DEPTH: Final = 3  # past this many $ref hops, generate only what is required
_HARD_REF_DEPTH: Final = 32  # past this, the schema demands unbounded nesting
_MAX_HOPS: Final = 64  # $ref/allOf chains that never reach a value: a cycle
_MAX_OUTPUT: Final = 200_000  # characters + items in one generated document
_BUDGET: Final = 20_000  # generation steps per call, against combinatorial schemas
_MAX_BRANCHES: Final = 256
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


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema defines it: booleans are not numbers, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, str) or a is None:
        return bool(a == b)
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(_json_equal(a[k], b[k]) for k in a)
        )
    return bool(a == b)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return _is_number(value) and (isinstance(value, int) or float(value).is_integer())
    if name == "number":
        return _is_number(value)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, list)
    if name == "null":
        return value is None
    return False


def _is_multiple(value: int | float, divisor: int | float) -> bool:
    """`multipleOf` as Python validators compute it (float quotient must be integral)."""
    if isinstance(divisor, float):
        quotient = value / divisor
        try:
            return int(quotient) == quotient
        except OverflowError:
            return False
    return not value % divisor


def _number(value: Any) -> int | float | None:
    return value if _is_number(value) else None


def _count(value: Any) -> int | None:
    """A non-negative count keyword (minItems...), or None when absent or malformed."""
    if _is_number(value) and value >= 0 and float(value).is_integer():
        return int(value)
    return None


def _type_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for t in value if isinstance(t, str)]
    return None


def _bounds(schema: Mapping[str, Any], side: str) -> tuple[int | float | None, bool]:
    """(bound, exclusive): the tighter of minimum/exclusiveMinimum, or of the maxima."""
    plain = _number(schema.get("minimum" if side == "min" else "maximum"))
    exclusive = schema.get("exclusiveMinimum" if side == "min" else "exclusiveMaximum")
    if isinstance(exclusive, bool):  # draft 4: a flag on minimum/maximum
        return plain, exclusive and plain is not None
    strict = _number(exclusive)
    if strict is None:
        return plain, False
    if plain is None:
        return strict, True
    tighter = strict >= plain if side == "min" else strict <= plain
    return (strict, True) if tighter else (plain, False)


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """One schema requiring what both require, as far as keywords combine; the
    validator still checks the originals, so a keyword that cannot be combined
    keeps `a`'s value."""
    out = dict(a)
    for key, vb in b.items():
        if key not in out:
            out[key] = vb
        elif not _json_equal(out[key], vb):
            out[key] = _merge_keyword(key, out[key], vb)
    return out


def _merge_keyword(key: str, va: Any, vb: Any) -> Any:
    if key == "type":
        ta, tb = _type_list(va) or [], _type_list(vb) or []
        both = [t for t in ta if t in tb or (t == "integer" and "number" in tb)]
        return both + ["integer" for t in ta if t == "number" and "integer" in tb]
    if key in ("properties", "patternProperties") and isinstance(va, Mapping):
        if not isinstance(vb, Mapping):
            return va
        merged = dict(va)
        for name, sub in vb.items():
            merged[name] = {"allOf": [merged[name], sub]} if name in merged else sub
        return merged
    if key == "required" and isinstance(va, list) and isinstance(vb, list):
        return va + [name for name in vb if name not in va]
    if key == "enum" and isinstance(va, list) and isinstance(vb, list):
        return [x for x in va if any(_json_equal(x, y) for y in vb)]
    if _is_number(va) and _is_number(vb):
        if key in _MIN_KEYS or key == "exclusiveMinimum":
            return max(va, vb)
        if key in _MAX_KEYS or key == "exclusiveMaximum":
            return min(va, vb)
        if key == "multipleOf":
            if float(va).is_integer() and float(vb).is_integer():
                return math.lcm(int(va), int(vb))
            big, small = max(va, vb), min(va, vb)
            return big if _is_multiple(big, small) else va
    if key in ("exclusiveMinimum", "exclusiveMaximum", "uniqueItems") and isinstance(va, bool):
        return va or vb if isinstance(vb, bool) else va
    if key in _CONJOINED_KEYS or (key == "items" and not isinstance(va, list)):
        return {"allOf": [va, vb]}
    if key == "not":
        return {"anyOf": [va, vb]}
    if key == "prefixItems" and isinstance(va, list) and isinstance(vb, list):
        short, long_ = (va, vb) if len(va) <= len(vb) else (vb, va)
        return [{"allOf": [x, y]} for x, y in zip(short, long_, strict=False)] + long_[len(short) :]
    # anyOf(A) and anyOf(B) == anyOf(Ai and Bj); the same holds for oneOf.
    if (
        key in ("anyOf", "oneOf")
        and isinstance(va, list)
        and isinstance(vb, list)
        and len(va) * len(vb) <= _MAX_BRANCHES
    ):
        return [{"allOf": [x, y]} for x, y in product(va, vb)]
    return va


def _rotate(items: Sequence[str], start: int) -> list[str]:
    if not items:
        return []
    start %= len(items)
    return [*items[start:], *items[:start]]


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
        types = _type_list(schema.get("type"))
        if types is not None and not any(_is_type(value, t) for t in types):
            return False
        if "const" in schema and not _json_equal(value, schema["const"]):
            return False
        enum = schema.get("enum")
        if isinstance(enum, list) and not any(_json_equal(value, x) for x in enum):
            return False
        if _is_number(value):
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
        low, low_exclusive = _bounds(schema, "min")
        if low is not None and (value < low or (low_exclusive and value == low)):
            return False
        high, high_exclusive = _bounds(schema, "max")
        if high is not None and (value > high or (high_exclusive and value == high)):
            return False
        divisor = _number(schema.get("multipleOf"))
        return divisor is None or divisor <= 0 or _is_multiple(value, divisor)

    def _string_ok(self, value: str, schema: Mapping[str, Any]) -> bool:
        low, high = _count(schema.get("minLength")), _count(schema.get("maxLength"))
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
        low, high = _count(schema.get("minItems")), _count(schema.get("maxItems"))
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return False
        prefix, rest = _item_schemas(schema)
        for index, item in enumerate(value):
            sub = prefix[index] if index < len(prefix) else rest
            if not self.conforms(item, sub):
                return False
        if schema.get("uniqueItems") is True and any(
            _json_equal(value[i], value[j]) for i in range(len(value)) for j in range(i)
        ):
            return False
        if "contains" in schema:
            matches = sum(self.conforms(item, schema["contains"]) for item in value)
            least, most = _count(schema.get("minContains")), _count(schema.get("maxContains"))
            if matches < (1 if least is None else least) or (most is not None and matches > most):
                return False
        return True

    def _object_ok(self, value: Mapping[str, Any], schema: Mapping[str, Any]) -> bool:
        low, high = _count(schema.get("minProperties")), _count(schema.get("maxProperties"))
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
            flat = _merge(flat, target)
        subs = schema.get("allOf")
        if isinstance(subs, list):
            for sub in subs:
                part, refs = self._flatten(sub, refs, hops + 1)
                flat = _merge(flat, part)
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
        return combos[:_MAX_BRANCHES]

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
        for name in _rotate(types, variant):
            try:
                value = makers[name](variant // max(1, len(types)))
            except SchemaInstanceError:
                continue
            if self.conforms(value, flat):
                return value
        raise SchemaInstanceError(f"{path or '/'}: no value of an allowed type fits")

    @staticmethod
    def _candidate_types(flat: Mapping[str, Any]) -> list[str]:
        declared = _type_list(flat.get("type"))
        if declared is not None:
            known = [t for t in dict.fromkeys(declared) if t in _TYPES]
            return [t for t in known if t != "null"] + [t for t in known if t == "null"]
        hinted = [name for name, keys in _TYPE_HINTS if not keys.isdisjoint(flat)]
        return hinted + [t for t in _FALLBACK_ORDER if t not in hinted]

    def _number(self, flat: Mapping[str, Any], path: str, variant: int, *, integer: bool) -> Any:
        low, low_exclusive = _bounds(flat, "min")
        high, high_exclusive = _bounds(flat, "max")
        divisor = _number(flat.get("multipleOf"))
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
            k = _pick(max(1, target // step), k_low, k_high)
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
        low, _ = _bounds(flat, "min")
        high, _ = _bounds(flat, "max")
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
        low = _count(flat.get("minLength")) or 0
        high = _count(flat.get("maxLength"))
        self.spend(low, path)
        if high is not None and high < low:
            raise SchemaInstanceError(f"{path or '/'}: maxLength is below minLength")
        h = self.hash(path, variant)
        pattern = flat.get("pattern")
        if isinstance(pattern, str):
            return _pattern_sample(pattern, low, high, h)
        word = _WORDS[(self.hash(path) + variant) % len(_WORDS)]
        if variant >= len(_WORDS):
            word += str(variant // len(_WORDS))
        fmt = flat.get("format")
        if fmt in ("email", "idn-email"):
            return _email(word, low, high)
        formatter = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if formatter is not None:
            formatted = formatter(h, word)
            if low <= len(formatted) and (high is None or len(formatted) <= high):
                return formatted
        return _fit(word, low, high)

    def _array(self, flat: Mapping[str, Any], path: str, refs: int, variant: int) -> list[Any]:
        prefix, rest = _item_schemas(flat)
        least = _count(flat.get("minItems")) or 0
        most = _count(flat.get("maxItems"))
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
            if not any(_json_equal(value, other) for other in taken):
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
        most = _count(flat.get("maxProperties"))
        if most is not None:
            if len(required) > most:
                raise SchemaInstanceError(f"{path or '/'}: more required properties than allowed")
            optional = optional[: most - len(required)]
        chosen = set(required) | set(optional)
        names = [n for n in declared if n in chosen] + [n for n in required if n not in declared]
        least = _count(flat.get("minProperties")) or 0
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


def _pick(target: int, low: int | None, high: int | None) -> int:
    """`target` if allowed, else a value near the violated end of [low, high]."""
    if low is not None and high is not None:
        return low + (target - low) % (high - low + 1)
    if low is not None and target < low:
        return low + (target - 1) % 100
    if high is not None and target > high:
        return high - (target - 1) % 100
    return target


def _item_schemas(schema: Mapping[str, Any]) -> tuple[list[Any], Any]:
    """(per-position schemas, schema for the rest) for an array schema of any draft."""
    items = schema.get("items", True)
    if isinstance(items, list):  # draft 4-2019: tuple form
        return items, schema.get("additionalItems", True)
    prefix = schema.get("prefixItems")
    return (prefix if isinstance(prefix, list) else []), items


def _fit(word: str, low: int, high: int | None) -> str:
    """`word` repeated or cut to a length in [low, high]."""
    if len(word) < low:
        word = "-".join([word] * (low // len(word) + 1))[:low]
    return word if high is None else word[:high]


def _email(word: str, low: int, high: int | None) -> str:
    """An address with a length in [low, high], shortening the domain when needed."""
    for domain in ("example.com", "ex.co", "e"):
        fixed = len(domain) + 1
        if high is None or high - fixed >= max(1, low - fixed):
            local_high = None if high is None else high - fixed
            return f"{_fit(word, max(1, low - fixed), local_high)}@{domain}"
    return _fit(word, low, high)  # too short for any address: the format is dropped


def _format_date(h: int, _: str) -> str:
    return f"2024-{1 + h % 12:02d}-{1 + (h >> 8) % 28:02d}"


def _format_time(h: int, _: str) -> str:
    return f"{(h >> 16) % 24:02d}:{(h >> 24) % 60:02d}:00Z"


_FORMATS: Final[dict[str, Callable[[int, str], str]]] = {
    "date": _format_date,
    "time": _format_time,
    "date-time": lambda h, w: f"{_format_date(h, w)}T{_format_time(h, w)}",
    "duration": lambda h, _: f"PT{1 + h % 59}M",
    "hostname": lambda _, w: f"{w}.example.com",
    "idn-hostname": lambda _, w: f"{w}.example.com",
    "ipv4": lambda h, _: f"192.0.2.{1 + h % 254}",
    "ipv6": lambda h, _: f"2001:db8::{1 + h % 0xFFFE:x}",
    "uri": lambda _, w: f"https://example.com/{w}",
    "url": lambda _, w: f"https://example.com/{w}",
    "iri": lambda _, w: f"https://example.com/{w}",
    "uri-reference": lambda _, w: f"/{w}",
    "iri-reference": lambda _, w: f"/{w}",
    "uuid": lambda h, _: str(uuid.UUID(int=h << 64 | h, version=4)),
}


# -- pattern sampling ----------------------------------------------------------------

_PRINTABLE: Final = [chr(c) for c in range(0x20, 0x7F)]
_DIGITS: Final = ((ord("0"), ord("9")),)
_WORD: Final = (
    (ord("0"), ord("9")),
    (ord("A"), ord("Z")),
    (ord("_"), ord("_")),
    (ord("a"), ord("z")),
)
_SPACE: Final = ((ord(" "), ord(" ")), (ord("\t"), ord("\r")))
_CLASS_ESCAPES: Final[dict[str, tuple[tuple[tuple[int, int], ...], bool]]] = {
    "d": (_DIGITS, False),
    "D": (_DIGITS, True),
    "w": (_WORD, False),
    "W": (_WORD, True),
    "s": (_SPACE, False),
    "S": (_SPACE, True),
}
_CHAR_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "0": "\0"}
_ANCHOR_ESCAPES: Final = frozenset("bBAZz")

# A parsed pattern: ("lit", str) | ("set", list[str]) | ("seq", list) | ("alt", list)
# | ("rep", node, min, max-or-None).
_Node = tuple[Any, ...]


def _char_set(ranges: Sequence[tuple[int, int]], negated: bool) -> _Node:
    """A "set" node listing printable ASCII members (or one member when none is printable)."""

    def inside(c: str) -> bool:
        return any(lo <= ord(c) <= hi for lo, hi in ranges)

    members = [c for c in _PRINTABLE if inside(c) != negated]
    if not members and not negated:
        members = [chr(lo) for lo, _ in ranges[:1] if not 0xD800 <= lo <= 0xDFFF]
    if not members:
        raise SchemaInstanceError("pattern: a character class matches nothing printable")
    return ("set", members)


class _PatternParser:
    """Recursive-descent parser for the regular-expression subset described above."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def parse(self) -> _Node:
        node = self._alternation()
        if self.pos != len(self.text):
            raise SchemaInstanceError(f"pattern: unbalanced ')' at {self.pos}")
        return node

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _take(self) -> str:
        if self.pos >= len(self.text):
            raise SchemaInstanceError("pattern: unexpected end")
        char = self.text[self.pos]
        self.pos += 1
        return char

    def _alternation(self) -> _Node:
        branches = [self._sequence()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def _sequence(self) -> _Node:
        items: list[_Node] = []
        while self._peek() not in ("", "|", ")"):
            atom = self._atom()
            items.append(self._quantified(atom))
        return ("seq", items)

    def _quantified(self, atom: _Node) -> _Node:
        char = self._peek()
        bounds: tuple[int, int | None] | None = None
        if char in ("*", "+", "?"):
            self.pos += 1
            bounds = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        elif char == "{":
            match = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.text, self.pos)
            if match:
                self.pos = match.end()
                low = int(match.group(1))
                high = low if not match.group(2) else int(match.group(3) or -1)
                bounds = (low, None if high == -1 else high)
        if bounds is None:
            return atom
        if self._peek() in ("?", "+"):  # lazy or possessive: same strings
            self.pos += 1
        if self._peek() in ("*", "+", "?"):
            raise SchemaInstanceError("pattern: repeated quantifier")
        return ("rep", atom, bounds[0], bounds[1])

    def _atom(self) -> _Node:
        char = self._take()
        if char == "(":
            return self._group()
        if char == "[":
            return self._class()
        if char == ".":
            return ("set", list(_PRINTABLE))
        if char in ("^", "$"):
            return ("seq", [])
        if char == "\\":
            return self._escape(in_class=False)
        if char in ("*", "+", "?"):
            raise SchemaInstanceError("pattern: nothing to repeat")
        return ("lit", char)

    def _group(self) -> _Node:
        if self.text.startswith("?:", self.pos):
            self.pos += 2
        elif self.text.startswith(("?P<", "?<"), self.pos) and not self.text.startswith(
            ("?<=", "?<!"), self.pos
        ):
            end = self.text.find(">", self.pos)
            if end < 0:
                raise SchemaInstanceError("pattern: unterminated group name")
            self.pos = end + 1
        elif self._peek() == "?":
            raise SchemaInstanceError("pattern: lookarounds and inline flags are unsupported")
        node = self._alternation()
        if self._take() != ")":
            raise SchemaInstanceError("pattern: missing ')'")
        return node

    def _escape(self, *, in_class: bool) -> _Node:
        char = self._take()
        if char in _CLASS_ESCAPES:
            ranges, negated = _CLASS_ESCAPES[char]
            return _char_set(ranges, negated)
        if char in _CHAR_ESCAPES:
            return ("lit", _CHAR_ESCAPES[char])
        if char in ("x", "u"):
            digits = self.text[self.pos : self.pos + (2 if char == "x" else 4)]
            if len(digits) not in (2, 4) or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise SchemaInstanceError(f"pattern: bad \\{char} escape")
            self.pos += len(digits)
            return ("lit", chr(int(digits, 16)))
        if char in _ANCHOR_ESCAPES and not in_class:
            return ("seq", [])
        if char.isdigit() or char in ("p", "P", "k", "c"):
            raise SchemaInstanceError(f"pattern: \\{char} is unsupported")
        return ("lit", char)

    def _class(self) -> _Node:
        negated = self._peek() == "^"
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while first or self._peek() != "]":
            first = False
            low = self._class_member(ranges)
            if low is None:
                continue
            if self._peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self._class_member(ranges)
                if high is None or high < low:
                    raise SchemaInstanceError("pattern: bad range in a character class")
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        self.pos += 1  # the closing ']'
        return _char_set(ranges, negated)

    def _class_member(self, ranges: list[tuple[int, int]]) -> int | None:
        """One class member's code point; escapes like \\d add their ranges and return None."""
        char = self._take()
        if char != "\\":
            return ord(char)
        node = self._escape(in_class=True)
        if node[0] == "lit":
            return ord(node[1])
        if node[0] == "set":
            ranges.extend((ord(c), ord(c)) for c in node[1])
            return None
        raise SchemaInstanceError("pattern: unsupported escape in a character class")


def _sample(node: _Node, repeat: int, choice: int, counter: Iterator[int]) -> str:
    """One string matching `node`: quantifiers repeat `repeat` times where allowed,
    alternations take branch `choice`, set members rotate with `counter`."""
    kind = node[0]
    if kind == "lit":
        return str(node[1])
    if kind == "set":
        members: list[str] = node[1]
        return members[next(counter) % len(members)]
    if kind == "seq":
        return "".join(_sample(child, repeat, choice, counter) for child in node[1])
    if kind == "alt":
        branches: list[_Node] = node[1]
        return _sample(branches[choice % len(branches)], repeat, choice, counter)
    _, child, low, high = node
    times = max(low, repeat) if high is None else min(max(low, repeat), high)
    return "".join(_sample(child, repeat, choice, counter) for _ in range(times))


def _pattern_sample(pattern: str, low: int, high: int | None, h: int) -> str:
    """A string with `re.search(pattern, s)` and a length in [low, high]."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise SchemaInstanceError(f"pattern {pattern!r} does not compile: {exc}") from exc
    tree = _PatternParser(pattern).parse()
    repeats = list(dict.fromkeys((3, 1, 0, 2, 5, 8, low, high if high is not None else low)))
    for choice in range(4):
        for repeat in repeats:
            sample = _sample(tree, repeat, choice, _counter(h))
            pad = "a" * max(0, low - len(sample))
            for candidate in (sample, sample + pad, pad + sample):
                fits = low <= len(candidate) and (high is None or len(candidate) <= high)
                if fits and compiled.search(candidate):
                    return candidate
    raise SchemaInstanceError(f"pattern {pattern!r}: no sample fits the length limits")


def _counter(start: int) -> Iterator[int]:
    while True:
        yield start >> 32  # the high bits of a linear congruential sequence
        start = (start * 6364136223846793005 + 1442695040888963407) % 2**64
