"""JSON Schema keywords as values: equality, types, bounds, merging, string formats.

The helpers `schema_instance` generates and checks values with.

Pure module: no I/O.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from itertools import product
from typing import Any, Final


class SchemaInstanceError(ValueError):
    """No instance could be produced: the schema is unsatisfiable or unsupported."""


MIN_KEYS: Final = frozenset({"minimum", "minLength", "minItems", "minProperties", "minContains"})
MAX_KEYS: Final = frozenset({"maximum", "maxLength", "maxItems", "maxProperties", "maxContains"})
CONJOINED_KEYS: Final = frozenset(
    {"additionalProperties", "additionalItems", "contains", "propertyNames"}
)
MAX_BRANCHES: Final = 256


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema defines it: booleans are not numbers, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return bool(a == b)
    if isinstance(a, str) or a is None:
        return bool(a == b)
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(json_equal(a[k], b[k]) for k in a)
        )
    return bool(a == b)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return is_number(value) and (isinstance(value, int) or float(value).is_integer())
    if name == "number":
        return is_number(value)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, list)
    if name == "null":
        return value is None
    return False


def is_multiple(value: int | float, divisor: int | float) -> bool:
    """`multipleOf` as Python validators compute it (float quotient must be integral)."""
    if isinstance(divisor, float):
        quotient = value / divisor
        try:
            return int(quotient) == quotient
        except OverflowError:
            return False
    return not value % divisor


def number_or_none(value: Any) -> int | float | None:
    return value if is_number(value) else None


def count_or_none(value: Any) -> int | None:
    """A non-negative count keyword (minItems...), or None when absent or malformed."""
    if is_number(value) and value >= 0 and float(value).is_integer():
        return int(value)
    return None


def type_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for t in value if isinstance(t, str)]
    return None


def bounds(schema: Mapping[str, Any], side: str) -> tuple[int | float | None, bool]:
    """(bound, exclusive): the tighter of minimum/exclusiveMinimum, or of the maxima."""
    plain = number_or_none(schema.get("minimum" if side == "min" else "maximum"))
    exclusive = schema.get("exclusiveMinimum" if side == "min" else "exclusiveMaximum")
    if isinstance(exclusive, bool):  # draft 4: a flag on minimum/maximum
        return plain, exclusive and plain is not None
    strict = number_or_none(exclusive)
    if strict is None:
        return plain, False
    if plain is None:
        return strict, True
    tighter = strict >= plain if side == "min" else strict <= plain
    return (strict, True) if tighter else (plain, False)


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """One schema requiring what both require, as far as keywords combine; the
    validator still checks the originals, so a keyword that cannot be combined
    keeps `a`'s value."""
    out = dict(a)
    for key, vb in b.items():
        if key not in out:
            out[key] = vb
        elif not json_equal(out[key], vb):
            out[key] = merge_keyword(key, out[key], vb)
    return out


def merge_keyword(key: str, va: Any, vb: Any) -> Any:
    if key == "type":
        ta, tb = type_list(va) or [], type_list(vb) or []
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
        return [x for x in va if any(json_equal(x, y) for y in vb)]
    if is_number(va) and is_number(vb):
        if key in MIN_KEYS or key == "exclusiveMinimum":
            return max(va, vb)
        if key in MAX_KEYS or key == "exclusiveMaximum":
            return min(va, vb)
        if key == "multipleOf":
            if float(va).is_integer() and float(vb).is_integer():
                return math.lcm(int(va), int(vb))
            big, small = max(va, vb), min(va, vb)
            return big if is_multiple(big, small) else va
    if key in ("exclusiveMinimum", "exclusiveMaximum", "uniqueItems") and isinstance(va, bool):
        return va or vb if isinstance(vb, bool) else va
    if key in CONJOINED_KEYS or (key == "items" and not isinstance(va, list)):
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
        and len(va) * len(vb) <= MAX_BRANCHES
    ):
        return [{"allOf": [x, y]} for x, y in product(va, vb)]
    return va


def rotate(items: Sequence[str], start: int) -> list[str]:
    if not items:
        return []
    start %= len(items)
    return [*items[start:], *items[:start]]


def pick(target: int, low: int | None, high: int | None) -> int:
    """`target` if allowed, else a value near the violated end of [low, high]."""
    if low is not None and high is not None:
        return low + (target - low) % (high - low + 1)
    if low is not None and target < low:
        return low + (target - 1) % 100
    if high is not None and target > high:
        return high - (target - 1) % 100
    return target


def item_schemas(schema: Mapping[str, Any]) -> tuple[list[Any], Any]:
    """(per-position schemas, schema for the rest) for an array schema of any draft."""
    items = schema.get("items", True)
    if isinstance(items, list):  # draft 4-2019: tuple form
        return items, schema.get("additionalItems", True)
    prefix = schema.get("prefixItems")
    return (prefix if isinstance(prefix, list) else []), items


def fit(word: str, low: int, high: int | None) -> str:
    """`word` repeated or cut to a length in [low, high]."""
    if len(word) < low:
        word = "-".join([word] * (low // len(word) + 1))[:low]
    return word if high is None else word[:high]


def email(word: str, low: int, high: int | None) -> str:
    """An address with a length in [low, high], shortening the domain when needed."""
    for domain in ("example.com", "ex.co", "e"):
        fixed = len(domain) + 1
        if high is None or high - fixed >= max(1, low - fixed):
            local_high = None if high is None else high - fixed
            return f"{fit(word, max(1, low - fixed), local_high)}@{domain}"
    return fit(word, low, high)  # too short for any address: the format is dropped


def format_date(h: int, _: str) -> str:
    return f"2024-{1 + h % 12:02d}-{1 + (h >> 8) % 28:02d}"


def format_time(h: int, _: str) -> str:
    return f"{(h >> 16) % 24:02d}:{(h >> 24) % 60:02d}:00Z"


STRING_FORMATS: Final[dict[str, Callable[[int, str], str]]] = {
    "date": format_date,
    "time": format_time,
    "date-time": lambda h, w: f"{format_date(h, w)}T{format_time(h, w)}",
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
