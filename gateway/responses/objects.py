"""The Responses API's objects as the gateway builds them: ids, the response object,
usage, statuses and the wire form of each streamed event.

Shapes follow OpenAI's OpenAPI document (`Response`, `ResponseUsage`, the
`Response*Event` schemas). The response object echoes the request's settings, and
`model` is the id the client asked for (not the upstream's name for it).

Ids: a response is `resp_` + 48 hex digits; each of its output items is a prefix
(`msg`, `fc`, `rs`, ...) + `_` + the response's 48 digits + its output index in 4
hex digits, so an item id says which response holds it (`item_reference` inputs
are found that way).

Pure module: no I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.errors import GatewayError

JSON = dict[str, Any]

RESPONSE_PREFIX: Final = "resp_"
_HEX_DIGITS: Final = 48
_ITEM_ID = re.compile(r"[a-z]+_([0-9a-f]{48})[0-9a-f]{4}")
ITEM_PREFIXES: Final = {"message": "msg", "function_call": "fc", "reasoning": "rs"}

# The request's settings the response object echoes, with OpenAI's defaults.
_ECHOED_DEFAULTS: Final[tuple[tuple[str, object], ...]] = (
    ("instructions", None),
    ("max_output_tokens", None),
    ("max_tool_calls", None),
    ("parallel_tool_calls", True),
    ("previous_response_id", None),
    ("temperature", 1.0),
    ("tool_choice", "auto"),
    ("top_p", 1.0),
    ("truncation", "disabled"),
    ("user", None),
)
_ECHOED_IF_SET: Final = ("safety_identifier", "prompt_cache_key", "service_tier", "top_logprobs")


def new_response_id() -> str:
    return RESPONSE_PREFIX + os.urandom(_HEX_DIGITS // 2).hex()


def item_id(response_id: str, kind: str, index: int) -> str:
    """The id of output item `index` of a response (see the module docstring)."""
    prefix = ITEM_PREFIXES.get(kind, "item")
    return f"{prefix}_{response_id[len(RESPONSE_PREFIX) :]}{index:04x}"


def item_id_with_prefix(response_id: str, prefix: str, index: int) -> str:
    return f"{prefix}_{response_id[len(RESPONSE_PREFIX) :]}{index:04x}"


def response_of_item(item_ref: str) -> str | None:
    """The id of the response that holds the output item `item_ref`, if it is one of ours."""
    match = _ITEM_ID.fullmatch(item_ref)
    return None if match is None else RESPONSE_PREFIX + match.group(1)


def _tool_echo(tool: object) -> object:
    """A function tool as the response object shows it: `parameters` and `strict` always
    present (null when not set), as OpenAI's `FunctionTool` requires."""
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"parameters": None, "strict": None, **tool}
    return tool


def skeleton(request: Mapping[str, Any], response_id: str, created_at: int, store: bool) -> JSON:
    """The response object before any output: status `in_progress`, no usage."""
    text = request.get("text")
    reasoning = request.get("reasoning")
    metadata = request.get("metadata")
    obj: JSON = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": request["model"],
        "output": [],
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": reasoning.get("summary") if isinstance(reasoning, dict) else None,
        },
        "store": store,
        "text": text
        if isinstance(text, dict) and "format" in text
        else {
            **(text if isinstance(text, dict) else {}),
            "format": {"type": "text"},
        },
        "tools": [_tool_echo(t) for t in request.get("tools") or ()],
        "usage": None,
        "metadata": metadata if isinstance(metadata, dict) else {},
    }
    for key, default in _ECHOED_DEFAULTS:
        value = request.get(key)
        obj[key] = default if value is None else value
    for key in _ECHOED_IF_SET:
        if request.get(key) is not None:
            obj[key] = request[key]
    return obj


# --------------------------------------------------------------------------- usage


def _count(obj: object, key: str) -> int:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_chat(usage: Mapping[str, Any] | None) -> JSON | None:
    """Chat completions' usage as the Responses API's (`ResponseUsage`)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(prompt_details, "cached_tokens"),
            "cache_write_tokens": _count(prompt_details, "cache_write_tokens"),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(completion_details, "reasoning_tokens"),
        },
        "total_tokens": _count(usage, "total_tokens") or prompt + completion,
    }


def full_usage(usage: object) -> JSON | None:
    """An upstream's Responses usage with every field `ResponseUsage` requires (some
    upstreams leave out the details), its other fields kept."""
    if not isinstance(usage, Mapping):
        return None
    out = dict(usage)
    for key in ("input_tokens", "output_tokens"):
        out[key] = _count(usage, key)
    out["total_tokens"] = (
        _count(usage, "total_tokens") or out["input_tokens"] + out["output_tokens"]
    )
    for key, fields in (
        ("input_tokens_details", ("cached_tokens", "cache_write_tokens")),
        ("output_tokens_details", ("reasoning_tokens",)),
    ):
        details = usage.get(key)
        merged = dict(details) if isinstance(details, Mapping) else {}
        for name in fields:
            merged[name] = _count(merged, name)
        out[key] = merged
    return out


def usage_to_chat(usage: Mapping[str, Any] | None) -> JSON | None:
    """The Responses API's usage in chat completions' shape, which billing reads."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage, "input_tokens")
    completion = _count(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(usage, "total_tokens") or prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": _count(usage.get("input_tokens_details"), "cached_tokens"),
        },
        "completion_tokens_details": {
            "reasoning_tokens": _count(usage.get("output_tokens_details"), "reasoning_tokens"),
        },
    }


# --------------------------------------------------------------------------- status

INCOMPLETE_REASONS: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


def incomplete_reason(finish_reason: object) -> str | None:
    """Why a chat finish reason leaves a response incomplete, or None if it completed."""
    return INCOMPLETE_REASONS.get(finish_reason) if isinstance(finish_reason, str) else None


def error_object(error: GatewayError) -> JSON:
    """A failure as the response object's `error` (`ResponseError`: its `code` is one
    of OpenAI's codes: rate limits and bad requests keep theirs, the rest is a server
    error)."""
    status = error.http_status
    if status == 429:
        code = "rate_limit_exceeded"
    elif status == 400:
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {"code": code, "message": error.message}


# --------------------------------------------------------------------------- events


def ending(events: Events, response: JSON, error: GatewayError | None) -> bytes:
    """A stream's last events: `response.completed` or `response.incomplete`; for a
    failure an `error` event (the gateway's code and message) and `response.failed`."""
    out: list[bytes] = []
    if error is not None:
        fields = {"code": error.code or error.type, "message": error.message, "param": error.param}
        events.emit(out, "error", fields)
        events.emit(out, "response.failed", {"response": response})
    elif response["status"] == "incomplete":
        events.emit(out, "response.incomplete", {"response": response})
    else:
        events.emit(out, "response.completed", {"response": response})
    return b"".join(out)


class Events:
    """Numbers and encodes a response's stream events (`sequence_number` from 0).

    `emit` with `out` None only counts: the non-streamed answer builds its output with
    the same code and throws the events away.
    """

    __slots__ = ("sequence",)

    def __init__(self) -> None:
        self.sequence = 0

    def emit_delta(self, out: list[bytes] | None, head: bytes, delta: str) -> None:
        """A delta event whose bytes up to its `delta` value are `head` (made once)."""
        number = self.sequence
        self.sequence = number + 1
        if out is not None:
            out.append(head + orjson.dumps(delta) + b',"sequence_number":%d}\n\n' % number)

    def emit(self, out: list[bytes] | None, kind: str, fields: JSON) -> None:
        number = self.sequence
        self.sequence = number + 1
        if out is None:
            return
        fields["type"] = kind
        fields["sequence_number"] = number
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(fields) + b"\n\n")
