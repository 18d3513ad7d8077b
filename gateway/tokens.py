"""Token estimates: split text into BPE-like pieces and estimate a request's prompt tokens.

The gateway needs token counts before the upstream answers (TPM limits, budgets) and
the mock provider streams one piece per token. Until a real tokenizer is wired in,
this module approximates OpenAI's BPE on English (about 4 characters per token).

The split rule, applied left to right (every character lands in exactly one piece,
so the pieces always concatenate back to the input):

1. an English contraction suffix (``'s 't 're 've 'm 'll 'd``, any case) is a piece;
2. a run of letters from the alphabetic scripts below U+0800 (Latin, Greek,
   Cyrillic, Hebrew, Arabic...) is a piece, split every 10 letters, so a long word
   costs several tokens;
3. digits come in groups of up to 3 (``12345`` -> ``123`` ``45``);
4. ASCII punctuation and symbols (``_`` included) come in runs of up to 3;
5. every other character (CJK, emoji, non-ASCII symbols) is a piece of its own;
6. rules 2-5 take one preceding space with them (``" word"``, ``" 42"``);
7. other whitespace runs are pieces (a run of line breaks, with the blanks before
   it, is one piece); a run followed by a word gives its last space to that word
   (``"a  b"`` -> ``a`` ``" "`` ``" b"``).

`count_prompt_tokens` adds OpenAI's chat framing: 3 tokens per message, 1 more when
it has a `name`, 3 to prime the reply; tool definitions and a `json_schema`
response format are counted as their compact JSON plus a small framing overhead.
Non-text parts use fixed estimates (`IMAGE_TOKENS`, `AUDIO_TOKENS_PER_S`,
`FILE_TOKENS`) documented where they are defined.

Pure module: no I/O, no trio/httpx/quart imports. Keep the API small: a real
tokenizer will replace the internals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

__all__ = [
    "AUDIO_TOKENS_PER_S",
    "FILE_TOKENS",
    "IMAGE_TOKENS",
    "count_prompt_tokens",
    "count_text_tokens",
    "split_tokens",
]

_TOKEN_RE: Final = re.compile(
    "|".join(
        (
            r"(?i:'(?:s|t|re|ve|m|ll|d))(?![^\W\d_])",  # 1. contraction suffix
            r" ?[^\W\d_\u0800-\U0010ffff]{1,10}",  # 2. (a slice of) a word
            r" ?\d{1,3}",  # 3. digit group
            r" ?(?:[^\s\w\x80-\U0010ffff]|_){1,3}",  # 4. ASCII punctuation run
            r" ?[^\s\x00-\x7f]",  # 5. any other single character
            r"\s*[\r\n]+",  # 7. whitespace ending in line breaks
            r"\s+(?!\S)",  # 7. whitespace, leaving one space for the next word
            r"\s+",  # 7. whitespace before a non-space
        )
    )
)

# Per-message framing, as in OpenAI's published counting recipe for chat models.
MESSAGE_TOKENS: Final = 3
NAME_TOKENS: Final = 1
REPLY_PRIMING_TOKENS: Final = 3
# Tool definitions are rendered into the prompt by the upstream; we count their JSON
# plus this much per tool and once for the whole block.
TOOL_TOKENS: Final = 8
TOOLS_BLOCK_TOKENS: Final = 12
TOOL_CALL_TOKENS: Final = 3  # per tool call in an assistant message

# Images: OpenAI bills a low-detail image 85 tokens and a high-detail one 85 plus
# 170 per 512 px tile; we cannot see the size, so "high" and "auto" assume a
# 1024x1024 image (4 tiles): 765 tokens.
IMAGE_TOKENS: Final[Mapping[str, int]] = {"low": 85, "high": 765, "auto": 765}
# Audio input is about 10 tokens per second; the duration is estimated from the
# decoded size at 32 kB/s for wav (16 kHz 16-bit mono) and 16 kB/s for mp3 (128 kbit/s).
AUDIO_TOKENS_PER_S: Final = 10
_AUDIO_BYTES_PER_S: Final[Mapping[str, int]] = {"wav": 32_000, "mp3": 16_000}
# Files (PDFs) are extracted text plus page images upstream: a flat estimate per file.
FILE_TOKENS: Final = 1_000


def split_tokens(text: str) -> list[str]:
    """Split `text` into token-like pieces whose concatenation is `text`."""
    return _TOKEN_RE.findall(text)


def count_text_tokens(text: str) -> int:
    """Number of pieces `split_tokens(text)` returns, without building them."""
    return _TOKEN_RE.subn("", text)[1] if text else 0


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Estimate the prompt tokens of an OpenAI chat-completions request body."""
    total = REPLY_PRIMING_TOKENS
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                total += _message_tokens(message)
    for key in ("tools", "functions"):
        tools = body.get(key)
        if isinstance(tools, list) and tools:
            total += TOOLS_BLOCK_TOKENS + sum(TOOL_TOKENS + _json_tokens(t) for t in tools)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        total += TOOLS_BLOCK_TOKENS + _json_tokens(response_format.get("json_schema"))
    return total


def _message_tokens(message: Mapping[str, Any]) -> int:
    total = MESSAGE_TOKENS + _text_tokens(message.get("role"))
    name = message.get("name")
    if isinstance(name, str):
        total += NAME_TOKENS + count_text_tokens(name)
    total += _content_tokens(message.get("content"))
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        total += count_text_tokens(refusal)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                total += TOOL_CALL_TOKENS + _function_call_tokens(function)
    function_call = message.get("function_call")
    if isinstance(function_call, Mapping):
        total += TOOL_CALL_TOKENS + _function_call_tokens(function_call)
    return total + _text_tokens(message.get("tool_call_id"))


def _function_call_tokens(function: Mapping[str, Any]) -> int:
    return _text_tokens(function.get("name")) + _text_tokens(function.get("arguments"))


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_text_tokens(content)
    if not isinstance(content, list):
        return 0
    return sum(_part_tokens(part) for part in content if isinstance(part, Mapping))


def _part_tokens(part: Mapping[str, Any]) -> int:
    kind = part.get("type")
    if kind in ("text", "refusal"):
        return _text_tokens(part.get(kind))
    if kind == "image_url":
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, Mapping) else None
        return IMAGE_TOKENS.get(detail if isinstance(detail, str) else "auto", IMAGE_TOKENS["auto"])
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, Mapping):
            return 0
        data, fmt = audio.get("data"), audio.get("format")
        decoded_bytes = _base64_size(data) if isinstance(data, str) else 0
        rate = _AUDIO_BYTES_PER_S.get(fmt if isinstance(fmt, str) else "", 16_000)
        return max(1, math.ceil(decoded_bytes / rate * AUDIO_TOKENS_PER_S))
    if kind == "file":
        return FILE_TOKENS
    return 0


def _base64_size(data: str) -> int:
    """Decoded size of base64 `data` (a data URL's payload too), without decoding it."""
    if data.startswith("data:"):
        data = data[data.find(",") + 1 :]
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))


def _text_tokens(value: Any) -> int:
    return count_text_tokens(value) if isinstance(value, str) else 0


def _json_tokens(value: Any) -> int:
    try:
        return count_text_tokens(orjson.dumps(value).decode())
    except TypeError:  # not JSON-serialisable: the validator should have refused it
        return 0
