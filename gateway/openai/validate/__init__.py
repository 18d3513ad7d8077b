"""Validation of OpenAI chat-completions request bodies (docs/wire-formats.md A2-A4).

`validate_chat_request` checks a parsed body against the OpenAI request schema and
raises `InvalidRequest` naming the first violation by its field path, in OpenAI's
own syntax and wording (`messages[2].content[0].image_url.url`).

What it enforces, beyond the schema:
- Unknown keys pass through (top level, messages, parts: vendor extensions), but
  known keys are type-checked wherever they appear.
- Every integer field has OpenAI's bounds: `n` 1-128, `top_logprobs` 0-20, `seed` a
  signed 64-bit integer, `logit_bias` values -100..100, and the output caps
  (`max_tokens`, `max_completion_tokens`) 1 to `MAX_OUTPUT_TOKENS` (2**31 - 1), which
  the schema leaves unbounded.
- The body nests at most `MAX_DEPTH` containers deep (the root object is level 1).
  orjson parses up to 1024 levels but serialises only 254, and translators recurse,
  so a deeper body would fail later as a 500. Only free-form values (tool schemas,
  unknown keys) are walked; the structured parts are shallow by construction.

It is on the hot path of every request, so it is hand-written: no schema library,
no copies, and no path strings on success. Checks raise an internal `Violation`
whose path is relative to the object being checked; callers prefix their own
segment on the way out, so paths are only built on failure. The common message
shapes (role + string content) take a short fast path.

The modules: `chat` (the top-level fields and the entry point), `messages` (roles
and content parts), `tools` (tools, tool choice, response_format), `rules` (the
typed getters, the violation and its wording, the depth bound) under them all.

Null is accepted where the OpenAI SDK's request types make a field Optional, and
for an assistant message's tool_calls/function_call/refusal/audio (SDK users echo
the response message back with its nulls); translators must treat null as absent.

Pure package: no I/O, no trio/httpx/quart imports.
"""

from gateway.openai.validate.chat import MAX_OUTPUT_TOKENS, validate_chat_request
from gateway.openai.validate.rules import MAX_DEPTH

__all__ = ["MAX_DEPTH", "MAX_OUTPUT_TOKENS", "validate_chat_request"]
