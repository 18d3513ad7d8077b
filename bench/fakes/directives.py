"""Behaviour knobs of the fake upstreams, set as defaults or per request in the model name.

A request picks its behaviour with directives after the last ``@`` of the model name::

    "gpt-fake@status=429&retry_after=7"    fail with 429 and Retry-After: 7
    "gpt-fake@ttft_ms=200&chunks=20"       first chunk after 200 ms, 20 content chunks
    "gpt-fake@hang"                        a bare key means ``key=true``
    "gpt-fake@ttft_ms=300&chunk_interval_ms=30&chunk_jitter_ms=10&chunks=200&chunks_max=800"
                                           like a real model: gaps of 20-40 ms,
                                           200-800 chunks (drawn per request)

The suffix is only read as directives when it contains ``=`` or is a known key, so a
model name such as ``claude-3@20240229`` stays whole. An unknown or malformed key in a
directive suffix is an error (the fake answers 400), so a typo in a test cannot pass
silently.

Stream positions (``reset_after``, ``error_after``) count SSE data events: the role
chunk is event 1, content (or tool-argument) chunks follow. ``reset_after=0`` resets the
connection before any response byte; it also applies to non-streamed requests, which
are reset instead of answered. ``error_after`` applies to streams only. The events
before a failure reach the client first, in their own write, 5 ms before it.

Pure module: no I/O.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class DirectiveError(ValueError):
    """A knob has an unknown name or a value of the wrong type or range."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the fake answers one request. Times are milliseconds; None means unset."""

    ttft_ms: float = 0.0  # stream: delay before the first chunk
    latency_ms: float = 0.0  # non-stream: delay before the answer
    chunks: int = 5  # content (or tool-argument) chunks; also sets completion length
    tokens_per_s: float | None = None  # stream pace, one chunk per token
    chunk_interval_ms: float | None = None  # stream pace, wins over tokens_per_s
    chunk_jitter_ms: float = 0.0  # each gap: the pace's interval +- up to this, uniform
    chunks_max: int | None = None  # chunks drawn uniformly from chunks..chunks_max
    status: int | None = None  # fail with this HTTP status (400-599)
    retry_after: str | None = None  # Retry-After header value with `status`
    error_type: str | None = None  # error.type of `status`/`error_after` errors
    error_message: str | None = None  # error.message of `status`/`error_after` errors
    reset_after: int | None = None  # abort the connection (TCP RST) after N events
    error_after: int | None = None  # in-band error event after N events, then [DONE]
    hang: bool = False  # read the request, never answer
    fail_rate: float = 0.0  # fraction of requests answered with a 500
    stamp: bool = False  # stream: each content piece is its send time (`base.STAMP_HOLE`)

    @property
    def chunk_interval_s(self) -> float:
        """Seconds between two content chunks of a stream."""
        if self.chunk_interval_ms is not None:
            return self.chunk_interval_ms / 1000.0
        if self.tokens_per_s:
            return 1.0 / self.tokens_per_s
        return 0.0


KNOBS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Behaviour))


def drawn(b: Behaviour, rng: random.Random) -> Behaviour:
    """`b` with its random parts drawn for one request (``chunks_max``)."""
    if b.chunks_max is None:
        return b
    low, high = sorted((b.chunks, b.chunks_max))
    return dataclasses.replace(b, chunks=rng.randint(low, high), chunks_max=None)


def split_model(model: str) -> tuple[str, dict[str, str]]:
    """Split ``name@k=v&k2=v2`` into the name and the raw directives.

    Returns the model unchanged and no directives when there is no directive suffix.
    Raises DirectiveError for an empty or malformed item in a directive suffix.
    """
    name, sep, suffix = model.rpartition("@")
    if not sep or not (("=" in suffix) or suffix in KNOBS):
        return model, {}
    raw: dict[str, str] = {}
    for item in suffix.split("&"):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not key:
            raise DirectiveError(f"empty directive in {suffix!r}")
        raw[key] = value.strip() if eq else "true"
    return name, raw


def apply_knobs(base: Behaviour, values: Mapping[str, object]) -> Behaviour:
    """Return `base` with `values` applied; values may be native or strings (directives).

    Setting one of ``tokens_per_s``/``chunk_interval_ms`` clears the other, so a
    per-request pace always wins over the defaults' pace.
    """
    changes: dict[str, object] = {}
    for key, value in values.items():
        if key not in KNOBS:
            known = ", ".join(sorted(KNOBS))
            raise DirectiveError(f"unknown knob {key!r}; known: {known}")
        changes[key] = _convert(key, value)
    if "tokens_per_s" in changes and "chunk_interval_ms" not in changes:
        changes["chunk_interval_ms"] = None
    if "chunk_interval_ms" in changes and "tokens_per_s" not in changes:
        changes["tokens_per_s"] = None
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _convert(key: str, value: object) -> object:
    """Check one knob value and convert it to the field's type."""
    if value is None:
        if key in {
            "ttft_ms", "latency_ms", "chunks", "hang", "fail_rate", "chunk_jitter_ms", "stamp"
        }:  # fmt: skip
            raise DirectiveError(f"{key} cannot be unset")
        return None
    if key in {"hang", "stamp"}:
        return _as_bool(key, value)
    if key in {"retry_after", "error_type", "error_message"}:
        return str(value)
    if key in {"chunks", "chunks_max", "status", "reset_after", "error_after"}:
        number = _as_int(key, value)
        if key == "status" and not 400 <= number <= 599:
            raise DirectiveError(f"status must be 400-599, got {number}")
        if number < 0:
            raise DirectiveError(f"{key} must be >= 0, got {number}")
        return number
    real = _as_float(key, value)
    if key == "fail_rate" and not 0.0 <= real <= 1.0:
        raise DirectiveError(f"fail_rate must be within 0..1, got {real}")
    if key == "tokens_per_s" and real <= 0:
        raise DirectiveError(f"tokens_per_s must be > 0, got {real}")
    if real < 0:
        raise DirectiveError(f"{key} must be >= 0, got {real}")
    return real


def _as_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DirectiveError(f"{key} must be a boolean, got {value!r}")


def _as_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DirectiveError(f"{key} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise DirectiveError(f"{key} must be an integer, got {value!r}") from None


def _as_float(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DirectiveError(f"{key} must be a number, got {value!r}")
    try:
        real = float(value)
    except ValueError:
        raise DirectiveError(f"{key} must be a number, got {value!r}") from None
    if real != real or real in (float("inf"), float("-inf")):
        raise DirectiveError(f"{key} must be finite, got {value!r}")
    return real
