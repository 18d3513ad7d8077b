"""The built-in HTTP/1.1 server (gateway/server/serve.py) on real loopback sockets.

Each test serves a small ASGI app written here (or the real gateway app, where how
the two fit together matters) with `serve()` on 127.0.0.1:0, and talks to it with a
raw-socket client that parses responses strictly, chunk framing included, so a byte
too many or too few on the wire fails the test instead of being smoothed over.
Ordinary requests through the gateway are covered by the whole suite (the `stack`
fixture runs on this server); these tests are about the HTTP layer itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import gateway.server.http11
import gateway.server.serve
from gateway.app import GatewayApp, create_app
from gateway.config import parse_config
from gateway.server.serve import BODY_EXTENSION, ServerOptions, serve
from tests.server.wire import TIMEOUT_S, Client

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# ------------------------------------------------------------------ server side


def with_lifespan(handler: App) -> App:
    """`handler` for http scopes, behind a lifespan that starts and stops at once."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await handler(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


async def start(nursery: trio.Nursery, handler: App, **options: Any) -> int:
    """Serve `handler` until the test ends; the port."""
    opts = ServerOptions(**{"keep_alive_timeout_s": 2.0, "graceful_timeout_s": 1.0, **options})
    port: int = await nursery.start(partial(serve, with_lifespan(handler), "127.0.0.1", 0, opts))
    return port


async def read_body(receive: Receive) -> tuple[bytes, int]:
    """The whole request body and the number of messages it came in."""
    body = bytearray()
    n = 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        n += 1
        if not message.get("more_body", False):
            return bytes(body), n


async def respond(send: Send, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The request body back, with what the app saw of the request in headers."""
    body, messages = await read_body(receive)
    headers = [
        (b"x-method", scope["method"].encode()),
        (b"x-path", scope["path"].encode()),
        (b"x-raw-path", scope["raw_path"]),
        (b"x-query", scope["query_string"]),
        (b"x-messages", b"%d" % messages),
        (b"x-client-port", b"%d" % scope["client"][1]),
        (b"x-sha256", hashlib.sha256(body).hexdigest().encode()),
    ]
    await respond(send, 200, body, headers)


async def stream_parts(send: Send, parts: list[bytes], headers: list[Any] | None = None) -> None:
    """A response in several body messages; the last one ends it."""
    await send({"type": "http.response.start", "status": 200, "headers": headers or []})
    for i, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


# ------------------------------------------------------------------ keep-alive, pipelining


async def test_keep_alive_serves_several_requests_on_one_connection(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo)
    c = await Client.connect(port)
    ports = set()
    for i in range(6):
        body = b"x" * (i % 3)
        r = await c.request("POST" if body else "GET", f"/n/{i}?i={i}", body=body)
        assert (r.status, r.body) == (200, body)
        assert (r.header(b"x-path"), r.header(b"x-query")) == (b"/n/%d" % i, b"i=%d" % i)
        assert r.header(b"connection") is None and r.header(b"date")
        ports.add(r.header(b"x-client-port"))
    assert len(ports) == 1


async def test_a_connection_carries_a_bounded_number_of_requests(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like hypercorn's keep_alive_max_requests (docs/reliability.md R12): the last response
    a connection may carry says `connection: close`, so clients spread over workers."""
    monkeypatch.setattr(gateway.server.serve, "MAX_REQUESTS_PER_CONNECTION", 3)
    port = await start(nursery, echo)
    c = await Client.connect(port)
    for _ in range(2):
        assert (await c.request()).header(b"connection") is None
    assert (await c.request()).header(b"connection") == b"close"
    assert await c.closed()


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo)
    c = await Client.connect(port)
    await c.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"wxyz")
        + b"\r\n"  # an empty line between requests is allowed (RFC 9112 2.2)
        b"GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    for path, body in ((b"/1", b""), (b"/2", b"abc"), (b"/3", b"wxyz"), (b"/4", b"")):
        r = await c.response()
        assert (r.status, r.header(b"x-path"), r.body) == (200, path, body)
    assert r.header(b"connection") == b"close"
    assert await c.closed()


async def test_pipelined_request_waits_while_a_response_streams(nursery: trio.Nursery) -> None:
    """The app watches receive() for a disconnect while it streams (as the gateway
    does): a pipelined next request read meanwhile is kept, not lost or mistaken."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        async with trio.open_nursery() as n:

            async def watch() -> None:
                assert (await receive())["type"] == "http.disconnect"  # once we are done

            n.start_soon(watch)
            parts = [scope["path"].encode()] * 3
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in parts:
                await trio.sleep(0.02)
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    port = await start(nursery, app)
    c = await Client.connect(port)
    await c.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    await trio.sleep(0.01)
    await c.send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n")
    for path in (b"/a", b"/b", b"/c"):
        r = await c.response()
        assert r.chunks == [path] * 3


# ------------------------------------------------------------------ request bodies


async def test_content_length_body_reaches_the_app_intact(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo)
    c = await Client.connect(port)
    body = os.urandom(300_000)
    await c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 70_001):
        await c.send(body[i : i + 70_001])
        await trio.sleep(0.005)
    r = await c.response()
    assert r.header(b"x-sha256") == hashlib.sha256(body).hexdigest().encode()
    assert int(r.header(b"x-messages") or 0) > 1 and r.body == body
    r = await c.request("POST", "/empty", ("Content-Length: 0",))
    assert (r.body, r.header(b"x-messages")) == (b"", b"1")


async def test_chunked_body_reaches_the_app_intact(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo)
    c = await Client.connect(port)
    data = os.urandom(100_000)
    sizes = [1, 2, 15, 16, 255, 4096, 70_000]
    pieces, i = [], 0
    for n in sizes:
        pieces.append(data[i : i + n])
        i += n
    pieces.append(data[i:])
    wire = b""
    for j, piece in enumerate(pieces):
        ext = b";n=%d" % j if j % 2 else b""
        wire += b"%X%b\r\n%b\r\n" % (len(piece), ext, piece)
    wire += b"0\r\nX-Trailer: yes\r\n\r\n"
    await c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    for k in range(0, len(wire), 7919):
        await c.send(wire[k : k + 7919])
    r = await c.response()
    assert r.header(b"x-sha256") == hashlib.sha256(data).hexdigest().encode()
    assert r.body == data
    r = await c.request("GET", "/next")  # the framing ended where it should
    assert r.header(b"x-path") == b"/next"


async def test_malformed_chunked_body_closes_without_running_what_follows(
    nursery: trio.Nursery,
) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        message = await receive()
        seen.append(message["type"])
        await respond(send, 200, b"ok")

    port = await start(nursery, app)
    c = await Client.connect(port)
    await c.send(
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"  # bare LF: refused
    )
    r = await c.response()  # the server's answer, not the app's 200 (dropped)
    assert (r.status, r.header(b"connection")) == (400, b"close")
    assert "Bare LF" in r.json()["error"]["message"]
    assert await c.closed()
    assert seen == ["/a", "http.disconnect"]


# ------------------------------------------------------------------ Expect: 100-continue


async def test_expect_continue_is_answered_when_the_app_reads_the_body(
    nursery: trio.Nursery,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await trio.sleep(0.3)  # deciding whether it wants the body
        body, _ = await read_body(receive)
        await respond(send, 200, body)

    port = await start(nursery, app)
    c = await Client.connect(port)
    for _ in range(2):
        await c.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        with trio.move_on_after(0.15):
            await c._more()
        assert not c.buf, "a 100 before the app asked for the body"
        r = await c.response()
        assert r.status == 100 and r.headers == []
        await c.send(b"hello")
        r = await c.response()
        assert (r.status, r.body) == (200, b"hello")


async def test_expect_continue_without_reading_the_body(nursery: trio.Nursery) -> None:
    """No 100, the final answer, and a close: the body never comes on this connection."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 401, b"who are you")

    port = await start(nursery, app)
    c = await Client.connect(port)
    await c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    r = await c.response()
    assert (r.status, r.body) == (401, b"who are you")
    assert r.header(b"connection") == b"close"
    assert await c.closed()


async def test_no_late_100_once_the_body_is_arriving(nursery: trio.Nursery) -> None:
    """A client that stopped waiting and started sending must not get a 100 mid-body."""
    port = await start(nursery, echo)
    c = await Client.connect(port)
    await c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\nhello"
    )
    await trio.sleep(0.1)
    await c.send(b"world")
    r = await c.response()
    assert (r.status, r.body) == (200, b"helloworld")


# ------------------------------------------------------------------ responses without bodies


async def test_head_gets_headers_without_a_body(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/whole":  # the same answer to HEAD as to GET
            await respond(send, 200, b"hello world")
        elif scope["path"] == "/length":
            await respond(send, 200, b"hello world", [(b"content-length", b"11")])
        else:
            await stream_parts(send, [b"hello", b" world", b""])

    port = await start(nursery, app)
    c = await Client.connect(port)
    r = await c.request("HEAD", "/length")
    assert (r.status, r.header(b"content-length"), r.body) == (200, b"11", b"")
    r = await c.request("HEAD", "/stream")
    assert r.header(b"transfer-encoding") == b"chunked" and r.body == b""
    r = await c.request("HEAD", "/whole")
    assert (r.header(b"content-length"), r.body) == (b"11", b"")
    for path in ("/length", "/stream", "/whole"):  # nothing stray was left on the wire
        assert (await c.request("GET", path)).body == b"hello world"


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_send_no_body(nursery: trio.Nursery, status: int) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/plain":
            await respond(send, status, b"")
        elif scope["path"] == "/stray":  # an app that sends a body anyway
            await send({"type": "http.response.start", "status": status, "headers": []})
            for part in (b"not", b" this", b""):
                await send({"type": "http.response.body", "body": part, "more_body": bool(part)})
        else:
            await respond(send, 200, b"next")

    port = await start(nursery, app)
    c = await Client.connect(port)
    for path in ("/plain", "/stray"):
        r = await c.request("GET", path)
        assert r.status == status
        assert r.header(b"content-length") is None and r.header(b"transfer-encoding") is None
        r = await c.request("GET", "/next")  # nothing stray was left on the wire
        assert (r.status, r.body) == (200, b"next")


# ------------------------------------------------------------------ HTTP/1.0


async def test_http10_client(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":
            await stream_parts(send, [b"one ", b"two ", b"three"])
        else:
            await respond(send, 200, b"whole")

    port = await start(nursery, app)
    # no keep-alive: a length, then the close
    c = await Client.connect(port)
    await c.send(b"GET /whole HTTP/1.0\r\n\r\n")
    r = await c.response()
    assert (r.body, r.header(b"content-length"), r.header(b"connection")) == (
        b"whole",
        b"5",
        b"close",
    )
    assert await c.closed()
    # a stream: no chunked coding for 1.0, the close ends the body
    c = await Client.connect(port)
    await c.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = await c.response()
    assert r.header(b"transfer-encoding") is None and r.header(b"content-length") is None
    assert r.body == b"one two three" and c.eof
    # keep-alive that the server honours is said so (a 1.0 client assumes a close)
    c = await Client.connect(port)
    for _ in range(2):
        await c.send(b"GET /whole HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = await c.response()
        assert (r.body, r.header(b"connection")) == (b"whole", b"keep-alive")


# ------------------------------------------------------------------ streamed responses


async def test_streamed_response_chunk_framing(nursery: trio.Nursery) -> None:
    big = bytes(range(256)) * 300

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        last = b"" if scope["path"] == "/empty-end" else b"end"
        await stream_parts(send, [b"a", b"", b"bc", big, last], [(b"x-a", b"1")])

    port = await start(nursery, app)
    c = await Client.connect(port)
    r = await c.request("GET", "/")
    assert r.header(b"transfer-encoding") == b"chunked" and r.header(b"x-a") == b"1"
    assert r.chunks == [b"a", b"bc", big, b"end"]
    r = await c.request("GET", "/empty-end")
    assert r.chunks == [b"a", b"bc", big]


async def test_app_content_length_is_honoured(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await stream_parts(send, [b"hello", b"", b"world"], [(b"Content-Length", b"10")])

    port = await start(nursery, app)
    c = await Client.connect(port)
    for _ in range(2):
        r = await c.request("GET", "/")
        assert (r.body, r.header(b"transfer-encoding"), r.chunks) == (b"helloworld", None, None)


async def test_app_framing_headers(nursery: trio.Nursery) -> None:
    """The server owns the framing: an app's transfer-encoding is dropped, its
    `connection: close` is honoured (and sent once), a bad content-length is a 500."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/te":
            await stream_parts(send, [b"a", b"b"], [(b"Transfer-Encoding", b"gzip")])
        elif scope["path"] == "/close":
            await respond(send, 200, b"bye", [(b"Connection", b"close")])
        else:
            await respond(send, 200, b"x", [(b"content-length", b"-1")])

    port = await start(nursery, app)
    c = await Client.connect(port)
    r = await c.request("GET", "/te")
    assert (r.header(b"transfer-encoding"), r.chunks) == (b"chunked", [b"a", b"b"])
    r = await c.request("GET", "/close")
    assert (r.body, r.header(b"connection")) == (b"bye", b"close")
    assert await c.closed()
    c = await Client.connect(port)
    assert (await c.request("GET", "/bad-length")).status == 500


@pytest.mark.parametrize(("declared", "parts"), [(10, [b"hello"]), (3, [b"hel", b"lo"])])
async def test_app_body_not_matching_its_content_length_closes(
    nursery: trio.Nursery, declared: int, parts: list[bytes]
) -> None:
    """Too few bytes: the client must see a short body and a close, not wait and then
    take the next response for the rest; too many: the extra never reaches the wire."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await stream_parts(send, parts, [(b"content-length", b"%d" % declared)])

    port = await start(nursery, app, keep_alive_timeout_s=10.0)
    c = await Client.connect(port)
    await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with trio.fail_after(TIMEOUT_S):
        await c._until(b"\r\n\r\n")
    assert await c.until_close() == b"".join(parts)[:declared]


# ------------------------------------------------------------------ app failures


async def test_app_error_before_the_response_is_a_500(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            raise ValueError("boom")
        if scope["path"] == "/boom-after-start":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ValueError("boom")
        await respond(send, 200, b"fine")

    port = await start(nursery, app)
    other = await Client.connect(port)
    assert (await other.request()).body == b"fine"
    for path in ("/boom", "/boom-after-start"):
        c = await Client.connect(port)
        r = await c.request("GET", path)
        assert r.status == 500 and r.header(b"connection") == b"close"
        assert r.json()["error"]["type"] == "internal_server_error"  # as every 500 says
        assert await c.closed()
    assert (await other.request()).body == b"fine"  # still serving, that one still open


async def test_app_error_mid_stream_closes_without_the_last_chunk(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/ok":
            await respond(send, 200, b"fine")
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        if scope["path"] == "/boom":
            raise ValueError("boom")
        # /gone: returns without finishing the response

    port = await start(nursery, app)
    for path in ("/boom", "/gone"):
        c = await Client.connect(port)
        await c.send(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        with trio.fail_after(TIMEOUT_S):
            await c._until(b"\r\n\r\n")
        assert await c.until_close() == b"7\r\npartial\r\n"  # no last chunk: truncated
    c = await Client.connect(port)
    assert (await c.request("GET", "/ok")).body == b"fine"


async def test_app_error_with_an_unread_body(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    port = await start(nursery, app)
    c = await Client.connect(port)
    body = b"x" * 100_000
    await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    with trio.fail_after(TIMEOUT_S):
        await c.send(body)
    r = await c.response()
    assert (r.status, r.header(b"connection")) == (500, b"close")
    assert await c.closed(reset_ok=False)


async def test_app_that_returns_without_a_response_is_a_500(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return

    port = await start(nursery, app)
    c = await Client.connect(port)
    r = await c.request()
    assert r.status == 500 and "no response" in r.json()["error"]["message"]
    assert await c.closed()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-a", b"1\r\nset-cookie: evil=1"),
        (b"x-a", b"1\nset-cookie: evil=1"),
        (b"set-cookie: evil=1\r\nx-a", b"1"),
    ],
)
async def test_no_response_splitting(nursery: trio.Nursery, name: bytes, value: bytes) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"body", [(b"x-ok", b"1"), (name, value)])

    port = await start(nursery, app)
    c = await Client.connect(port)
    await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    raw = await c.until_close()
    assert b"evil" not in raw
    assert raw.startswith(b"HTTP/1.1 500 ")


# ------------------------------------------------------------------ unread bodies, limits


async def test_an_unread_body_that_has_arrived_is_skipped(nursery: trio.Nursery) -> None:
    """Answered without being read, but all there already: it is dropped and the
    connection carries the next request (a worker shedding load answers 503 so, and
    must not cost each client a reconnect)."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await respond(send, 413, b"too big")

    port = await start(nursery, app)
    c = await Client.connect(port)
    for path in ("/1", "/2"):
        r = await c.request("POST", path, body=b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (r.status, r.header(b"connection")) == (413, None)
    assert seen == ["/1", "/2"]


async def test_an_unread_body_still_arriving_closes_the_connection(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 413, b"too big")

    port = await start(nursery, app)
    c = await Client.connect(port)
    await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    r = await c.response()
    assert (r.status, r.header(b"connection")) == (413, b"close")
    assert await c.closed()


async def test_response_to_an_unread_body_is_not_reset(nursery: trio.Nursery) -> None:
    """The server closes with request bytes it never read: without a lingering close
    the kernel answers them with RST, which destroys response bytes still in flight."""
    answer = os.urandom(1_000_000)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 413, answer)

    port = await start(nursery, app)
    c = await Client.connect(port)
    body = b"x" * 100_000  # more than the server reads with the head, less than it buffers
    await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    with trio.fail_after(TIMEOUT_S):
        await c.send(body)  # all of it first, as httpx and the openai SDK do
    await trio.sleep(0.2)  # the server has closed by now (on loopback RST destroys no
    r = await c.response()  # data already delivered; on a network it can)
    assert (r.status, len(r.body), r.body == answer) == (413, len(answer), True)
    assert await c.closed(reset_ok=False)


async def test_oversized_head_is_431_then_close(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo)
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-H: v\r\n" * 100 + b"\r\n"
    endless = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-More: abcdefgh\r\n" * 2000
    for raw in (big, many, endless):
        c = await Client.connect(port)
        await c.send(raw)
        r = await c.response()
        assert r.status == 431 and r.header(b"connection") == b"close"
        assert await c.closed(reset_ok=False)


async def test_trickled_head_costs_linear_time(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head arriving a few bytes at a time is scanned once, not once per arrival
    (a 16 KiB head of short lines in 2-byte pieces cost ~2 s of CPU per connection)."""
    scanned = 0
    real = gateway.server.http11.find_head_end

    def counting(buf: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
        nonlocal scanned
        scanned += len(buf) - start
        return real(buf, start)

    monkeypatch.setattr(gateway.server.serve, "find_head_end", counting)
    port = await start(nursery, echo)
    c = await Client.connect(port)
    c.stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 90
    for i in range(0, len(head), 8):
        await c.send(head[i : i + 8])
        await trio.sleep(0.0005)
    await c.send(b"\r\n")
    assert (await c.response()).status == 200
    assert scanned < 3 * len(head)


async def test_bad_request_head_is_refused_and_closed(nursery: trio.Nursery) -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await respond(send, 200, b"")

    port = await start(nursery, app)
    for raw, status in (
        (
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
    ):
        c = await Client.connect(port)
        await c.send(raw)
        r = await c.response()
        assert r.status == status and r.header(b"connection") == b"close"
        assert r.json()["error"]["message"]
        assert await c.closed()
    assert calls == []


async def test_scope(nursery: trio.Nursery) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await respond(send, 200, b"")

    port = await start(nursery, app)
    c = await Client.connect(port)
    await c.request("GET", "/a%20b/c?x=1&y=%20", ("X-Custom:  v ",))
    await c.request("OPTIONS", "http://example.com/abs?q=1")
    s, absolute = scopes
    assert s["type"] == "http" and s["asgi"]["version"] == "3.0"
    assert (s["http_version"], s["method"], s["scheme"]) == ("1.1", "GET", "http")
    assert (s["path"], s["raw_path"], s["query_string"]) == ("/a b/c", b"/a%20b/c", b"x=1&y=%20")
    assert s["headers"] == [(b"host", b"test"), (b"x-custom", b"v")]
    assert s["server"] == ("127.0.0.1", port) and s["client"][0] == "127.0.0.1"
    assert s["root_path"] == ""
    assert (absolute["path"], absolute["raw_path"], absolute["query_string"]) == (
        "/abs",
        b"/abs",
        b"q=1",
    )


# ------------------------------------------------------------------ timeouts


async def test_slow_head_is_408_then_closed(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo, keep_alive_timeout_s=0.3)
    c = await Client.connect(port)
    await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n")

    async def trickle() -> None:
        for _ in range(40):
            await trio.sleep(0.05)
            try:
                await c.send(b"x")
            except trio.BrokenResourceError:
                return

    nursery.start_soon(trickle)
    t0 = trio.current_time()
    r = await c.response()
    assert (r.status, r.header(b"connection")) == (408, b"close")
    assert await c.closed(within_s=1.5)
    assert 0.25 < trio.current_time() - t0 < 1.0


async def test_idle_keep_alive_connection_is_closed(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo, keep_alive_timeout_s=0.3)
    c = await Client.connect(port)
    assert (await c.request()).status == 200
    t0 = trio.current_time()
    assert await c.closed(within_s=1.5)
    assert 0.25 < trio.current_time() - t0 < 1.0
    silent = await Client.connect(port)  # never sends a byte
    assert await silent.closed(within_s=1.5)


# ------------------------------------------------------------------ client disconnects


@dataclass
class StreamLog:
    disconnect_at: float | None = None
    errors: list[BaseException] = field(default_factory=list)
    sent_after: int = 0
    finished: trio.Event = field(default_factory=trio.Event)


def streaming_watcher(log: StreamLog) -> App:
    """Streams until the client goes, watching receive() like the gateway does, then
    sends a few more chunks (which must be no-ops) and ends normally."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_body(receive)
            gone = trio.Event()
            async with trio.open_nursery() as n:

                async def watch() -> None:
                    message = await receive()
                    assert message["type"] == "http.disconnect", message
                    log.disconnect_at = trio.current_time()
                    gone.set()

                n.start_soon(watch)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                with trio.move_on_after(2):
                    while not gone.is_set():
                        await send({"type": "http.response.body", "body": b"x", "more_body": True})
                        await trio.sleep(0.01)
                for _ in range(5):
                    await send({"type": "http.response.body", "body": b"y", "more_body": True})
                    log.sent_after += 1
                await send({"type": "http.response.body", "body": b""})
        except BaseException as e:
            log.errors.append(e)
            raise
        finally:
            log.finished.set()

    return app


@pytest.mark.parametrize("reset", [False, True])
async def test_client_disconnect_during_a_stream(nursery: trio.Nursery, reset: bool) -> None:
    log = StreamLog()
    port = await start(nursery, streaming_watcher(log))
    c = await Client.connect(port)
    await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with trio.fail_after(TIMEOUT_S):
        await c._until(b"1\r\nx\r\n")
    if reset:  # RST instead of FIN
        c.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    closed_at = trio.current_time()
    await c.aclose()
    with trio.fail_after(TIMEOUT_S):
        await log.finished.wait()
    assert log.disconnect_at is not None and log.disconnect_at - closed_at < 0.5
    assert log.errors == [] and log.sent_after == 5
    other = await Client.connect(port)  # and the server goes on
    await other.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with trio.fail_after(TIMEOUT_S):
        await other._until(b"1\r\nx\r\n")


@pytest.mark.parametrize("direct", [False, True], ids=["send", "body-extension"])
async def test_a_client_that_stops_reading_counts_as_gone(
    nursery: trio.Nursery, direct: bool
) -> None:
    """A stalled reader must not pin the app (and its upstream call) forever: after
    send_timeout_s without progress the app hears http.disconnect, send stays a no-op.
    The same when the body goes out through the `gateway.body` extension."""
    log = StreamLog()
    big = b"z" * 1_000_000

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_body(receive)
            async with trio.open_nursery() as n:

                async def watch() -> None:
                    message = await receive()
                    assert message["type"] == "http.disconnect", message
                    log.disconnect_at = trio.current_time()
                    n.cancel_scope.cancel()

                n.start_soon(watch)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"!", "more_body": True})
                write_body = scope["extensions"][BODY_EXTENSION]
                while True:  # far more than the socket buffers hold
                    if direct:
                        await write_body(big)
                    else:
                        await send({"type": "http.response.body", "body": big, "more_body": True})
                    log.sent_after += 1
        except BaseException as e:
            log.errors.append(e)
            raise
        finally:
            log.finished.set()

    port = await start(nursery, app, send_timeout_s=0.3)
    c = await Client.connect(port)
    c.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # and never read
    with trio.fail_after(TIMEOUT_S):
        await log.finished.wait()
    assert log.disconnect_at is not None
    assert [type(e) for e in log.errors] == []
    assert log.sent_after < 100


async def test_the_body_extension_writes_what_send_would(nursery: trio.Nursery) -> None:
    """`gateway.body` pieces, small and larger than the socket buffers (the rest of a
    partial write follows), arrive in order, chunk-framed, between send's messages."""
    pieces = [b"first", b"a", b"y" * 8_000_000, b"", b"tail"]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": pieces[0], "more_body": True})
        for piece in pieces[1:]:
            await scope["extensions"][BODY_EXTENSION](piece)
        await send({"type": "http.response.body", "body": b"end", "more_body": False})

    port = await start(nursery, app)
    c = await Client.connect(port)
    for _ in range(2):  # and the connection carries the next request
        await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with trio.fail_after(TIMEOUT_S):
            r = await c.response()
        assert r.status == 200
        assert r.body == b"".join(pieces) + b"end"


async def test_client_disconnect_while_the_app_reads_the_body(nursery: trio.Nursery) -> None:
    got: list[Message] = []
    done = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            got.append(message)
            if message["type"] == "http.disconnect":
                break
        await respond(send, 200, b"nobody hears this")
        done.set()

    port = await start(nursery, app)
    c = await Client.connect(port)
    await c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    await trio.sleep(0.05)
    await c.aclose()
    with trio.fail_after(1):
        await done.wait()
    assert [m["type"] for m in got] == ["http.request", "http.disconnect"]
    assert got[0]["body"] == b"abc" and got[0]["more_body"] is True


# ------------------------------------------------------------------ lifespan


async def test_lifespan_messages_in_order() -> None:
    events: list[str] = []
    trigger = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            events.append("request")
            await respond(send, 200, b"")
            return
        assert scope["type"] == "lifespan"
        assert (await receive())["type"] == "lifespan.startup"
        await trio.sleep(0.05)
        events.append("startup")
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        events.append("shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as n:
            opts = ServerOptions(graceful_timeout_s=1.0)
            run = partial(serve, app, "127.0.0.1", 0, opts, shutdown_trigger=trigger.wait)
            port = await n.start(run)
            events.append("listening")
            c = await Client.connect(port)
            assert (await c.request()).status == 200
            trigger.set()
    assert events == ["startup", "listening", "request", "shutdown"]


async def test_listen_is_called_once_the_app_has_started() -> None:
    """A worker joining the port's SO_REUSEPORT group must not be handed connections
    while its app starts (they would wait for the whole start-up): `serve` opens its
    listening socket only after the lifespan startup has completed."""
    events: list[str] = []
    trigger = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await respond(send, 200, b"")
            return
        assert (await receive())["type"] == "lifespan.startup"
        for _ in range(5):  # let anything that would run early run now
            await trio.lowlevel.checkpoint()
        events.append("started")
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})

    def listen() -> socket.socket:
        events.append("listen")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        return sock

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as n:
            opts = ServerOptions(graceful_timeout_s=1.0)
            run = partial(
                serve, app, "127.0.0.1", 0, opts, listen=listen, shutdown_trigger=trigger.wait
            )
            port = await n.start(run)
            c = await Client.connect(port)
            assert (await c.request()).status == 200
            trigger.set()
    assert events == ["started", "listen"]


async def test_startup_failure_makes_serve_raise() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with (
        trio.fail_after(TIMEOUT_S),
        pytest.RaisesGroup(
            pytest.RaisesExc(RuntimeError, match="no database"), allow_unwrapped=True
        ),
    ):
        await serve(app, "127.0.0.1", 0, ServerOptions())


async def test_app_without_lifespan_is_served(nursery: trio.Nursery) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await respond(send, 200, b"plain")

    trigger = trio.Event()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as n:
            run = partial(serve, app, "127.0.0.1", 0, shutdown_trigger=trigger.wait)
            port = await n.start(run)
            c = await Client.connect(port)
            assert (await c.request()).body == b"plain"
            trigger.set()


# ------------------------------------------------------------------ graceful drain


async def test_graceful_drain() -> None:
    trigger = trio.Event()
    release = trio.Event()
    in_flight = trio.Event()

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            in_flight.set()
            await release.wait()
        await respond(send, 200, scope["path"].encode())

    served = trio.Event()

    async def run(task_status: trio.TaskStatus[int]) -> None:
        opts = ServerOptions(keep_alive_timeout_s=5.0, graceful_timeout_s=3.0)
        await serve(
            with_lifespan(handler),
            "127.0.0.1",
            0,
            opts,
            shutdown_trigger=trigger.wait,
            task_status=task_status,
        )
        served.set()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as n:
            port: int = await n.start(run)
            idle = await Client.connect(port)
            assert (await idle.request("GET", "/quick")).status == 200
            busy = await Client.connect(port)
            await busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            await in_flight.wait()
            trigger.set()
            t0 = trio.current_time()
            assert await idle.closed(within_s=0.3)  # idle: closed at once
            assert trio.current_time() - t0 < 0.3
            with pytest.raises(OSError):  # no new connections
                await trio.open_tcp_stream("127.0.0.1", port)
            await trio.sleep(0.1)
            assert not served.is_set()
            release.set()
            r = await busy.response()
            assert (r.body, r.header(b"connection")) == (b"/slow", b"close")
            assert await busy.closed()
            await served.wait()


async def test_graceful_timeout_cancels_what_is_still_running() -> None:
    trigger = trio.Event()
    in_flight = trio.Event()
    cancelled = trio.Event()
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("lifespan.shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        in_flight.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as n:
            opts = ServerOptions(graceful_timeout_s=0.3)
            port = await n.start(
                partial(serve, app, "127.0.0.1", 0, opts, shutdown_trigger=trigger.wait)
            )
            c = await Client.connect(port)
            await c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            await in_flight.wait()
            t0 = trio.current_time()
            trigger.set()
            assert await c.closed(within_s=1.5)
            assert 0.25 < trio.current_time() - t0 < 1.0
        assert cancelled.is_set() and events == ["lifespan.shutdown"]


async def test_drain_delay_and_the_two_moments_the_app_hears() -> None:
    """SIGTERM: the app hears that draining began (its readiness turns off) while new
    connections are still served for drain_delay_s; once the grace is over it hears
    that too, and a stream it then ends properly reaches the client whole."""
    trigger = trio.Event()
    grace_over = trio.Event()
    heard: list[str] = []

    class Hooks:
        def drain_started(self) -> None:
            heard.append("drain")

        def grace_ended(self) -> None:
            heard.append("grace")
            grace_over.set()

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/stream":
            await respond(send, 200, b"ok")
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await grace_over.wait()
        await send({"type": "http.response.body", "body": b"final", "more_body": False})

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as n:
            opts = ServerOptions(graceful_timeout_s=0.3, drain_delay_s=0.5)
            run = partial(serve, with_lifespan(handler), "127.0.0.1", 0, opts, draining=Hooks())
            port = await n.start(partial(run, shutdown_trigger=trigger.wait))
            streaming = await Client.connect(port)
            await streaming.send(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
            await streaming._until(b"first\r\n")
            trigger.set()
            await trio.sleep(0.1)
            assert heard == ["drain"]
            late = await Client.connect(port)  # within drain_delay_s: still served
            r = await late.request("GET", "/x")
            assert (r.status, r.header(b"connection")) == (200, b"close")
            await trio.sleep(0.5)
            with pytest.raises(OSError):  # past it: no longer accepted
                await trio.open_tcp_stream("127.0.0.1", port)
            assert await streaming.until_close() == b"5\r\nfinal\r\n0\r\n\r\n"
            assert heard == ["drain", "grace"]


# ------------------------------------------------------------------ the real gateway app

GATEWAY_KEY = "sk-servertest-0123456789"
CHAT = "/v1/chat/completions"


def gateway_app(tmp_path: Path) -> GatewayApp:
    config = parse_config(
        {
            "server": {"max_body_bytes": 65536},
            "state": {"sqlite_path": str(tmp_path / "gateway.sqlite3")},
            "providers": {"mock": {"kind": "mock", "ttft_ms": 0, "tokens_per_s": 0}},
            "models": {
                "mock-fast": {"provider": "mock"},
                "mock-paced": {"provider": "mock", "ttft_ms": 50, "tokens_per_s": 40},
                "mock-slow": {"provider": "mock", "ttft_ms": 0, "tokens_per_s": 2},
            },
            "keys": [{"name": "test", "key": GATEWAY_KEY}],
        },
        env={},
        source="test_server",
    )
    return create_app(config)


async def start_gateway(nursery: trio.Nursery, tmp_path: Path) -> int:
    opts = ServerOptions(keep_alive_timeout_s=2.0, graceful_timeout_s=1.0)
    port: int = await nursery.start(partial(serve, gateway_app(tmp_path), "127.0.0.1", 0, opts))
    return port


def chat(model: str = "mock-fast", stream: bool = False, content: str = "hello server") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    return json.dumps(body).encode()


def chat_head(length: int | None, *extra: str, key: str = GATEWAY_KEY) -> bytes:
    lines = [
        f"POST {CHAT} HTTP/1.1",
        "Host: gateway",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        *extra,
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n"


def sse_events(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]


async def test_gateway_pipelined_stream_and_chunked_body(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    plain, streamed = chat(), chat(stream=True)
    # three requests in one write: Content-Length, chunked (no SDK sends it), streamed
    await c.send(
        chat_head(len(plain))
        + plain
        + chat_head(None, "Transfer-Encoding: chunked")
        + chunked(plain[:10], plain[10:])
        + chat_head(len(streamed))
        + streamed
    )
    for _ in range(2):
        r = await c.response()
        assert r.status == 200, r.body
        assert r.json()["object"] == "chat.completion"
    r = await c.response()
    assert r.status == 200 and r.chunks
    events = sse_events(r.body)
    assert events[-1] == "[DONE]" and json.loads(events[0])["object"] == "chat.completion.chunk"
    r = await c.request("GET", "/v1/models", (f"Authorization: Bearer {GATEWAY_KEY}",))
    assert r.status == 200 and r.json()["data"]  # Quart behind the same connection


def _tasks() -> int:
    """The tasks of this trio run, now."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, todo = 0, [root]
    while todo:
        task = todo.pop()
        count += 1
        for child in task.child_nurseries:
            todo.extend(child.child_tasks)
    return count


async def test_gateway_a_streamed_response_holds_one_task(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A stream costs one task, its connection's: none waits on the client meanwhile
    (the server watches every streaming client from one task, gateway/server/gone.py),
    as a task and its suspended frames were ~5 KB of each idle stream's memory."""
    port = await start_gateway(nursery, tmp_path)
    await trio.sleep(0.1)
    before = _tasks()
    body = chat("mock-slow", stream=True, content="tell me a long story please")
    clients = [await Client.connect(port) for _ in range(8)]
    with trio.fail_after(TIMEOUT_S):
        for c in clients:
            await c.send(chat_head(len(body)) + body)
            await c._until(b"data: ")  # its head and first event are out
    assert _tasks() - before == len(clients)
    for c in clients:
        await c.aclose()


async def test_gateway_expect_continue(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_gateway(nursery, tmp_path)
    body = chat()
    c = await Client.connect(port)
    await c.send(chat_head(len(body), "Expect: 100-continue", key="sk-wrong-0123456789"))
    r = await c.response()  # refused before the body is read: no 100, and a close
    assert (r.status, r.header(b"connection")) == (401, b"close")
    assert await c.closed()
    c = await Client.connect(port)
    await c.send(chat_head(len(body), "Expect: 100-continue"))
    assert (await c.response()).status == 100
    await c.send(body)
    r = await c.response()
    assert r.status == 200 and r.header(b"connection") is None


async def test_gateway_body_too_large_is_answered(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_gateway(nursery, tmp_path)
    body = b'{"model": "mock-fast", "pad": "' + b"x" * 400_000 + b'"}'
    c = await Client.connect(port)
    await c.send(chat_head(len(body)))
    with trio.fail_after(TIMEOUT_S):
        await c.send(body)
    r = await c.response()
    assert (r.status, r.header(b"connection")) == (413, b"close")
    assert r.json()["error"]["message"]


async def test_gateway_http10_stream(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_gateway(nursery, tmp_path)
    body = chat(stream=True)
    c = await Client.connect(port)
    head = chat_head(len(body)).replace(b"HTTP/1.1", b"HTTP/1.0")
    await c.send(head + body)
    r = await c.response()
    assert r.status == 200 and r.header(b"transfer-encoding") is None and c.eof
    assert sse_events(r.body)[-1] == "[DONE]"


async def test_gateway_drain_lets_a_stream_finish(tmp_path: Path) -> None:
    trigger = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            opts = ServerOptions(keep_alive_timeout_s=2.0, graceful_timeout_s=3.0)
            app = gateway_app(tmp_path)
            port = await n.start(
                partial(serve, app, "127.0.0.1", 0, opts, shutdown_trigger=trigger.wait)
            )
            c = await Client.connect(port)
            body = chat("mock-paced", stream=True, content="tell me a long story please")
            await c.send(chat_head(len(body)) + body)
            with trio.fail_after(TIMEOUT_S):
                await c._until(b"\r\n\r\n")  # the stream has started
                await c._until(b"\r\n")
            trigger.set()
            rest = await c.until_close()
            assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), rest[-200:]
