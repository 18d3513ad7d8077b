"""``python -m bench relayloop``: what the relay's own loop costs per streamed chunk.

    python -m bench relayloop [--chunks 20000] [--repeat 5]

Streams --chunks OpenAI chunks through `Relay.stream`, in one process and without any
network, from a response that hands each chunk at once, to writers that take
everything at once: the relay's loop, the translator and the writer's call, with no
socket and no scheduler pass. Two cases: a response the worker's pump cannot take (as
the httpx transport's: the relay reads every chunk itself), and no direct
writer at all (the pump never asked). Each figure is the best of --repeat runs, in
microseconds of CPU per chunk: the machine is noisy, and the best run is the one least
disturbed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import orjson
import trio

from bench.subcommand import at_least, parser_for
from gateway.config import ProviderConfig
from gateway.providers.base import CallContext, UpstreamRequest
from gateway.providers.openai import OpenAIProvider
from gateway.upstream.pump import WriteNow
from gateway.upstream.relay import Relay, Timeouts
from gateway.upstream.router import make_deployment

__all__ = ["add_parser", "measure", "run"]

BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Say hello"}]}


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    event = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


class _Declining:
    """A streamed response that hands each chunk at once and that the pump declines
    (`pump_fd` None), as a TLS response of the h11 pool does."""

    __slots__ = ("_i", "_pieces", "headers", "status")

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces
        self._i = 0
        self.status = 200
        self.headers: Mapping[str, str] = {"content-type": "text/event-stream"}

    async def next_chunk(self) -> bytes | None:
        if self._i >= len(self._pieces):
            return None
        self._i += 1
        return self._pieces[self._i - 1]

    def pump_fd(self) -> int | None:
        return None

    def read_now(self) -> bytes:
        return b""


class _Transport:
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    @asynccontextmanager
    async def open(self, req: UpstreamRequest, ctx: CallContext) -> AsyncIterator[_Declining]:
        yield _Declining(self._pieces)

    async def aclose(self) -> None:
        pass


async def _best_us(chunks: int, repeat: int, direct: bool) -> float:
    pieces = [_chunk(str(i % 10)) for i in range(chunks)]
    pieces.append(_chunk(None, "stop") + b"data: [DONE]\n\n")
    p = ProviderConfig(name="up", kind="openai", base_url="http://127.0.0.1:1/v1", api_key="k")
    relay = Relay(_Transport(pieces), Timeouts.of(p), OpenAIProvider())  # type: ignore[arg-type]
    ctx = CallContext(make_deployment("m", p, "m"), True, False, "chatcmpl-b", 1)
    req = relay.provider.build_request(BODY, ctx)

    async def write(data: bytes) -> None:
        pass

    def now(data: bytes) -> None:
        return None

    write_now: WriteNow | None = now if direct else None
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time_ns()
        outcome = await relay.stream(req, ctx, write, write_now=write_now)
        best = min(best, (time.process_time_ns() - start) / chunks / 1000)
        assert outcome.error is None, outcome.error
    return best


def measure(chunks: int, repeat: int) -> list[tuple[str, float]]:
    """(case, us of CPU per chunk) for each case."""

    async def both() -> list[tuple[str, float]]:
        return [
            ("a direct writer; the pump declines", await _best_us(chunks, repeat, True)),
            ("no direct writer", await _best_us(chunks, repeat, False)),
        ]

    return trio.run(both)


def add_parser(subparsers: object) -> argparse.ArgumentParser:
    parser = parser_for(subparsers, "relayloop", "the relay's own cost per chunk", __doc__)
    parser.add_argument("--chunks", type=at_least(int, 10), default=20_000, help="per run")
    parser.add_argument("--repeat", type=at_least(int, 1), default=5, help="runs; the best counts")
    return parser


def run(args: argparse.Namespace) -> int:
    rows = measure(args.chunks, args.repeat)
    width = max(len(name) for name, _ in rows)
    print(f"{'case':<{width}}  us CPU per chunk")
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f}")
    return 0
