"""An Anthropic message -> an OpenAI `chat.completion` (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.config import AnthropicOptions
from gateway.providers.anthropic.request import JSON_VALUE_TOOL, RESERVED_TOOLS
from gateway.providers.base import JSON, CallContext

_FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------- responses


def openai_usage(raw: Mapping[str, Any]) -> JSON:
    """OpenAI usage from Anthropic counts (D6): cache reads and writes are prompt tokens."""
    fresh = _count(raw.get("input_tokens"))
    read = _count(raw.get("cache_read_input_tokens"))
    written = _count(raw.get("cache_creation_input_tokens"))
    output = _count(raw.get("output_tokens"))
    details = raw.get("output_tokens_details")
    thinking = _count(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    prompt = fresh + read + written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
        "completion_tokens_details": {"reasoning_tokens": thinking},
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def finish_reason(stop_reason: object, json_only: bool) -> str:
    """OpenAI's finish_reason (D5); `json_only`: the response_format tool was the only call."""
    if stop_reason == "tool_use" and json_only:
        return "stop"
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _json_answer(name: str, args: object) -> str:
    """The response_format tool's input as the answer text (unwrapped when wrapped).

    A wrapped input without its `value` (cut short by max_tokens) gives "": the
    client never sees the wrapper.
    """
    if name == JSON_VALUE_TOOL:
        if not isinstance(args, dict) or "value" not in args:
            return ""
        args = args["value"]
    return orjson.dumps(args).decode()


def completion(msg: JSON, ctx: CallContext) -> JSON:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[JSON] = []
    answer: str | None = None
    for block in msg.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            name = str(block.get("name") or "")
            if name in RESERVED_TOOLS:
                answer = _json_answer(name, block.get("input"))
                continue
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking") or ""))
    content = answer if answer is not None else ("".join(texts) if texts else None)
    message: JSON = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
    if thoughts and ctx.deployment.options_of(AnthropicOptions).reasoning_output:
        message["reasoning_content"] = "".join(thoughts)
    usage = msg.get("usage")
    return {
        "id": ctx.request_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.deployment.model_id,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(
                    msg.get("stop_reason"), answer is not None and not calls
                ),
            }
        ],
        "usage": openai_usage(usage if isinstance(usage, dict) else {}),
        "system_fingerprint": None,
    }
