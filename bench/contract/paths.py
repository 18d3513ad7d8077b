"""Field paths in OpenAI's syntax (`messages[2].content[0].image_url.url`).

An error's `param` names a field this way; a mutation records where it changed a
request this way. `parse_param` also reads the `messages.2.content` spelling some
servers use, so that two spellings of one place compare equal.

Pure module: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MISSING", "JsonPath", "format_path", "parse_param", "resolve", "same_place"]

Segment = str | int
JsonPath = tuple[Segment, ...]

MISSING: Any = object()  # what `resolve` returns for a path that leads nowhere

_PARAM = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[\d+\])*")
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_param(param: str) -> JsonPath | None:
    """`messages[2].content[0].type` -> ("messages", 2, "content", 0, "type"); None when
    `param` is not a path. A key of digits (`messages.2`, `logit_bias.50256`) stays text:
    `resolve` reads it as an index in an array."""
    if not _PARAM.fullmatch(param):
        return None
    return tuple(int(index) if index else key for key, index in _SEGMENT.findall(param))


def format_path(path: JsonPath) -> str:
    """The inverse of `parse_param`: ("messages", 2, "role") -> "messages[2].role"."""
    text = ""
    for seg in path:
        text += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if text else seg)
    return text


def resolve(body: Any, path: JsonPath) -> Any:
    """The value at `path` in `body`, or `MISSING` when the path leads nowhere. A key of
    digits indexes an array (`messages.2`)."""
    node = body
    for seg in path:
        index = seg if isinstance(seg, int) else int(seg) if seg.isdigit() else None
        if isinstance(node, list) and index is not None and 0 <= index < len(node):
            node = node[index]
        elif isinstance(node, dict) and str(seg) in node:
            node = node[str(seg)]
        else:
            return MISSING
    return node


def same_place(a: JsonPath, b: JsonPath) -> bool:
    """Whether two paths name one place (`messages.2` and `messages[2]` do)."""
    return tuple(map(str, a)) == tuple(map(str, b))
