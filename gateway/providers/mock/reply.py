"""The built-in offline model's reply: an OpenAI chat-completions answer, as bytes.

`respond` turns a validated request body into what an OpenAI upstream would send
back: a `chat.completion` JSON body, or a `text/event-stream` of
`chat.completion.chunk` events in OpenAI's order (role chunk, one chunk per token,
tool-call fragments, finish chunk, optional usage chunk, `[DONE]`). The parts carry
the delays a relay should sleep before writing them, so the configured speed
(`ttft_ms`, `tokens_per_s`) shows on the wire. What it says is `answer.py`'s.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.config import MockOptions
from gateway.providers.mock.answer import Choice, answer
from gateway.providers.mock.tools import tools_to_call
from gateway.tokens.count import count_prompt_tokens

SYSTEM_FINGERPRINT: Final = "fp_mock"
_SSE_HEADERS: Final = {"content-type": "text/event-stream"}
_JSON_HEADERS: Final = {"content-type": "application/json"}
_DONE: Final = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class MockReply:
    """The mock upstream's HTTP answer; the relay sleeps each delay, then writes its bytes."""

    status: int
    headers: dict[str, str]
    parts: list[tuple[float, bytes]]


def respond(
    payload: dict[str, Any], options: MockOptions, *, created: int, request_id: str
) -> MockReply:
    """The mock upstream's answer to an OpenAI chat-completions payload.

    The payload was validated by the gateway; `options` holds the deployment's pace
    (`ttft_ms`, `tokens_per_s`; 0 means no delay).
    """
    ttft_s = max(0.0, options.ttft_ms) / 1000
    tokens_per_s = max(0.0, options.tokens_per_s)
    n = payload.get("n")
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    names = tools_to_call(payload)
    choices = [answer(payload, index, names) for index in range(count)]
    usage = _usage(count_prompt_tokens(payload), sum(c.tokens for c in choices))
    if payload.get("stream") is True:
        stream_options = payload.get("stream_options")
        include_usage = (
            isinstance(stream_options, Mapping) and stream_options.get("include_usage") is True
        )
        kept_usage = usage if include_usage else None
        parts = _stream_parts(
            payload, choices, kept_usage, ttft_s, tokens_per_s, created, request_id
        )
        return MockReply(200, dict(_SSE_HEADERS), parts)
    body = _completion(payload, choices, usage, created, request_id)
    steps = max(c.tokens for c in choices)
    delay = ttft_s + (steps / tokens_per_s if tokens_per_s > 0 else 0.0)
    return MockReply(200, dict(_JSON_HEADERS), [(delay, body)])


# -- wire format ---------------------------------------------------------------------


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _completion(
    payload: Mapping[str, Any],
    choices: Sequence[Choice],
    usage: dict[str, Any],
    created: int,
    request_id: str,
) -> bytes:
    """The non-streamed `chat.completion` body."""
    body = {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": payload.get("model"),
        "choices": [
            {
                "index": choice.index,
                "message": _message(choice),
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for choice in choices
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return orjson.dumps(body)


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if choice.content is None else "".join(choice.content),
        "refusal": None,
        "annotations": [],
    }
    if choice.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": "".join(call.pieces)},
            }
            for call in choice.calls
        ]
    return message


class _ChunkWriter:
    """Encodes `chat.completion.chunk` events sharing one id/created/model header."""

    def __init__(
        self, payload: Mapping[str, Any], created: int, request_id: str, usage: bool
    ) -> None:
        self.head = (
            b'data: {"id":'
            + orjson.dumps(request_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(payload.get("model"))
            + b',"service_tier":"default","system_fingerprint":'
            + orjson.dumps(SYSTEM_FINGERPRINT)
            + b',"choices":['
        )
        self.tail = b'],"usage":null}\n\n' if usage else b"]}\n\n"

    def chunk(
        self, index: int, delta: Mapping[str, Any], finish_reason: str | None = None
    ) -> bytes:
        return b"".join(
            (
                self.head,
                b'{"index":%d,"delta":' % index,
                orjson.dumps(delta),
                b',"logprobs":null,"finish_reason":',
                orjson.dumps(finish_reason),
                b"}",
                self.tail,
            )
        )

    def usage_chunk(self, usage: Mapping[str, Any]) -> bytes:
        return self.head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


def _choice_steps(writer: _ChunkWriter, choice: Choice) -> list[list[bytes]]:
    """The choice's events grouped by token: step k carries the k-th generated piece;
    the role chunk rides with the first step and the finish chunk with the last."""
    i = choice.index
    role = {"role": "assistant", "content": None if choice.content is None else "", "refusal": None}
    steps = [[writer.chunk(i, {"content": piece})] for piece in choice.content or ()]
    for k, call in enumerate(choice.calls):
        function = {"name": call.name, "arguments": ""}
        opening = {"index": k, "id": call.id, "type": "function", "function": function}
        steps.append([writer.chunk(i, {"tool_calls": [opening]})])
        for piece in call.pieces:
            fragment = {"index": k, "function": {"arguments": piece}}
            steps.append([writer.chunk(i, {"tool_calls": [fragment]})])
    if not steps:
        steps.append([])
    steps[0].insert(0, writer.chunk(i, role))
    steps[-1].append(writer.chunk(i, {}, choice.finish_reason))
    return steps


def _stream_parts(
    payload: Mapping[str, Any],
    choices: Sequence[Choice],
    usage: dict[str, Any] | None,
    ttft_s: float,
    tokens_per_s: float,
    created: int,
    request_id: str,
) -> list[tuple[float, bytes]]:
    """SSE bytes in timed parts: the first after `ttft_s`, then one per token step
    every 1/tokens_per_s (all choices advance together); one part when there is no
    token delay."""
    writer = _ChunkWriter(payload, created, request_id, usage is not None)
    per_choice = [_choice_steps(writer, choice) for choice in choices]
    length = max(len(steps) for steps in per_choice)
    frames = [
        b"".join(b"".join(steps[s]) for steps in per_choice if s < len(steps))
        for s in range(length)
    ]
    frames[-1] += (writer.usage_chunk(usage) if usage is not None else b"") + _DONE
    if tokens_per_s <= 0:
        return [(ttft_s, b"".join(frames))]
    gap = 1 / tokens_per_s
    return [(ttft_s if s == 0 else gap, frame) for s, frame in enumerate(frames)]
