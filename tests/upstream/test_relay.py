"""The relay against scripted upstreams on real loopback sockets, on both transports."""

from __future__ import annotations

import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import cast

import orjson
import pytest
import trio

from bench.fakes.server import Reply, Request, serve_http
from gateway.config import ProviderConfig, Transport
from gateway.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamFirstByteTimeout,
    UpstreamTimeout,
)
from gateway.openai.sse import DONE
from gateway.providers.base import CallContext, Provider
from gateway.providers.openai import OpenAIProvider
from gateway.upstream.pump import WriteNow
from gateway.upstream.relay import Outcome, Relay, Timeouts
from gateway.upstream.router import make_deployment
from gateway.upstream.transports import make_transport

Handler = Callable[[Request, Reply], Awaitable[None]]


@pytest.fixture(params=["h11", "h11+pump", "h11+partial", "httpx", "httpx+pump"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every relay behaviour holds on both upstream transports, and whether or not the
    writer can write at once ("+pump": the relay may hand the body to the worker's
    pump, upstream/pump.py, which it does on h11's plain-TCP chunked bodies;
    "+partial": every other such write is taken only in part)."""
    kind: str = request.param
    return kind


SSE = [("content-type", "text/event-stream")]
JSON = [("content-type", "application/json")]
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def chunk(content: str | None, reason: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    obj = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


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


@dataclass
class Upstream:
    relay: Relay
    provider: ProviderConfig
    pump: str = ""  # the writer can write at once: "pump", or "partial" (see `writer_now`)

    def ctx(self, stream: bool) -> CallContext:
        dep = make_deployment("m", self.provider, "m")
        return CallContext(dep, stream, False, "chatcmpl-t", 1)

    def writer_now(self, out: list[object]) -> WriteNow | None:
        """A write at once into `out`, as the server's is; "partial": every other
        piece longer than a byte is taken only in part, its rest left to an awaitable."""
        if not self.pump:
            return None
        pieces = [0]

        async def rest(data: bytes) -> None:
            await trio.lowlevel.checkpoint()
            out.append(data)

        def now(data: bytes) -> Awaitable[None] | None:
            pieces[0] += 1
            if self.pump == "partial" and len(data) > 1 and pieces[0] % 2:
                out.append(data[:1])
                return rest(data[1:])
            out.append(data)
            return None

        return now

    async def stream(self) -> tuple[bytes, Outcome]:
        ctx = self.ctx(True)
        req = self.relay.provider.build_request({**BODY, "stream": True}, ctx)
        out: list[bytes] = []

        async def write(data: bytes) -> None:
            out.append(data)

        now = self.writer_now(out)  # type: ignore[arg-type]
        outcome = await self.relay.stream(req, ctx, write, write_now=now)
        return b"".join(out), outcome

    async def complete(self) -> bytes:
        ctx = self.ctx(False)
        req = self.relay.provider.build_request(BODY, ctx)
        return (await self.relay.complete(req, ctx)).body


@asynccontextmanager
async def upstream(
    handler: Handler,
    kind: str,
    provider: Provider | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    **timeouts: float,
) -> AsyncIterator[Upstream]:
    """A scripted upstream on a free port, and a Relay pointed at it (`kind`: the
    transport, "+pump" if the writer can write at once); with `tls` (the server's
    context) over https, the client trusting what `ssl.create_default_context` trusts."""
    name, _, mode = kind.partition("+")
    async with trio.open_nursery() as nursery:
        serve = partial(serve_http, handler, "127.0.0.1", 0, ssl_context=tls)
        port = await nursery.start(serve)
        p = ProviderConfig(
            name="up",
            kind="openai",
            base_url=f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1",
            api_key="sk-up",
            first_byte_timeout_s=timeouts.get("first_byte_s", 2.0),
            idle_timeout_s=timeouts.get("idle_s", 2.0),
            total_timeout_s=timeouts.get("total_s", 5.0),
            transport=cast(Transport, name),
        )
        transport = make_transport(p, OpenAIProvider())
        try:
            relay = Relay(transport, Timeouts.of(p), provider or OpenAIProvider())
            yield Upstream(relay, p, mode)
        finally:
            await transport.aclose()
            nursery.cancel_scope.cancel()


async def test_done_reaches_the_client_even_if_the_upstream_lingers(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("hi") + chunk(None, "stop") + b"data: [DONE]\n\n")
        await trio.sleep(30)  # never ends its body

    async with upstream(handler, transport) as up:
        with trio.fail_after(1.5):
            out, outcome = await up.stream()
    assert out.endswith(b"data: [DONE]\n\n")
    assert outcome.error is None


async def test_content_and_error_in_one_read_keep_the_content(transport: str) -> None:
    error = b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("Hel") + chunk("lo") + error)
        await reply.end()

    async with upstream(handler, transport) as up:
        out, outcome = await up.stream()
    assert out.startswith(chunk("Hel") + chunk("lo"))
    assert b"boom" in out and not out.endswith(b"[DONE]\n\n")
    assert outcome.started and outcome.error is not None


async def test_error_before_any_content_raises_for_a_real_status(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, b'data: {"error": {"message": "bad", "code": 400}}\n\n')
        await reply.end()

    async with upstream(handler, transport) as up:
        with pytest.raises(GatewayError) as info:
            await up.stream()
    assert info.value.http_status == 400


async def test_upstream_is_asked_for_uncompressed_bodies(transport: str) -> None:
    seen: list[str] = []

    async def handler(request: Request, reply: Reply) -> None:
        seen.append(request.headers.get("accept-encoding", ""))
        if "gzip" in request.headers.get("accept-encoding", ""):
            await reply.send(200, [*JSON, ("content-encoding", "gzip")], gzip.compress(COMPLETION))
        else:
            await reply.send(200, JSON, COMPLETION)

    async with upstream(handler, transport) as up:
        assert orjson.loads(await up.complete())["choices"][0]["message"]["content"] == "hi"
    assert seen == ["identity"]


async def test_first_byte_timeout_applies_to_streams(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await trio.sleep(30)

    async with upstream(handler, transport, first_byte_s=0.3, total_s=5) as up:
        with trio.fail_after(2), pytest.raises(UpstreamFirstByteTimeout):
            await up.stream()


async def test_non_stream_answers_may_take_longer_than_the_first_byte_timeout(
    transport: str,
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await trio.sleep(0.6)  # a long generation: the headers come at the end
        await reply.send(200, JSON, COMPLETION)

    async with upstream(handler, transport, first_byte_s=0.2, total_s=5) as up:
        assert b'"hi"' in await up.complete()


async def test_non_stream_is_bounded_by_the_total_deadline(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await trio.sleep(30)

    async with upstream(handler, transport, first_byte_s=0.1, total_s=0.5) as up:
        with trio.fail_after(2), pytest.raises(UpstreamTimeout):
            await up.complete()


async def test_idle_gap_mid_stream_is_an_error_event(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("hi"))
        await trio.sleep(30)

    async with upstream(handler, transport, idle_s=0.4) as up:
        with trio.fail_after(2):
            out, outcome = await up.stream()
    assert isinstance(outcome.error, UpstreamTimeout)
    assert out.startswith(chunk("hi")) and b"upstream_timeout" in out


async def test_a_reset_after_the_request_was_read_is_one_attempt_that_was_sent(
    transport: str,
) -> None:
    """The relay never retries; it says the request went out, so the chain knows the
    upstream may have started on it (docs/reliability.md R1)."""
    attempts: list[int] = []

    async def handler(request: Request, reply: Reply) -> None:
        attempts.append(1)
        reply.abort()

    async with upstream(handler, transport) as up:
        with pytest.raises(UpstreamConnectionError) as info:
            await up.complete()
    assert info.value.http_status == 502 and info.value.sent
    assert len(attempts) == 1


async def test_an_error_status_is_one_attempt_carrying_the_upstream_status(
    transport: str,
) -> None:
    attempts: list[int] = []

    async def handler(request: Request, reply: Reply) -> None:
        attempts.append(1)
        await reply.send(529, JSON, b'{"error": {"message": "busy", "type": "overloaded_error"}}')

    async with upstream(handler, transport) as up:
        with pytest.raises(GatewayError) as info:
            await up.complete()
    assert info.value.http_status == 503 and info.value.upstream_status == 529
    assert len(attempts) == 1


async def test_an_error_event_before_any_content_carries_the_status_it_stands_for(
    transport: str,
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        error = b'data: {"error": {"message": "busy", "type": "server_error", "code": 503}}\n\n'
        await reply.start(200, SSE, error)
        await reply.end()

    async with upstream(handler, transport) as up:
        with pytest.raises(GatewayError) as info:
            await up.stream()
    assert info.value.upstream_status == info.value.http_status == 503


async def test_an_idle_gap_before_any_content_is_a_first_byte_timeout(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, b": nothing yet\n\n")
        await trio.sleep(30)

    async with upstream(handler, transport, idle_s=0.3) as up:
        with trio.fail_after(2), pytest.raises(UpstreamFirstByteTimeout):
            await up.stream()


async def test_a_deadline_passed_in_bounds_the_call(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await trio.sleep(30)

    async with upstream(handler, transport, total_s=30) as up:
        ctx = up.ctx(False)
        req = up.relay.provider.build_request(BODY, ctx)
        start = trio.current_time()
        with trio.fail_after(2), pytest.raises(UpstreamTimeout):
            await up.relay.complete(req, ctx, start + 0.3)
    assert trio.current_time() - start < 1


async def test_4xx_is_never_retried(transport: str) -> None:
    attempts: list[int] = []

    async def handler(request: Request, reply: Reply) -> None:
        attempts.append(1)
        await reply.send(
            400, JSON, b'{"error": {"message": "no", "type": "invalid_request_error"}}'
        )

    async with upstream(handler, transport) as up:
        with pytest.raises(GatewayError) as info:
            await up.complete()
    assert info.value.http_status == 400 and len(attempts) == 1
    assert info.value.upstream_status == 400


async def _stream_with_finish(up: Upstream, last: bool = False) -> tuple[list[object], Outcome]:
    """Run a stream, logging writes and the on_finish call in the order they happen
    (`last`: with a `write_last`, whose writes are logged as ("last", data))."""
    ctx = up.ctx(True)
    req = up.relay.provider.build_request({**BODY, "stream": True}, ctx)
    log: list[object] = []

    async def write(data: bytes) -> None:
        log.append(data)

    async def write_last(data: bytes) -> None:
        log.append(("last", data))

    async def on_finish(outcome: Outcome) -> None:
        log.append(("finish", outcome.usage, outcome.error))

    outcome = await up.relay.stream(
        req,
        ctx,
        write,
        on_finish,
        write_now=up.writer_now(log),
        write_last=write_last if last else None,
    )
    return log, outcome


USAGE = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
USAGE += b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'


async def test_on_finish_runs_with_usage_before_done_goes_out(transport: str) -> None:
    """R23: what on_finish records is durable before the client sees [DONE]."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("hi") + chunk(None, "stop") + USAGE + b"data: [DONE]\n\n")
        await reply.end()

    async with upstream(handler, transport) as up:
        log, _ = await _stream_with_finish(up)
    finishes = [i for i, e in enumerate(log) if isinstance(e, tuple)]
    assert len(finishes) == 1
    assert log[-1] == b"data: [DONE]\n\n" and finishes[0] == len(log) - 2
    entry = log[finishes[0]]
    assert isinstance(entry, tuple) and entry[1]["total_tokens"] == 5


async def test_on_finish_runs_before_a_mid_stream_error_event(transport: str) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("hi"))
        await trio.sleep(0.05)
        reply.abort()

    async with upstream(handler, transport) as up:
        log, outcome = await _stream_with_finish(up)
    assert isinstance(log[-2], tuple) and log[-2][2] is not None
    assert isinstance(log[-1], bytes) and b'"error"' in log[-1]
    assert outcome.error is not None


# ------------------------------------------------------------- the stream contract


class Scripted:
    """A translator that plays a script, whatever the upstream sent: each `feed` returns
    the next step's content and takes its error and end; `close` returns `tail` or
    fails with `tail_error`. It keeps the contract: content only."""

    def __init__(
        self,
        steps: list[tuple[list[bytes], GatewayError | None, bool]],
        tail: list[bytes] | None = None,
        tail_error: GatewayError | None = None,
    ) -> None:
        self.steps = steps
        self.tail = tail or []
        self.tail_error = tail_error
        self.usage: dict[str, int] | None = {"prompt_tokens": 1, "total_tokens": 1}
        self.error: GatewayError | None = None
        self.finished = False
        self.events = 0
        self.closed = 0

    def feed(self, data: bytes) -> bytes:
        items, self.error, self.finished = self.steps.pop(0) if self.steps else ([], None, False)
        self.events += len(items)
        return b"".join(items)

    def close(self) -> bytes:
        self.closed += 1
        self.error = self.tail_error
        if self.error is not None:
            return b""
        self.events += len(self.tail)
        return b"".join(self.tail)


class ScriptedProvider(OpenAIProvider):
    def __init__(self, translator: Scripted) -> None:
        self.translator = translator

    def new_stream_translator(self, ctx: CallContext) -> Scripted:  # type: ignore[override]
        return self.translator


A, B, U = b"data: a\n\n", b"data: b\n\n", b"data: usage\n\n"


async def _scripted(
    transport: str, translator: Scripted, linger: bool = False, last: bool = False
) -> tuple[list[object], Outcome] | GatewayError:
    """The writes and on_finish call of a stream through `translator`, or what it raised."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, b"x")
        if linger:
            await trio.sleep(30)
        await reply.end()

    async with upstream(handler, transport, ScriptedProvider(translator)) as up:
        with trio.fail_after(2):
            try:
                return await _stream_with_finish(up, last)
            except GatewayError as e:
                return e


async def test_the_last_event_alone_goes_to_write_last(transport: str) -> None:
    """The server writes the last event and the response's end together."""
    t = Scripted([([A, B], None, True)], tail=[U])
    result = await _scripted(transport, t, last=True)
    assert isinstance(result, tuple), result
    assert result[0] == [A + B, U, ("finish", t.usage, None), ("last", DONE)]


async def test_a_failure_after_content_is_the_last_event_to_write_last(transport: str) -> None:
    truncated = UpstreamError("cut", code="upstream_stream_truncated")
    t = Scripted([([A], None, False)], tail_error=truncated)
    result = await _scripted(transport, t, last=True)
    assert isinstance(result, tuple), result
    assert result[0] == [A, ("finish", t.usage, truncated), ("last", truncated.sse_event())]


async def test_the_relay_alone_writes_done_after_on_finish(transport: str) -> None:
    t = Scripted([([A, B], None, True)], tail=[U])
    result = await _scripted(transport, t, linger=True)  # finished: no wait for EOF
    assert isinstance(result, tuple), result
    log, outcome = result
    assert log == [A + B, U, ("finish", t.usage, None), DONE]
    assert t.closed == 1 and outcome.events == 3 and outcome.error is None


async def test_content_then_an_error_in_one_feed_ends_with_the_error_event(
    transport: str,
) -> None:
    error = UpstreamError("it broke")
    t = Scripted([([A], error, False)])
    result = await _scripted(transport, t)
    assert isinstance(result, tuple), result
    log, outcome = result
    assert log == [A, ("finish", t.usage, error), error.sse_event()]
    assert t.closed == 0  # nothing more is asked of a failed translator
    assert outcome.error is error and outcome.events == 1 and DONE not in log


async def test_a_failure_found_at_close_before_any_content_raises(transport: str) -> None:
    truncated = UpstreamError("cut", code="upstream_stream_truncated")
    t = Scripted([([], None, False)], tail_error=truncated)
    assert await _scripted(transport, t) is truncated  # raised: a real 502, no stream


async def test_a_failure_found_at_close_after_content_is_the_last_event(
    transport: str,
) -> None:
    truncated = UpstreamError("cut", code="upstream_stream_truncated")
    t = Scripted([([A], None, False)], tail_error=truncated)
    result = await _scripted(transport, t)
    assert isinstance(result, tuple), result
    log, outcome = result
    assert log == [A, ("finish", t.usage, truncated), truncated.sse_event()]
    assert outcome.events == 1


async def test_an_outcome_passed_in_is_filled_even_if_the_call_is_cancelled(
    transport: str,
) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, chunk("a") + chunk("b"))
        await trio.sleep(30)

    async with upstream(handler, transport) as up:
        ctx = up.ctx(True)
        req = up.relay.provider.build_request({**BODY, "stream": True}, ctx)
        outcome = Outcome()
        written: list[bytes] = []

        async def write(data: bytes) -> None:
            written.append(data)

        with trio.move_on_after(0.5):  # the client went away
            await up.relay.stream(req, ctx, write, None, outcome)
    assert b"".join(written) == chunk("a") + chunk("b")
    assert outcome.started and outcome.events == 2 and outcome.error is None


async def test_a_gateway_error_from_on_finish_is_the_last_event_and_settles_once(
    transport: str,
) -> None:
    refused = UpstreamError("the ledger refused it")
    calls: list[Outcome] = []
    written: list[bytes] = []

    async def handler(request: Request, reply: Reply) -> None:
        await reply.send(200, SSE, b"x")

    async def write(data: bytes) -> None:
        written.append(data)

    async def on_finish(outcome: Outcome) -> None:
        calls.append(outcome)
        raise refused

    t = Scripted([([A], None, True)])
    async with upstream(handler, transport, ScriptedProvider(t)) as up:
        ctx = up.ctx(True)
        req = up.relay.provider.build_request({**BODY, "stream": True}, ctx)
        outcome = await up.relay.stream(req, ctx, write, on_finish)
    assert written == [A, refused.sse_event()]
    assert len(calls) == 1 and outcome.error is refused
