"""H11Transport against scripted upstreams on real loopback sockets (pytest-trio).

Connections are counted server-side: every stream a `trio.SocketListener` accepts is
recorded (the client side only connects, it never accepts).
"""

from __future__ import annotations

import gc
import itertools
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import h11
import orjson
import pytest
import trio

from bench.fakes.openai import FakeOpenAI
from bench.fakes.server import Reply, Request, serve_http
from gateway.config import ProviderConfig
from gateway.errors import UpstreamConnectionError, UpstreamConnectTimeout, UpstreamError
from gateway.providers.base import CallContext, UpstreamRequest
from gateway.providers.openai import OpenAIProvider
from gateway.upstream.h11_pool import MAX_HEAD_BYTES, USER_AGENT, H11Transport
from gateway.upstream.relay import Relay, Timeouts
from gateway.upstream.router import make_deployment
from tests.tls import tls_server

Handler = Callable[[Request, Reply], Awaitable[None]]
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream")]
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
DONE_EVENTS = (
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def provider(port: int, scheme: str = "http", **kw: Any) -> ProviderConfig:
    base_url = f"{scheme}://127.0.0.1:{port}/v1"
    return ProviderConfig(name="up", kind="openai", base_url=base_url, api_key="sk-up", **kw)


CTX = CallContext(make_deployment("m", provider(1), "m"), False, False, "chatcmpl-t", 1)


def post(
    port: int,
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    scheme: str = "http",
    path: str = "/v1/chat/completions",
) -> UpstreamRequest:
    return UpstreamRequest(
        url=f"{scheme}://127.0.0.1:{port}{path}",
        headers={"content-type": "application/json", **(headers or {})},
        body=body,
        stream=False,
    )


async def fetch(transport: H11Transport, req: UpstreamRequest) -> tuple[int, dict[str, str], bytes]:
    """One whole exchange: status, headers and the body read to its end."""
    async with transport.open(req, CTX) as resp:
        parts = []
        while (chunk := await resp.next_chunk()) is not None:
            parts.append(chunk)
        return resp.status, dict(resp.headers), b"".join(parts)


@pytest.fixture
def accepted(monkeypatch: pytest.MonkeyPatch) -> list[trio.SocketStream]:
    """Every TCP connection accepted by a server in this test, in order."""
    streams: list[trio.SocketStream] = []
    original = trio.SocketListener.accept

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        stream = await original(self)
        streams.append(stream)
        return stream

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    return streams


def still_open(streams: list[trio.SocketStream]) -> int:
    return sum(s.socket.fileno() != -1 for s in streams)


async def eventually(condition: Callable[[], bool], within_s: float = 1.0) -> None:
    """Wait until `condition()` holds, failing the test after `within_s`."""
    with trio.fail_after(within_s):
        for _ in itertools.count():
            if condition():
                return
            await trio.sleep(0.005)


async def wait_closed(stream: trio.SocketStream, within_s: float = 1.0) -> None:
    """Wait until the server has closed its side (it saw our EOF or reset)."""
    await eventually(lambda: stream.socket.fileno() == -1, within_s)


@asynccontextmanager
async def serving(handler: Handler, **kw: Any) -> AsyncIterator[int]:
    """`handler` on a scripted HTTP server on a free loopback port."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(partial(serve_http, handler, "127.0.0.1", 0, **kw))
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def transport_for(
    port: int, *, idle_expiry_s: float = 30.0, **kw: Any
) -> AsyncIterator[H11Transport]:
    transport = H11Transport(provider(port, **kw), idle_expiry_s=idle_expiry_s)
    try:
        yield transport
    finally:
        await transport.aclose()


@asynccontextmanager
async def raw_server(
    answer: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server that reads one request head, then runs `answer` and closes."""

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        with trio.move_on_after(2):
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await answer(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def ok(request: Request, reply: Reply) -> None:
    await reply.send(200, JSON, b'{"ok":true}')


# -------------------------------------------------------------------------- keep-alive


async def test_sequential_requests_reuse_one_connection(accepted: list[trio.SocketStream]) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        if request.path.endswith("/stream"):
            await reply.start(200, SSE, b"data: 1\n\n")
            await reply.write(b"data: 2\n\n")
            await reply.end()
        else:
            await reply.send(200, JSON, b'{"n":%d}' % len(request.body))

    async with serving(handler) as port, transport_for(port) as transport:
        for _ in range(3):
            assert await fetch(transport, post(port)) == (
                200,
                {"content-type": "application/json", "content-length": "8"},
                b'{"n":%d}' % len(BODY),
            )
            status, _, body = await fetch(transport, post(port, path="/v1/stream"))
            assert (status, body) == (200, b"data: 1\n\ndata: 2\n\n")
    assert len(accepted) == 1


async def test_request_headers_are_ours_for_framing_and_encoding() -> None:
    seen: list[Request] = []

    async def handler(request: Request, reply: Reply) -> None:
        seen.append(request)
        await reply.send(200, JSON, b"{}")

    async with serving(handler) as port, transport_for(port) as transport:
        caller = {"Authorization": "Bearer k", "Accept-Encoding": "gzip", "Connection": "close"}
        await fetch(transport, post(port, headers=caller))
        await fetch(transport, post(port, body=b"", headers={"User-Agent": "mine/1"}))
    first, second = seen
    assert first.method == "POST" and first.target == "/v1/chat/completions"
    assert first.headers["host"] == f"127.0.0.1:{port}"
    assert first.headers["content-length"] == str(len(BODY)) and first.body == BODY
    assert first.headers["accept-encoding"] == "identity"
    assert first.headers["user-agent"] == USER_AGENT
    assert first.headers["authorization"] == "Bearer k"
    assert "connection" not in first.headers  # the caller cannot turn keep-alive off
    assert second.headers["user-agent"] == "mine/1"
    assert second.headers["content-length"] == "0" and second.body == b""


async def test_response_header_names_are_lower_case_and_repeats_joined() -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.send(200, [("X-Thing", "a"), ("x-thing", "b"), ("Retry-After", "3")], b"")

    async with serving(handler) as port, transport_for(port) as transport:
        _, headers, _ = await fetch(transport, post(port))
    assert headers["x-thing"] == "a, b" and headers["retry-after"] == "3"


async def test_idle_connections_expire(accepted: list[trio.SocketStream]) -> None:
    async with serving(ok) as port, transport_for(port, idle_expiry_s=0.1) as transport:
        await fetch(transport, post(port))
        await trio.sleep(0.2)
        await fetch(transport, post(port))
        assert len(accepted) == 2
        await wait_closed(accepted[0])  # the expired one was closed, not leaked


async def test_prune_idle_closes_expired_and_server_closed_connections(
    accepted: list[trio.SocketStream],
) -> None:
    """What the gateway's timer calls (gateway/state.py): no request needed."""
    async with serving(ok) as port, transport_for(port, idle_expiry_s=0.2) as transport:
        async with trio.open_nursery() as n:  # two connections at once, both pooled after
            for _ in range(2):
                n.start_soon(fetch, transport, post(port))
        assert len(accepted) == 2
        await accepted[1].aclose()  # the server closes one: ours sits in CLOSE_WAIT
        await trio.sleep(0.05)
        transport.prune_idle()
        idle = [c for pool in transport._pools.values() for c in pool.idle]
        assert len(idle) == 1  # the one the server closed is let go at once
        assert idle[0].sock.fileno() != -1
        await trio.sleep(0.25)
        transport.prune_idle()
        await wait_closed(accepted[0])  # the expired one too
        assert idle[0].sock.fileno() == -1


async def test_aclose_closes_pooled_connections(accepted: list[trio.SocketStream]) -> None:
    async with serving(ok) as port:
        transport = H11Transport(provider(port))
        await fetch(transport, post(port))
        await transport.aclose()
        await wait_closed(accepted[0])
        with pytest.raises(UpstreamError):
            await fetch(transport, post(port))


# -------------------------------------------------------------------------- pool limit


async def test_pool_limit_holds_under_concurrency(accepted: list[trio.SocketStream]) -> None:
    active = 0
    peak = 0
    peak_open = 0

    async def handler(request: Request, reply: Reply) -> None:
        nonlocal active, peak, peak_open
        active += 1
        peak = max(peak, active)
        peak_open = max(peak_open, still_open(accepted))
        await trio.sleep(0.03)
        active -= 1
        await reply.send(200, JSON, b"{}")

    async with serving(handler) as port, transport_for(port, max_connections=2) as transport:
        results: list[int] = []

        async def one() -> None:
            results.append((await fetch(transport, post(port)))[0])

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(one)
    assert results == [200] * 10
    assert peak == 2 and peak_open <= 2 and len(accepted) == 2


async def test_cancelled_wait_for_a_slot_leaves_the_pool_consistent(
    accepted: list[trio.SocketStream],
) -> None:
    release = trio.Event()
    active = 0
    peak = 0

    async def handler(request: Request, reply: Reply) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if request.path.endswith("/slow"):
            await release.wait()
        if request.path.endswith("/hang"):
            await trio.sleep_forever()
        await trio.sleep(0.01)
        active -= 1
        await reply.send(200, JSON, b"{}")

    async with serving(handler) as port, transport_for(port, max_connections=1) as transport:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, transport, post(port, path="/slow"))
            await trio.sleep(0.05)  # the only slot is taken
            with trio.move_on_after(0.1) as waiting:
                await fetch(transport, post(port))
            assert waiting.cancelled_caught
            release.set()
        with trio.move_on_after(0.1) as waiting:  # cancelled while holding the slot
            await fetch(transport, post(port, path="/hang"))
        assert waiting.cancelled_caught
        active = 0
        with trio.fail_after(3):  # a leaked slot would hang here
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(fetch, transport, post(port))
    assert peak == 1 and len(accepted) == 2  # no slot was doubled either


# -------------------------------------------------------------------------- closing early


async def test_leaving_a_stream_early_closes_its_connection(
    accepted: list[trio.SocketStream],
) -> None:
    gone = trio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        if request.path.endswith("/quick"):
            await reply.send(200, JSON, b"{}")
            return
        try:
            await reply.start(200, SSE, b"data: 1\n\n")
            await trio.sleep(30)  # still generating
        finally:
            if reply.client_gone:
                gone.set()

    async with serving(handler) as port, transport_for(port) as transport:
        async with transport.open(post(port), CTX) as resp:
            assert await resp.next_chunk() == b"data: 1\n\n"
        with trio.fail_after(1):
            await gone.wait()
        await fetch(transport, post(port, path="/v1/quick"))
    assert len(accepted) == 2  # the abandoned connection was not reused


async def test_cancelled_while_waiting_for_headers_closes_the_connection(
    accepted: list[trio.SocketStream],
) -> None:
    fake = FakeOpenAI()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake.serve)
        async with transport_for(port) as transport:
            body = orjson.dumps({"model": "m@hang", "messages": [{"role": "user", "content": "x"}]})
            with trio.move_on_after(0.2) as waiting:
                await fetch(transport, post(port, body=body, headers=auth()))
            assert waiting.cancelled_caught
            await eventually(lambda: fake.disconnects == 1)
            assert (await fetch(transport, post(port, headers=auth())))[0] == 200
        nursery.cancel_scope.cancel()
    assert len(accepted) == 2


def auth() -> dict[str, str]:
    return {"authorization": "Bearer sk-fake-upstream"}


async def test_done_followed_by_its_terminator_keeps_the_connection(
    accepted: list[trio.SocketStream],
) -> None:
    """The Relay stops at [DONE]; a terminator that has already arrived is read."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE)
        await reply.end(DONE_EVENTS)  # last event and the chunked terminator in one write

    async with serving(handler) as port, transport_for(port) as transport:
        relay = Relay(transport, Timeouts(1, 1, 2), OpenAIProvider())
        for _ in range(3):
            out: list[bytes] = []
            outcome = await relay.stream(post(port), CTX, _appender(out))
            assert outcome.error is None and b"".join(out).endswith(b"data: [DONE]\n\n")
    assert len(accepted) == 1


async def test_a_terminator_right_behind_done_keeps_the_connection(
    accepted: list[trio.SocketStream],
) -> None:
    """The terminator comes in a later write, while the transport drains."""
    seen_done: list[trio.Event] = []  # one per request

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, DONE_EVENTS)
        await seen_done[-1].wait()  # the relay has the [DONE] and is leaving the exchange
        await reply.end()

    async def write(data: bytes) -> None:
        if data.endswith(b"data: [DONE]\n\n"):
            seen_done[-1].set()

    async with serving(handler) as port, transport_for(port) as transport:
        relay = Relay(transport, Timeouts(1, 1, 2), OpenAIProvider())
        for _ in range(2):
            seen_done.append(trio.Event())
            outcome = await relay.stream(post(port), CTX, write)
            assert outcome.error is None
    assert len(accepted) == 1


async def test_an_upstream_lingering_after_done_is_not_waited_for(
    accepted: list[trio.SocketStream],
) -> None:
    gone = trio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        try:
            await reply.start(200, SSE, DONE_EVENTS)
            await trio.sleep(30)
        finally:
            if reply.client_gone:
                gone.set()

    async with serving(handler) as port, transport_for(port) as transport:
        relay = Relay(transport, Timeouts(1, 1, 2), OpenAIProvider())
        start = trio.current_time()
        outcome = await relay.stream(post(port), CTX, _appender([]))
        assert outcome.error is None and trio.current_time() - start < 0.5
        with trio.fail_after(1):
            await gone.wait()


def _appender(out: list[bytes]) -> Callable[[bytes], Awaitable[None]]:
    async def write(data: bytes) -> None:
        out.append(data)

    return write


# -------------------------------------------------------------------------- stale and resets


async def test_a_connection_the_server_closed_while_idle_is_not_used(
    accepted: list[trio.SocketStream],
) -> None:
    async with serving(ok, idle_timeout_s=0.1) as port, transport_for(port) as transport:
        await fetch(transport, post(port))
        await wait_closed(accepted[0])  # the server dropped the idle keep-alive connection
        await trio.sleep(0.05)  # let the FIN reach the client socket
        # No retry layer here: the stale connection must have been detected and skipped.
        assert (await fetch(transport, post(port)))[0] == 200
    assert len(accepted) == 2


async def test_a_reset_after_the_request_was_read_says_it_was_sent() -> None:
    """The server read the whole request, then reset: it may have started on it."""

    async def handler(request: Request, reply: Reply) -> None:
        reply.abort()

    async with serving(handler) as port, transport_for(port) as transport:
        with pytest.raises(UpstreamConnectionError) as info:
            await fetch(transport, post(port))
    error = info.value
    assert error.code == "upstream_unreachable" and error.http_status == 502
    assert "Could not reach the upstream 'up'" in error.message
    assert error.sent


async def test_a_write_to_a_connection_the_server_reset_says_nothing_was_sent(
    accepted: list[trio.SocketStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection the server reset while idle, reused before the poll could see
    it: the write fails, nothing is read, so the request never reached the server."""
    async with serving(ok) as port, transport_for(port) as transport:
        await fetch(transport, post(port))
        [pool] = transport._pools.values()
        [conn] = pool.idle
        server_side = accepted[0]
        server_side.socket.setsockopt(
            trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        server_side.socket.close()  # an RST
        await trio.sleep(0.05)
        monkeypatch.setattr(type(conn), "readable", lambda self: False)
        with pytest.raises(UpstreamConnectionError) as info:
            await fetch(transport, post(port, body=b"x" * 300_000))
    assert not info.value.sent and info.value.code == "upstream_unreachable"


async def test_a_reset_mid_body_fails_next_chunk(accepted: list[trio.SocketStream]) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        if request.path.endswith("/quick"):
            await reply.send(200, JSON, b"{}")
            return
        await reply.start(200, SSE, b"data: 1\n\n")
        await trio.sleep(0.05)
        reply.abort()

    async with serving(handler) as port, transport_for(port) as transport:
        async with transport.open(post(port), CTX) as resp:
            assert await resp.next_chunk() == b"data: 1\n\n"
            with pytest.raises(UpstreamError) as info:
                await resp.next_chunk()
            assert info.value.code == "upstream_connection_lost"
        await fetch(transport, post(port, path="/v1/quick"))
    assert len(accepted) == 2


async def test_eof_inside_a_content_length_body_fails_next_chunk() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        await stream.aclose()

    async with (
        raw_server(answer) as port,
        transport_for(port) as transport,
        transport.open(post(port), CTX) as resp,
    ):
        assert await resp.next_chunk() == b"only ten b"
        with pytest.raises(UpstreamError) as info:
            await resp.next_chunk()
    assert info.value.code == "upstream_connection_lost"


async def test_eof_after_part_of_the_head_is_not_retryable() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-ty")
        await stream.aclose()

    async with raw_server(answer) as port, transport_for(port) as transport:
        with pytest.raises(UpstreamConnectionError) as info:
            await fetch(transport, post(port))
    assert info.value.code == "upstream_connection_lost" and info.value.sent


# -------------------------------------------------------------------------- framing


async def test_chunked_body_arrives_chunk_by_chunk() -> None:
    step = trio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(200, SSE, b"first")
        await step.wait()
        await reply.write(b"second")
        await reply.end(b"third")

    async with (
        serving(handler) as port,
        transport_for(port) as transport,
        transport.open(post(port), CTX) as resp,
    ):
        assert resp.headers["transfer-encoding"] == "chunked"
        assert await resp.next_chunk() == b"first"  # before the rest was even written
        step.set()
        rest = b""
        while (chunk := await resp.next_chunk()) is not None:
            rest += chunk
        assert rest == b"secondthird"
        assert await resp.next_chunk() is None


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"5\r\nhello\r\nzz\r\n", "malformed"),  # a chunk size that is not hex
        (b"5\r\nhelloXX", "malformed"),  # no CRLF after a chunk's data
        (b"5\r\nhello\r\n", "closed early"),  # EOF before the last chunk
    ],
)
async def test_a_broken_chunked_body_fails_next_chunk(wire: bytes, why: str) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + wire)
        await stream.aclose()

    async with (
        raw_server(answer) as port,
        transport_for(port) as transport,
        transport.open(post(port), CTX) as resp,
    ):
        with pytest.raises(UpstreamError) as info:
            while await resp.next_chunk() is not None:
                pass
    assert info.value.code == "upstream_connection_lost"
    assert why in info.value.message


async def test_bytes_after_a_chunked_body_are_not_taken_for_a_clean_connection(
    accepted: list[trio.SocketStream],
) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGARBAGE"
        )
        await trio.sleep_forever()  # a reused connection would get no answer

    async with raw_server(answer) as port, transport_for(port) as transport:
        assert (await fetch(transport, post(port)))[2] == b"hi"
        assert (await fetch(transport, post(port)))[2] == b"hi"
    assert len(accepted) == 2  # the first connection was not reused


async def test_close_delimited_body_is_read_to_eof_and_not_reused(
    accepted: list[trio.SocketStream],
) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello ")
        await trio.sleep(0.02)
        await stream.send_all(b"world")
        await stream.aclose()

    async with raw_server(answer) as port, transport_for(port) as transport:
        assert (await fetch(transport, post(port)))[2] == b"hello world"
        assert (await fetch(transport, post(port)))[2] == b"hello world"
    assert len(accepted) == 2


async def test_interim_100_continue_is_skipped() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
        )

    async with raw_server(answer) as port, transport_for(port) as transport:
        assert await fetch(transport, post(port)) == (201, {"content-length": "2"}, b"ok")


async def test_a_huge_response_head_is_an_error_not_a_memory_blowup() -> None:
    sent = 0
    finished = False

    async def answer(stream: trio.SocketStream) -> None:
        nonlocal sent, finished
        await stream.send_all(b"HTTP/1.1 200 OK\r\nx-big: ")
        piece = b"a" * 65536
        for _ in range(1024):  # 64 MiB of one header, if anyone would take it
            await stream.send_all(piece)
            sent += len(piece)
        finished = True

    async with raw_server(answer) as port, transport_for(port) as transport:
        with pytest.raises(UpstreamError) as info:
            await fetch(transport, post(port))
        await trio.sleep(0.1)
    assert info.value.code == "upstream_protocol_error"
    assert str(MAX_HEAD_BYTES) in info.value.message
    assert not finished and sent < 16 * 1024 * 1024  # we stopped reading and hung up


async def test_a_malformed_status_line_is_an_error() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SMTP ready\r\n\r\n")

    async with raw_server(answer) as port, transport_for(port) as transport:
        with pytest.raises(UpstreamError) as info:
            await fetch(transport, post(port))
    assert info.value.code == "upstream_protocol_error"


async def test_an_early_answer_to_a_large_body_is_read() -> None:
    """A server refusing a big body (413) before reading it: its answer reaches us."""
    async with (
        serving(ok, max_body_bytes=1000) as port,
        transport_for(port) as transport,
    ):
        status, _, body = await fetch(transport, post(port, body=b"x" * 300_000))
    assert status == 413 and b"body over 1000 bytes" in body


# -------------------------------------------------------------------------- connecting


async def test_connection_refused_says_nothing_was_sent() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with transport_for(port) as transport:
        with pytest.raises(UpstreamConnectionError) as info:
            await fetch(transport, post(port))
    assert info.value.code == "upstream_unreachable" and not info.value.sent
    assert info.value.message == "Could not reach the upstream 'up' (ConnectError)."


async def test_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError

    monkeypatch.setattr(trio, "open_tcp_stream", never)
    async with transport_for(9, connect_timeout_s=0.1) as transport:
        with trio.fail_after(1), pytest.raises(UpstreamConnectTimeout) as info:
            await fetch(transport, post(9))
    assert info.value.code == "upstream_timeout" and info.value.http_status == 504


async def test_tcp_nodelay_is_set() -> None:
    async with serving(ok) as port, transport_for(port) as transport:
        await fetch(transport, post(port))
        [pool] = transport._pools.values()
        [conn] = pool.idle
        assert conn.sock.getsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY)


# -------------------------------------------------------------------------- https


async def test_https_keep_alive_with_alpn_http11(
    certificate: tuple[Path, Path], trust_certificate: None
) -> None:
    handshakes: list[str | None] = []

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
            handshakes.append(stream.selected_alpn_protocol())
            conn = h11.Connection(h11.SERVER)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.EndOfMessage):
                    body = b'{"tls":true}'
                    head = h11.Response(status_code=200, headers=[("content-length", "12")])
                    await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)))
                    conn.send(h11.EndOfMessage())
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with tls_server(certificate, handle, alpn=("h2", "http/1.1")) as port:
        transport = H11Transport(provider(port, scheme="https"))
        try:
            for _ in range(3):
                result = await fetch(transport, post(port, scheme="https"))
                assert result[0] == 200 and result[2] == b'{"tls":true}'
        finally:
            await transport.aclose()
    assert handshakes == ["http/1.1"]  # one connection, and it never offered h2


async def test_an_https_connection_whose_tls_session_ended_with_the_body_is_not_reused(
    certificate: tuple[Path, Path], trust_certificate: None
) -> None:
    """The server ends the TLS session (close_notify) with the response's last bytes,
    in one segment, and keeps the TCP connection open (awaiting our close_notify, as
    a two-way TLS shutdown does): the socket is not readable, but the connection is
    over and must not carry the next request (which would fail as if sent)."""
    connections = 0

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        nonlocal connections
        connections += 1
        conn = h11.Connection(h11.SERVER)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(65536)))
            head = h11.Response(status_code=200, headers=[("content-length", "12")])
            tls = stream._ssl_object  # the response and close_notify, written together
            tls.write(conn.send(head) + conn.send(h11.Data(data=b'{"tls":true}')))
            with suppress(ssl.SSLWantReadError):
                tls.unwrap()
            held = stream._delayed_outgoing or b""  # trio's server holds back its tickets
            await stream.transport_stream.send_all(held + stream._outgoing.read())
            await trio.sleep(30)

    async with tls_server(certificate, handle) as port:
        transport = H11Transport(provider(port, scheme="https"))
        try:
            for _ in range(2):
                with trio.fail_after(2):
                    result = await fetch(transport, post(port, scheme="https"))
                assert result[0] == 200 and result[2] == b'{"tls":true}'
                await trio.sleep(0.05)  # the server has nothing more to send
        finally:
            await transport.aclose()
    assert connections == 2


async def test_a_host_name_tls_refuses_is_unreachable_and_leaks_no_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name the resolver answers but TLS refuses as a server name (here a leading
    dot): the connect fails like any other, its socket closed (an unclosed one is a
    ResourceWarning, an error in this suite)."""
    async with trio.open_nursery() as nursery:

        async def idle(stream: trio.SocketStream) -> None:
            await trio.sleep_forever()

        [listener] = await nursery.start(partial(trio.serve_tcp, idle, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        connect = trio.open_tcp_stream

        async def resolved(host: str, port: int) -> trio.SocketStream:
            return await connect("127.0.0.1", port)

        monkeypatch.setattr(trio, "open_tcp_stream", resolved)
        p = ProviderConfig(name="up", kind="openai", base_url=f"https://.odd:{port}/v1")
        transport = H11Transport(p)
        try:
            url = f"https://.odd:{port}/v1/chat/completions"
            req = UpstreamRequest(url, {"content-type": "application/json"}, BODY, stream=False)
            with pytest.raises(UpstreamConnectionError) as info:
                await fetch(transport, req)
        finally:
            await transport.aclose()
        nursery.cancel_scope.cancel()
    assert info.value.message == "Could not reach the upstream 'up' (ConnectError)."
    assert not info.value.sent
    gc.collect()


async def test_https_refuses_an_untrusted_certificate(certificate: tuple[Path, Path]) -> None:

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.do_handshake()

    async with tls_server(certificate, handle) as port:
        transport = H11Transport(
            provider(port, scheme="https"), ssl_context=ssl.create_default_context()
        )
        try:
            with pytest.raises(UpstreamConnectionError) as info:
                await fetch(transport, post(port, scheme="https"))
        finally:
            await transport.aclose()
    assert info.value.message == "Could not reach the upstream 'up' (ConnectError)."
    assert not info.value.sent


async def test_an_answer_sent_before_a_reset_is_read_even_if_sending_failed() -> None:
    """The server answers without reading the body and closes (RST: bytes were unread)."""
    refusal = (
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 7\r\nconnection: close\r\n\r\ntoo big"
    )

    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(refusal)
        await stream.aclose()

    async with raw_server(answer) as port, transport_for(port) as transport:
        status, _, body = await fetch(transport, post(port, body=b"x" * 8_000_000))
    assert (status, body) == (413, b"too big")


def pooled_connections() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "PooledConnection")


async def test_a_connection_let_go_is_freed_at_once_not_by_the_cycle_collector(
    accepted: list[trio.SocketStream],
) -> None:
    """A connection closed (expired, broken, or the stream it carried left early) is
    freed by reference counting. Held in a reference cycle, each one waited for a full
    collection, which in a worker holding thousands of streams is a pause of half a
    second (docs/performance.md)."""
    gc.collect()
    before = pooled_connections()
    gc.disable()
    try:
        async with serving(ok) as port, transport_for(port, idle_expiry_s=0.01) as transport:
            async with trio.open_nursery() as n:  # three at once: three connections
                for _ in range(3):
                    n.start_soon(fetch, transport, post(port))
            assert pooled_connections() == before + 3
            await trio.sleep(0.05)
            transport.prune_idle()  # expired: closed and dropped
            assert pooled_connections() == before
    finally:
        gc.enable()
