"""Reading the request payload the mock answers: messages, their text, the seed.

Pure module: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.tokens.count import split_tokens


def messages_of(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in as_list(payload.get("messages")) if isinstance(m, Mapping)]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def seed_of(payload: Mapping[str, Any]) -> str:
    seed = payload.get("seed")
    return str(seed) if isinstance(seed, int) and not isinstance(seed, bool) else ""


def digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def dumps(value: Any) -> str:
    """Compact JSON; the stdlib handles what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return plain_text(message.get("content"))
    return None


def plain_text(content: Any) -> str:
    """A message's content as text; non-text parts show as [image], [audio], [file]."""
    if isinstance(content, str):
        return content
    words: list[str] = []
    for part in as_list(content):
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            words.append(part[kind])
        elif kind in ("image_url", "input_audio", "file"):
            words.append({"image_url": "[image]", "input_audio": "[audio]", "file": "[file]"}[kind])
    return " ".join(words)


def quote(text: str, limit: int) -> str:
    """The first `limit` tokens of `text`, whitespace collapsed ("…" if cut). Only the
    first 64 characters per token are read: a 15 MB message costs what a short one does."""
    pieces = split_tokens(" ".join(text[: limit * 64].split()))
    if len(pieces) <= limit:
        return "".join(pieces)
    return "".join(pieces[:limit]).rstrip() + "…"
