"""``python -m bench routing``: what the routing decision costs per request (micro-benchmark).

    python -m bench routing [--calls 20000] [--repeat 7]

Times, in one process and without any network, the parts routing adds to a request
(docs/routing.md): `Router.plan` for the shapes of model a config can have, the
bookkeeping around one attempt (retry budget, passive health, load), and a whole
non-streamed request through the chain of attempts against an upstream that answers at
once, next to the same request sent the way the gateway sent it before routing (one
`CallContext`, `build_request` and `Relay.complete`). Each figure is the best of
--repeat runs of --calls calls, in microseconds per call: the machine is noisy, and the
best run is the one least disturbed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

from bench.subcommand import at_least, parser_for
from gateway.config import Config, parse_config
from gateway.providers.base import CallContext, UpstreamRequest
from gateway.providers.openai import OpenAIProvider
from gateway.upstream.chain import Chain
from gateway.upstream.relay import Relay, Timeouts
from gateway.upstream.router import Router

__all__ = ["add_parser", "measure", "run"]

BODY = {"model": "solo", "messages": [{"role": "user", "content": "Say hello"}]}
COMPLETION = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)


def config() -> Config:
    """Providers that are never dialled, and one model of each shape."""
    return parse_config(
        {
            "providers": {
                "a": {"kind": "openai", "base_url": "http://a.invalid/v1"},
                "b": {"kind": "openai", "base_url": "http://b.invalid/v1"},
                "c": {"kind": "anthropic", "base_url": "http://c.invalid/v1"},
            },
            "models": {
                "solo": {"provider": "a", "upstream_model": "gpt-4o-mini"},
                "claude": {"provider": "c", "upstream_model": "claude-haiku-4-5"},
                "chat": {
                    "targets": [
                        {"model": "a/gpt-4o-mini", "weight": 3},
                        {"model": "b/gpt-4o-mini", "weight": 1},
                    ],
                    "fallbacks": ["claude", "c/claude-sonnet-4-5"],
                },
                "busy": {
                    "strategy": "least-busy",
                    "targets": ["a/m1", "a/m2", "b/m3", "b/m4"],
                },
            },
        },
        env={},
        source="bench routing",
    )


class _Answer:
    __slots__ = ("_sent", "headers", "status")

    def __init__(self) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {}
        self._sent = False

    async def next_chunk(self) -> bytes | None:
        if self._sent:
            return None
        self._sent = True
        return COMPLETION


class InstantTransport:
    """An upstream that answers every request at once, in process."""

    @asynccontextmanager
    async def open(self, req: UpstreamRequest, ctx: CallContext) -> AsyncIterator[_Answer]:
        yield _Answer()

    async def aclose(self) -> None:
        return None

    def prune_idle(self) -> None:
        return None

    def connections(self) -> tuple[int, int] | None:
        return None


def best_us(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """The best of `repeat` timings of `calls` calls of `fn`, in us per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / calls / 1000)
    return best


async def best_async_us(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(calls):
            await fn()
        best = min(best, (time.perf_counter_ns() - start) / calls / 1000)
    return best


def measure(calls: int, repeat: int) -> list[tuple[str, float]]:
    """(what, us per call) for every case."""
    c = config()
    router = Router(c)
    out: list[tuple[str, float]] = []

    def plan(model: str, fallbacks: list[str] | None = None) -> Callable[[], object]:
        return lambda: router.plan(model, 1000.0, fallbacks)

    out.append(("plan: a [models] id, one deployment", best_us(plan("solo"), calls, repeat)))
    router.plan("a/gpt-4.1", 0.0)  # cached from the second request of an id on
    out.append(("plan: a PROVIDER/MODEL id", best_us(plan("a/gpt-4.1"), calls, repeat)))
    out.append(("plan: weighted, 2 targets + 2 fallbacks", best_us(plan("chat"), calls, repeat)))
    out.append(("plan: least-busy, 4 targets", best_us(plan("busy"), calls, repeat)))
    out.append(
        (
            "plan: one deployment + the request's 2 fallbacks",
            best_us(plan("solo", ["claude", "chat"]), calls, repeat),
        )
    )
    router.health.failure("a/gpt-4o-mini", 999.0, c.routing, retry_after_s=3600)
    out.append(("plan: weighted, 2 + 2, one target ejected", best_us(plan("chat"), calls, repeat)))
    route = router.route("solo")
    health, load, budget = router.health, router.load, route.budget

    def bookkeeping() -> None:
        budget.request(1000.0)
        health.start("a/x", 1000.0)
        load.started("a/x")
        load.ended("a/x")
        health.success("a/x", 1000.0)

    out.append(
        ("one attempt's bookkeeping (budget, health, load)", best_us(bookkeeping, calls, repeat))
    )

    async def requests() -> list[tuple[str, float]]:
        provider = OpenAIProvider()
        relay = Relay(InstantTransport(), Timeouts.of(c.providers["a"]), provider)
        relays = {name: relay for name in c.providers}
        dep = router.resolve("solo")

        async def before() -> None:  # what chat.py did before routing
            ctx = CallContext(dep, False, False, "chatcmpl-x", 1, response_format=None)
            await relay.complete(provider.build_request(BODY, ctx), ctx)

        async def after() -> None:  # the plan and the chain, as chat.py does now
            chain = Chain(
                router=router,
                plan=router.plan("solo", trio.current_time()),
                relays=relays,
                fetcher=None,
                body=BODY,
                stream=False,
                include_usage=False,
                request_id="chatcmpl-x",
                created=1,
                response_format=None,
            )
            await chain.complete()

        rounds = max(1, calls // 10)
        pairs = []
        for _ in range(2):  # alternate, so that drift affects both alike
            pairs.append(
                (
                    await best_async_us(before, rounds, repeat),
                    await best_async_us(after, rounds, repeat),
                )
            )
        b = min(p[0] for p in pairs)
        a = min(p[1] for p in pairs)
        return [
            ("request, one deployment: relay only (before routing)", b),
            ("request, one deployment: plan + chain + relay", a),
            ("  routing's share of it", a - b),
        ]

    out.extend(trio.run(requests))
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = parser_for(subparsers, "routing", "micro-benchmark of the routing decision", __doc__)
    parser.add_argument("--calls", type=at_least(int, 100), default=20_000, help="per timing")
    parser.add_argument(
        "--repeat", type=at_least(int, 1), default=7, help="timings; the best counts"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    rows = measure(args.calls, args.repeat)
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  us per call")
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f}")
    return 0
