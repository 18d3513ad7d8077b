"""A request body from bytes to a parsed JSON value, within the JSON limits.

orjson parses a 16 MB body in one C call that keeps the GIL: ~30 ms for a body of a
few long strings, but over a second for one of millions of tiny arrays (5M `[]`s:
1.3 s), which would hold the event loop however the call is scheduled (a thread does
not help). The parse costs about 0.25 us per object or array, so a body may hold at
most `MAX_CONTAINERS` of them (R13), which bounds a parse to ~25 ms: far more than
any real request needs (OpenAI takes at most 2048 messages and 128 tools), which one
hostile body cannot exceed. Counting `{` and `[` bytes is an upper bound (brackets
inside strings count too) found in a millisecond; only a body above the limit by that
count is scanned exactly, string by string, in Python bytecode that lets the loop
run (this runs in a worker thread for big bodies: gateway/offload.py).

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from gateway.errors import InvalidRequest

__all__ = ["MAX_CONTAINERS", "containers", "parse_body"]

MAX_CONTAINERS: Final = 100_000
"""Most objects and arrays a request body may hold (the body itself included)."""

# One match per `{` or `[` outside strings: the strings and everything else between
# two of them are consumed in C (possessive, so no backtracking over a long string).
_OPENER: Final = re.compile(rb'(?:[^"\[{]++|"[^"\\]*+(?:\\.[^"\\]*+)*+"?)*+[\[{]', re.DOTALL)


def containers(raw: bytes, stop_at: int | None = None) -> int:
    """The objects and arrays in JSON text `raw` (brackets in strings do not count);
    counting stops once past `stop_at`."""
    count, at, match = 0, 0, _OPENER.match
    # Each match starts where the last one ended (finditer would retry from inside a
    # string after the last opener, and count brackets there).
    while (found := match(raw, at)) is not None:
        count += 1
        if stop_at is not None and count > stop_at:
            break
        at = found.end()
    return count


def parse_body(raw: bytes) -> Any:
    """The parsed body, or a 400 that says what is wrong with it."""
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    if raw.count(b"{") + raw.count(b"[") > MAX_CONTAINERS:
        found = containers(raw, MAX_CONTAINERS)
        if found > MAX_CONTAINERS:
            raise InvalidRequest(
                f"The request body holds more than {MAX_CONTAINERS} JSON objects and "
                f"arrays; split the request or send fewer, larger parts.",
                code="json_too_complex",
            )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({e.msg}, at byte {e.pos})."
        ) from None
