"""``python -m bench responses``: what the Responses API adds per request (micro-benchmark).

    python -m bench responses [--chunks 50] [--calls 2000] [--repeat 7]

Times, in one process and without any network, the Responses API's own work next to the
chat completions work it is built on (docs/responses.md):

- a stream of --chunks content chunks from an OpenAI-compatible upstream, through the
  OpenAI translator alone (what a chat stream costs) and through the same translator
  wrapped in `ResponsesStream`, ending included (the Responses events);
- the same answer from an upstream that serves the Responses API itself, through the
  native relay (`NativeStream`);
- a non-streamed answer: the chat completion as the provider parses it, and then as a
  Responses object;
- the request: a chat body validated, and a Responses body validated and bridged to a
  chat body (the bridge's output is validated again, as the route does).

Each figure is the best of --repeat runs of --calls calls, in microseconds per call.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import orjson

from bench.routing import best_us
from bench.subcommand import at_least, parser_for
from gateway.openai.validate import validate_chat_request
from gateway.providers.base import CallContext, Deployment
from gateway.providers.openai import OpenAIProvider
from gateway.responses.complete import response_from_chat
from gateway.responses.history import request_items
from gateway.responses.native import NativeStream
from gateway.responses.objects import skeleton
from gateway.responses.stream import ResponsesStream
from gateway.responses.to_chat import to_chat
from gateway.responses.validate import validate_responses_request

__all__ = ["add_parser", "measure", "run"]

RESPONSE_ID = "resp_" + "0123456789abcdef" * 3
WORD = " word"


def _chat_stream(chunks: int) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {**base, "choices": [choice], **extra}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    usage = {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks}
    events = [chunk({"role": "assistant", "content": ""}, usage=None)]
    events += [chunk({"content": WORD}, usage=None) for _ in range(chunks)]
    events.append(chunk({}, "stop", usage=None))
    events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    return b"".join(events) + b"data: [DONE]\n\n"


def _native_stream(chunks: int) -> bytes:
    n = iter(range(10**6))

    def event(kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": next(n), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    item = {"id": "msg_up", "type": "message", "status": "in_progress", "role": "assistant"}
    part = {"type": "output_text", "annotations": [], "text": ""}
    where = {"item_id": "msg_up", "output_index": 0, "content_index": 0}
    done_part = {**part, "text": WORD * chunks}
    done_item = {**item, "status": "completed", "content": [done_part]}
    usage = {"input_tokens": 10, "output_tokens": chunks, "total_tokens": 10 + chunks}
    response = {"id": "resp_up", "object": "response", "status": "in_progress", "output": []}
    out = [event("response.created", response=response)]
    out.append(event("response.output_item.added", output_index=0, item={**item, "content": []}))
    out.append(event("response.content_part.added", part=part, **where))
    out += [
        event("response.output_text.delta", delta=WORD, logprobs=[], **where) for _ in range(chunks)
    ]
    out.append(event("response.output_text.done", text=WORD * chunks, logprobs=[], **where))
    out.append(event("response.content_part.done", part=done_part, **where))
    out.append(event("response.output_item.done", output_index=0, item=done_item))
    final = {**response, "status": "completed", "output": [done_item], "usage": usage}
    out.append(event("response.completed", response=final))
    return b"".join(out)


def measure(chunks: int, calls: int, repeat: int) -> list[tuple[str, float]]:
    """(what, us per call) for every case."""
    provider = OpenAIProvider()
    dep = Deployment(model_id="m", provider_name="p", kind="openai", upstream_model="m")
    ctx = CallContext(dep, True, False, RESPONSE_ID, 1)
    request = {"model": "m", "input": "Say hello", "instructions": "Be brief.", "stream": True}
    shape = skeleton(request, RESPONSE_ID, 1, True)
    chat_raw = _chat_stream(chunks)
    native_raw = _native_stream(chunks)

    def chat_stream() -> object:
        t = provider.new_stream_translator(ctx)
        return t.feed(chat_raw) + t.close()

    def responses_stream() -> object:
        t = ResponsesStream(provider.new_stream_translator(ctx), shape)
        out = t.feed(chat_raw) + t.close()
        t.final(None)
        return out + t.last_event(None)

    def native_stream() -> object:
        t = NativeStream(shape)
        out = t.feed(native_raw) + t.close()
        t.final(None)
        return out + t.last_event(None)

    completion = orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": WORD * chunks},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 60},
        }
    )
    plain = CallContext(dep, False, False, RESPONSE_ID, 1)

    def chat_answer() -> object:
        return provider.parse_response(completion, plain)

    def responses_answer() -> object:
        parsed = provider.parse_response(completion, plain)
        return orjson.dumps(response_from_chat(orjson.loads(parsed.body), shape))

    chat_body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "stream": True,
    }

    def chat_request() -> object:
        return validate_chat_request(dict(chat_body))

    def responses_request() -> object:
        body = validate_responses_request(dict(request))
        return validate_chat_request(to_chat(body, request_items(body)).body)

    cases: list[tuple[str, Callable[[], object], int]] = [
        (f"stream of {chunks} chunks: chat (the OpenAI translator)", chat_stream, chunks),
        (f"stream of {chunks} chunks: Responses events, bridged", responses_stream, chunks),
        (f"stream of {chunks} deltas: Responses events, native", native_stream, chunks),
        ("non-streamed answer: chat", chat_answer, 0),
        ("non-streamed answer: Responses object, bridged", responses_answer, 0),
        ("request: chat, validated", chat_request, 0),
        ("request: Responses, validated and bridged", responses_request, 0),
    ]
    out: list[tuple[str, float]] = []
    for name, fn, per in cases:
        us = best_us(fn, calls, repeat)
        out.append((name, us))
        if per:
            out.append(("  per chunk", us / per))
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = parser_for(
        subparsers, "responses", "micro-benchmark of the Responses API's own work", __doc__
    )
    parser.add_argument("--chunks", type=at_least(int, 1), default=50, help="per stream")
    parser.add_argument("--calls", type=at_least(int, 10), default=2000, help="per timing")
    parser.add_argument(
        "--repeat", type=at_least(int, 1), default=7, help="timings; the best counts"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    rows = measure(args.chunks, args.calls, args.repeat)
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  us per call")
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f}")
    return 0
