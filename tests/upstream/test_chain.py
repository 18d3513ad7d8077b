"""The chain of attempts against scripted upstreams, on trio's mock clock.

Each deployment's transport plays the next outcome of one shared script (an answer,
an error status with or without Retry-After, a refused or reset connection, a hang,
a stream that breaks midway), so that the rules can be checked for any sequence of
outcomes: at most `max_attempts` attempts, none after a byte went downstream, all
inside the request's one deadline, and the retry budget never overspent.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config, parse_config
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamConnectionError,
    UpstreamError,
)
from gateway.providers.base import CallContext, Media, UpstreamRequest
from gateway.providers.openai import OpenAIProvider
from gateway.upstream.chain import Chain
from gateway.upstream.relay import Outcome, Relay, Timeouts
from gateway.upstream.retry_budget import WINDOW_S, RetryBudget
from gateway.upstream.router import Router

FIRST_BYTE_S = 1.0
TOTAL_S = 6.0

# -------------------------------------------------------------- scripted upstreams

Step = tuple[Any, ...]  # ("ok",), ("status", 503, retry_after | None), ("refused",), ...

COMPLETION = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)


def chunk(text: str) -> bytes:
    delta = {"content": text}
    obj = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class _Response:
    def __init__(self, status: int, headers: Mapping[str, str], parts: Sequence[Any]) -> None:
        self.status = status
        self.headers = headers
        self._parts = list(parts)

    async def next_chunk(self) -> bytes | None:
        await trio.lowlevel.checkpoint()
        if not self._parts:
            return None
        part = self._parts.pop(0)
        if isinstance(part, BaseException):
            raise part
        if isinstance(part, float):
            await trio.sleep(part)
            return await self.next_chunk()
        assert isinstance(part, bytes)
        return part


@dataclass
class Attempt:
    deployment: str
    at: float
    downstream_before: bool  # a byte had gone to the client before this attempt


@dataclass
class Script:
    """The outcomes to play, in order, whichever deployment is asked."""

    steps: list[Step]
    attempts: list[Attempt] = field(default_factory=list)
    written: bool = False  # set by the test's write callback

    def next(self, deployment: str) -> Step:
        self.attempts.append(Attempt(deployment, trio.current_time(), self.written))
        return self.steps.pop(0) if self.steps else ("ok",)


class ScriptedTransport:
    def __init__(self, script: Script) -> None:
        self.script = script

    @asynccontextmanager
    async def open(self, req: UpstreamRequest, ctx: CallContext) -> AsyncIterator[_Response]:
        step = self.script.next(ctx.deployment.model_id)
        await trio.lowlevel.checkpoint()
        kind = step[0]
        if kind == "refused":
            raise UpstreamConnectionError("refused", sent=False, code="upstream_unreachable")
        if kind == "reset":
            raise UpstreamConnectionError("reset", sent=True, code="upstream_unreachable")
        if kind == "hang":
            await trio.sleep_forever()
        if kind == "status":
            headers = {} if step[2] is None else {"retry-after": str(step[2])}
            body = b'{"error": {"message": "no", "type": "server_error"}}'
            yield _Response(step[1], headers, [body])
            return
        if kind == "slow":
            await trio.sleep(step[1])
        lost = UpstreamConnectionError("lost", sent=True, code="upstream_connection_lost")
        if req.stream:
            parts: list[Any] = [chunk("a"), 0.1, chunk("b")]
            parts += [lost] if kind == "midstream" else [b"data: [DONE]\n\n"]
            yield _Response(200, {"content-type": "text/event-stream"}, parts)
        else:
            yield _Response(
                200, {}, [COMPLETION[:10], lost] if kind == "midstream" else [COMPLETION]
            )

    async def aclose(self) -> None:
        return None

    def prune_idle(self) -> None:
        return None

    def connections(self) -> tuple[int, int] | None:
        return None


class RefusingProvider(OpenAIProvider):
    """OpenAI, but a deployment whose upstream model starts with "refuse" cannot take
    the request, and one starting with "media" needs the bytes of the URL below."""

    def media_urls(self, body: Any, ctx: CallContext) -> list[str]:
        return (
            ["https://img.example/cat.png"]
            if ctx.deployment.upstream_model.startswith("media")
            else []
        )

    def build_request(self, body: Any, ctx: CallContext) -> UpstreamRequest:
        if ctx.deployment.upstream_model.startswith("refuse"):
            raise InvalidRequest("this upstream cannot express that", param="tools")
        if ctx.deployment.upstream_model.startswith("media"):
            assert "https://img.example/cat.png" in ctx.media
        return super().build_request(body, ctx)


class CountingFetcher:
    def __init__(self) -> None:
        self.fetched: list[str] = []

    async def fetch_all(self, urls: Sequence[tuple[str, str]]) -> dict[str, Media]:
        self.fetched.extend(u for u, _ in urls)
        return {u: Media("image/png", b"png") for u, _ in urls}


def config(**model: Any) -> Config:
    provider = {
        "kind": "openai",
        "base_url": "http://scripted/v1",
        "first_byte_timeout_s": FIRST_BYTE_S,
        "idle_timeout_s": FIRST_BYTE_S,
        "total_timeout_s": TOTAL_S,
    }
    return parse_config(
        {
            "routing": {"backoff_base_ms": 100},
            "providers": {"p": provider, "q": provider},
            "models": {"m": {"strategy": "priority", "targets": ["p/a", "q/b"], **model}},
        },
        env={},
        source="t",
    )


@dataclass
class Setup:
    router: Router
    relays: dict[str, Relay]
    script: Script
    fetcher: CountingFetcher


def setup(script: Script, c: Config) -> Setup:
    provider = RefusingProvider()
    relays = {
        name: Relay(ScriptedTransport(script), Timeouts.of(p), provider)
        for name, p in c.providers.items()
    }
    return Setup(Router(c, rand=random.Random(0).random), relays, script, CountingFetcher())


def make_chain(s: Setup, stream: bool, model: str = "m", **kw: Any) -> Chain:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return Chain(
        router=s.router,
        plan=s.router.plan(model, trio.current_time(), kw.pop("fallbacks", None)),
        relays=s.relays,
        fetcher=s.fetcher,  # type: ignore[arg-type]
        body=body,
        stream=stream,
        include_usage=False,
        request_id="chatcmpl-t",
        created=1,
        response_format=None,
        rand=random.Random(1).random,
        **kw,
    )


async def run(s: Setup, stream: bool, model: str = "m") -> tuple[Chain, Outcome | GatewayError]:
    """One request through the chain: what it ended with (an answer or what it raised)."""
    chain = make_chain(s, stream, model)

    async def write(data: bytes) -> None:
        s.script.written = True

    try:
        if stream:
            return chain, await chain.stream_to(write)
        await chain.complete()
        return chain, Outcome(started=True)
    except GatewayError as e:
        return chain, e


def play(steps: list[Step], stream: bool, **model: Any) -> tuple[Script, Chain, Any, float]:
    """Run one request on the mock clock; the script, chain, result and time taken."""
    script = Script(list(steps))
    out: list[Any] = []

    async def main() -> None:
        s = setup(script, config(**model))
        start = trio.current_time()
        chain, result = await run(s, stream)
        out.extend([chain, result, trio.current_time() - start])

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return script, out[0], out[1], out[2]


# ------------------------------------------------------------------ the rules, case by case


def test_a_retryable_status_moves_to_the_next_target() -> None:
    script, chain, result, _ = play([("status", 503, None)], stream=False)
    assert [a.deployment for a in script.attempts] == ["p/a", "q/b"]
    assert chain.deployment.model_id == "q/b" and chain.attempts == 2
    assert isinstance(result, Outcome)


def test_a_retry_after_within_the_limit_is_waited_for_on_the_same_deployment() -> None:
    script, chain, _, took = play(
        [("status", 429, 2), ("status", 500, None)], stream=False, targets=["p/a"]
    )
    assert [a.deployment for a in script.attempts] == ["p/a", "p/a", "p/a"]
    assert script.attempts[1].at - script.attempts[0].at >= 2  # its Retry-After
    assert chain.attempts == 3 and took < TOTAL_S


def test_a_retry_after_beyond_the_limit_moves_on_without_waiting() -> None:
    script, _, _, took = play([("status", 429, 60)], stream=False)
    assert [a.deployment for a in script.attempts] == ["p/a", "q/b"]
    assert took < 0.01


def test_a_long_retry_after_and_no_other_target_returns_the_429() -> None:
    script, _, result, took = play([("status", 429, 60)], stream=False, targets=["p/a"])
    assert isinstance(result, GatewayError) and result.http_status == 429
    assert len(script.attempts) == 1 and took < 0.01


def test_answers_about_the_request_return_at_once() -> None:
    script, chain, result, _ = play([("status", 400, None)], stream=True)
    assert isinstance(result, GatewayError) and result.http_status == 400
    assert len(script.attempts) == 1 and chain.deployment.model_id == "p/a"


def test_a_sent_non_streamed_request_is_not_retried_unless_the_model_says_so() -> None:
    script, _, result, _ = play([("reset",)], stream=False)
    assert isinstance(result, UpstreamError) and len(script.attempts) == 1
    script, chain, result, _ = play([("reset",)], stream=False, retry_after_send=True)
    assert isinstance(result, Outcome) and chain.attempts == 2


def test_a_midstream_failure_is_never_retried() -> None:
    script, _, result, _ = play([("midstream",)], stream=True)
    assert isinstance(result, Outcome) and result.started and result.error is not None
    assert len(script.attempts) == 1


def test_the_budget_stops_retries() -> None:
    script, _, result, _ = play(
        [("status", 500, None)] * 5, stream=False, retry_budget_ratio=0, retry_budget_min_per_s=0
    )
    assert len(script.attempts) == 1 and isinstance(result, GatewayError)


def test_a_deployment_that_cannot_take_the_request_is_skipped() -> None:
    script, chain, result, _ = play([], stream=False, targets=["p/refuse", "q/b"])
    assert [a.deployment for a in script.attempts] == ["q/b"] and chain.attempts == 1
    script, chain, result, _ = play([], stream=False, targets=["p/refuse"])
    assert isinstance(result, InvalidRequest) and not script.attempts


def test_media_is_fetched_once_for_all_attempts() -> None:
    script = Script([("status", 503, None), ("status", 503, None)])

    async def main() -> None:
        s = setup(script, config(targets=["p/media-a", "q/media-b"]))
        chain, result = await run(s, stream=False)
        assert isinstance(result, Outcome) and chain.attempts == 3
        assert s.fetcher.fetched == ["https://img.example/cat.png"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_cancelling_the_request_stops_the_chain_at_once_and_frees_the_probe() -> None:
    script = Script([("hang",)])

    async def main() -> None:
        s = setup(script, config(targets=["p/a"]))
        for _ in range(5):
            s.router.health.failure("p/a", trio.current_time(), s.router.route("m").policy)
        await trio.sleep(10)  # the cooldown ends: the next attempt is the probe
        chain = make_chain(s, stream=False)
        with trio.move_on_after(0.5):  # the client went away
            await chain.complete()
        assert len(script.attempts) == 1
        assert s.router.health.start("p/a", trio.current_time())  # the probe slot is free

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_failures_eject_and_the_next_requests_skip_the_deployment() -> None:
    script = Script([("status", 503, None)] * 5)

    async def main() -> None:
        s = setup(script, config(max_attempts=1))
        for _ in range(5):
            await run(s, stream=False)
        before = len(script.attempts)
        chain, _ = await run(s, stream=False)
        assert chain.deployment.model_id == "q/b" and len(script.attempts) == before + 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# ------------------------------------------------------------------ the rules, for any outcomes

STEPS = st.one_of(
    st.just(("ok",)),
    st.tuples(st.just("status"), st.sampled_from([400, 404, 429, 500, 503, 529]),
              st.one_of(st.none(), st.sampled_from([0, 1, 3, 60]))),
    st.just(("refused",)),
    st.just(("reset",)),
    st.just(("hang",)),
    st.just(("midstream",)),
    st.tuples(st.just("slow"), st.floats(0, 4)),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(STEPS, max_size=30),
    stream=st.booleans(),
    max_attempts=st.integers(1, 6),
    requests=st.integers(1, 4),
    ratio=st.sampled_from([0.0, 0.2, 1.0]),
    floor=st.sampled_from([0.0, 0.1, 3.0]),
)
def test_for_any_outcomes_the_chain_keeps_its_rules(
    steps: list[Step], stream: bool, max_attempts: int, requests: int, ratio: float, floor: float
) -> None:
    script = Script(list(steps))
    c = config(max_attempts=max_attempts, retry_budget_ratio=ratio, retry_budget_min_per_s=floor)

    async def main() -> None:
        s = setup(script, c)
        route = s.router.route("m")
        budget = route.budget = CheckedBudget(ratio, floor)
        for _ in range(requests):
            script.written = False
            before = len(script.attempts)
            start = trio.current_time()
            chain, _ = await run(s, stream)
            mine = script.attempts[before:]
            assert len(mine) == chain.attempts <= max_attempts
            assert not any(a.downstream_before for a in mine)  # nothing after a byte went out
            assert trio.current_time() - start <= TOTAL_S + 1e-9  # one deadline for all
            now = trio.current_time()
            assert budget.allowance(now) == ratio * budget.requests + floor * WINDOW_S

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class CheckedBudget(RetryBudget):
    """A retry budget that checks, whenever it grants a retry, that the window's
    retries stay within its allowance. (Checked later, the window may have moved past
    the requests that paid for retries still in it: a sliding window's nature.)"""

    __slots__ = ()

    def try_retry(self, now: float) -> bool:
        granted = super().try_retry(now)
        if granted:
            assert self.retries <= self.ratio * self.requests + self.min_per_s * WINDOW_S + 1e-9
        return granted


@pytest.mark.parametrize("stream", [False, True])
def test_hangs_everywhere_end_at_the_deadline(stream: bool) -> None:
    script, chain, result, took = play([("hang",)] * 10, stream=stream, max_attempts=10)
    assert isinstance(result, GatewayError) and result.http_status == 504
    assert took == pytest.approx(TOTAL_S)
    # A stream's attempts each end at the first-byte timeout; a non-streamed one has none.
    assert chain.attempts == (1 if not stream else len(script.attempts))
    assert stream is (chain.attempts > 1)
