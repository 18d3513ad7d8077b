"""The requests a load run sends: one chat completion body, cheap to vary per request.

The prompt is deterministic text of about `prompt_tokens` tokens::

    Request 00000042. the of and to in is that for ...

It opens with the request's number (8 digits, so that every body has the same length
and one HTTP head serves them all), which makes every prompt differ from its first
token: a server's prefix cache cannot answer it from an earlier request. Then come
common English words that are one token each in the GPT-4/GPT-4o (cl100k, o200k),
Llama 3 and Mistral tokenizers, each with its leading space. The estimate: the prefix
costs 5 tokens (``Request``, 3 digit groups, ``.``; 6 where the space before the
digits is a token of its own, as in cl100k), each word 1 token, so the text is
`prompt_tokens` tokens within one or two (never fewer than the prefix); a server adds
its chat framing (OpenAI: 3 tokens per message and 3 to prime the reply).

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h11
import orjson

__all__ = ["PREFIX_TOKENS", "Workload", "synthetic_prompt"]

# One token each, with the leading space, in the common BPE vocabularies.
_COMMON_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an had they you were their one all we can her has there been"
)
_WORDS = tuple(" " + word for word in _COMMON_WORDS.split())
PREFIX_TOKENS = 6  # "Request", three groups of digits, "."
_NUMBER_WIDTH = 8
_NUMBER_MODULUS = 10**_NUMBER_WIDTH
_PLACEHOLDER = "#" * _NUMBER_WIDTH


def synthetic_prompt(tokens: int, number: int = 0) -> str:
    """The prompt of request `number`: about `tokens` tokens (see the module doc)."""
    words = max(0, tokens - PREFIX_TOKENS)
    filler = "".join(_WORDS[i % len(_WORDS)] for i in range(words))
    return f"Request {number % _NUMBER_MODULUS:0{_NUMBER_WIDTH}d}.{filler}"


class Workload:
    """Builds the HTTP head and body of each request of a run.

    The body is encoded once with a placeholder for the request number, so a
    request costs two byte concatenations, and the head (a reusable h11 event) is
    built once.
    """

    __slots__ = ("_head", "_prefix", "_suffix")

    def __init__(
        self,
        *,
        host: str,
        path: str,
        model: str,
        stream: bool,
        prompt_tokens: int,
        max_tokens: int,
        api_key: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        user_agent: str = "gateway-bench-load/1",
    ) -> None:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": ""}],
            "max_tokens": max_tokens,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(extra_body or {})
        # The prompt goes in last so that extra_body cannot drop the placeholder.
        prompt = synthetic_prompt(prompt_tokens).replace("0" * _NUMBER_WIDTH, _PLACEHOLDER, 1)
        body["messages"] = [{"role": "user", "content": prompt}]
        encoded = orjson.dumps(body)
        prefix, sep, suffix = encoded.partition(_PLACEHOLDER.encode())
        if not sep:  # cannot happen: the placeholder is plain ASCII inside a JSON string
            raise AssertionError("placeholder lost in the encoded body")
        self._prefix = prefix
        self._suffix = suffix
        headers = [
            ("host", host),
            ("user-agent", user_agent),
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if stream else "application/json"),
            ("content-length", str(len(encoded))),
        ]
        if api_key:
            headers.append(("authorization", f"Bearer {api_key}"))
        self._head = h11.Request(method="POST", target=path, headers=headers)

    @property
    def head(self) -> h11.Request:
        """The request line and headers, the same for every request of the run."""
        return self._head

    def body(self, number: int) -> bytes:
        """The JSON body of request `number` (all bodies have the same length)."""
        digits = b"%08d" % (number % _NUMBER_MODULUS)
        return self._prefix + digits + self._suffix
