"""A Gemini generateContent response -> an OpenAI `chat.completion` (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway.config import GeminiOptions
from gateway.errors import UpstreamError
from gateway.providers.base import JSON, CallContext, Completion
from gateway.providers.gemini.errors import gemini_error
from gateway.providers.gemini.ids import call_head, encode_call_id

_INT32_MAX: Final = 2**31 - 1

_FINISH: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "OTHER": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "IMAGE_OTHER": "content_filter",
}
# Finish reasons that mean the model's answer is broken: an error, not an empty success.
FAILED: Final = frozenset(
    (
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
    )
)


# --------------------------------------------------------------------------- responses


def openai_usage(meta: JSON) -> JSON:
    """OpenAI usage from Gemini `usageMetadata` (docs/wire-formats.md D6)."""
    prompt = _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount")
    thoughts = _count(meta, "thoughtsTokenCount")
    completion = _count(meta, "candidatesTokenCount") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": _count(meta, "cachedContentTokenCount"),
            "audio_tokens": _modality(meta.get("promptTokensDetails"), "AUDIO"),
        },
        "completion_tokens_details": {
            "reasoning_tokens": thoughts,
            "audio_tokens": _modality(meta.get("candidatesTokensDetails"), "AUDIO"),
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _count(meta: JSON, key: str) -> int:
    """A token count: Gemini's are int32, so anything else (negative, huge, not an int) is 0."""
    value = meta.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT32_MAX:
        return value
    return 0


def _modality(details: object, modality: str) -> int:
    if not isinstance(details, list):
        return 0
    return sum(
        _count(d, "tokenCount")
        for d in details
        if isinstance(d, dict) and d.get("modality") == modality
    )


def openai_logprobs(result: object) -> JSON | None:
    """OpenAI `logprobs` from a candidate's `logprobsResult`."""
    if not isinstance(result, dict):
        return None
    chosen = _list(result.get("chosenCandidates"))
    tops = _list(result.get("topCandidates"))
    content = []
    for k, token in enumerate(chosen):
        if not isinstance(token, dict):
            continue
        alternatives = tops[k] if k < len(tops) and isinstance(tops[k], dict) else {}
        top = _list(alternatives.get("candidates"))
        entry = _token_logprob(token)
        entry["top_logprobs"] = [_token_logprob(t) for t in top if isinstance(t, dict)]
        content.append(entry)
    return {"content": content, "refusal": None}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _token_logprob(token: JSON) -> JSON:
    text = token.get("token")
    text = text if isinstance(text, str) else ""
    logprob = token.get("logProbability")
    if not isinstance(logprob, int | float) or isinstance(logprob, bool):
        logprob = 0.0
    return {
        "token": text,
        "logprob": float(logprob),
        "bytes": list(text.encode()),
    }


def finish_reason(reason: str, saw_tool_call: bool) -> str:
    """OpenAI finish_reason for a (non-failure) Gemini finishReason (D5, E1)."""
    mapped = _FINISH.get(reason, "stop")
    return "tool_calls" if saw_tool_call and mapped == "stop" else mapped


def failed_finish(reason: str, candidate: JSON) -> UpstreamError:
    message = candidate.get("finishMessage")
    detail = f": {message}" if isinstance(message, str) and message else "."
    return UpstreamError(
        f"Gemini stopped without a usable answer ({reason}){detail}",
        code="upstream_" + reason.lower(),
    )


def blocked(obj: JSON) -> bool:
    """No candidates because the prompt itself was blocked."""
    feedback = obj.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


@dataclass(slots=True)
class _Parts:
    """A candidate's parts sorted into what OpenAI reports."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[JSON] = field(default_factory=list)


class Builder:
    """Per-request context for turning Gemini parts into OpenAI pieces."""

    __slots__ = ("model", "reasoning", "request_id")

    def __init__(self, ctx: CallContext) -> None:
        self.request_id = ctx.request_id
        self.model = ctx.deployment.model_id
        self.reasoning = ctx.deployment.options_of(GeminiOptions).reasoning_output

    def tool_call(self, part: JSON, choice: int, ordinal: int) -> JSON:
        fn = part["functionCall"]
        head = call_head(fn.get("id"), self.request_id, choice, ordinal)
        signature = part.get("thoughtSignature")
        args = fn.get("args")
        name = fn.get("name")
        return {
            "id": encode_call_id(head, signature if isinstance(signature, str) else None),
            "type": "function",
            "function": {
                "name": name if isinstance(name, str) else "",
                "arguments": orjson.dumps(args if isinstance(args, dict) else {}).decode(),
            },
        }


def candidate_parts(candidate: JSON) -> list[JSON]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def choice_index(candidate: JSON, position: int) -> int:
    index = candidate.get("index", position)
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def _completion_choice(builder: Builder, candidate: JSON, position: int) -> JSON:
    index = choice_index(candidate, position)
    sorted_parts = _Parts()
    for part in candidate_parts(candidate):
        if "functionCall" in part and isinstance(part["functionCall"], dict):
            call = builder.tool_call(part, index, len(sorted_parts.calls))
            sorted_parts.calls.append(call)
        elif isinstance(part.get("text"), str):
            (sorted_parts.reasoning if part.get("thought") else sorted_parts.text).append(
                part["text"]
            )
    reason = candidate.get("finishReason")
    reason = reason if isinstance(reason, str) else "STOP"
    if reason in FAILED:
        raise failed_finish(reason, candidate)
    message: JSON = {
        "role": "assistant",
        "content": "".join(sorted_parts.text)
        if sorted_parts.text or not sorted_parts.calls
        else None,
        "refusal": None,
        "annotations": [],
    }
    if sorted_parts.calls:
        message["tool_calls"] = sorted_parts.calls
    if builder.reasoning and sorted_parts.reasoning:
        message["reasoning_content"] = "".join(sorted_parts.reasoning)
    return {
        "index": index,
        "message": message,
        "logprobs": openai_logprobs(candidate.get("logprobsResult")),
        "finish_reason": finish_reason(reason, bool(sorted_parts.calls)),
    }


def _blocked_choice() -> JSON:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "content_filter",
    }


def completion(obj: JSON, ctx: CallContext) -> Completion:
    """The chat.completion for a generateContent response object."""
    if "error" in obj and not obj.get("candidates"):
        raise gemini_error(obj, None, None)
    builder = Builder(ctx)
    candidates = obj.get("candidates")
    candidates = (
        [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []
    )
    if candidates:
        choices = [_completion_choice(builder, c, k) for k, c in enumerate(candidates)]
        choices.sort(key=lambda c: c["index"])
    elif blocked(obj):
        choices = [_blocked_choice()]
    else:
        raise UpstreamError("Gemini returned no candidates.")
    meta = obj.get("usageMetadata")
    usage = openai_usage(meta) if isinstance(meta, dict) else None
    completion = {
        "id": ctx.request_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": builder.model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
    }
    return Completion(body=orjson.dumps(completion), usage=usage)
