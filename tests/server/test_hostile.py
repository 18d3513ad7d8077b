"""Hostile and unlucky clients against the served gateway, on raw sockets (issue 10).

Every request gets exactly one final response, a 4xx in the OpenAI error shape when
the client is at fault, on every route (the hot chat route and the Quart ones alike),
and nothing a client sends makes the gateway log a traceback. The gateway runs on the
built-in server in this process, so its log records are checked after each test.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from gateway.app import GatewayApp, create_app
from gateway.config import parse_config
from gateway.server.http11 import MAX_CHUNKS
from gateway.server.serve import ServerOptions, serve
from tests.server.wire import TIMEOUT_S, Client, Response

KEY = "sk-hostile-0123456789"
ADMIN = "sk-hostile-admin-0123456789"
CHAT = "/v1/chat/completions"
BODY_TIMEOUT_S = 0.6
HEAD_TIMEOUT_S = 0.4


def gateway_app(tmp_path: Path) -> GatewayApp:
    config = parse_config(
        {
            "server": {"max_body_bytes": 65536, "body_timeout_s": BODY_TIMEOUT_S},
            "state": {"sqlite_path": str(tmp_path / "gateway.sqlite3"), "admin_key": ADMIN},
            "providers": {"mock": {"kind": "mock", "ttft_ms": 0, "tokens_per_s": 0}},
            "models": {"mock-fast": {"provider": "mock"}},
            "keys": [{"name": "test", "key": KEY}],
        },
        env={},
        source="test_hostile",
    )
    return create_app(config)


async def start_gateway(nursery: trio.Nursery, tmp_path: Path) -> int:
    opts = ServerOptions(
        keep_alive_timeout_s=HEAD_TIMEOUT_S, graceful_timeout_s=1.0, body_timeout_s=BODY_TIMEOUT_S
    )
    port: int = await nursery.start(partial(serve, gateway_app(tmp_path), "127.0.0.1", 0, opts))
    return port


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing a client sends is worth an ERROR or a traceback in the gateway's log."""
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def head(method: str, path: bytes, *headers: str, length: int | None = None) -> bytes:
    lines = [f"{method} ".encode() + path + b" HTTP/1.1", b"Host: gateway"]
    lines += [h.encode() for h in headers]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def assert_openai_error(r: Response, status: int) -> None:
    assert r.status == status, (r.status, r.body[:300])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


CHAT_BODY = json.dumps({"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]})
ADMIN_BODY = json.dumps({"name": "from-a-test"})
# (method, path, headers, body): every kind of route, each with a body it may be sent
ROUTES = [
    ("POST", CHAT, (f"Authorization: Bearer {KEY}",), CHAT_BODY.encode()),
    ("POST", "/admin/keys", (f"Authorization: Bearer {ADMIN}",), ADMIN_BODY.encode()),
    ("GET", "/healthz", (), b'{"x": 1}'),
    ("GET", "/readyz", (), b'{"x": 1}'),
    ("GET", "/v1/models", (f"Authorization: Bearer {KEY}",), b"{}"),
    ("POST", "/nowhere", (), b"{}"),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _, _ in ROUTES]


# ------------------------------------------------------------------ Expect: 100-continue


@pytest.mark.parametrize(("method", "path", "headers", "body"), ROUTES, ids=ROUTE_IDS)
async def test_expect_continue_gets_exactly_one_final_response_on_every_route(
    nursery: trio.Nursery,
    tmp_path: Path,
    method: str,
    path: str,
    headers: tuple[str, ...],
    body: bytes,
) -> None:
    """curl sends `Expect: 100-continue` by itself for bodies over 1 MB. The Quart routes
    read the body in a task of their own while they answer, so the 100 and the answer
    were written at once: half the answers were lost to a BusyResourceError."""
    port = await start_gateway(nursery, tmp_path)
    for _ in range(12):
        c = await Client.connect(port)
        await c.send(
            head(method, path.encode(), *headers, "Expect: 100-continue", length=len(body))
        )
        r = await c.response()
        if r.status == 100:  # the app wants the body: send it, as curl does
            await c.send(body)
            r = await c.response()
        assert 200 <= r.status < 500, (r.status, r.body[:300])
        # exactly one final response: nothing follows it but, perhaps, the close
        with trio.move_on_after(0.05):
            await c.closed(within_s=0.05)
        assert not c.buf, bytes(c.buf[:200])


# ------------------------------------------------------------------ the request target


@pytest.mark.parametrize("query", [b"a=\xff", b"\xc3\x28", b"q=caf\xc3\xa9", b"a=\x80b"])
@pytest.mark.parametrize(("method", "path", "headers", "body"), ROUTES, ids=ROUTE_IDS)
async def test_a_raw_non_ascii_byte_in_the_query_is_400(
    nursery: trio.Nursery,
    tmp_path: Path,
    query: bytes,
    method: str,
    path: str,
    headers: tuple[str, ...],
    body: bytes,
) -> None:
    """A URI is ASCII (RFC 3986); a raw byte beyond it is refused, not a 500 from
    whoever decodes the query next (Quart decodes it as UTF-8, strictly)."""
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    await c.send(head(method, path.encode() + b"?" + query, *headers, length=len(body)) + body)
    r = await c.response()
    assert_openai_error(r, 400)
    assert "request target" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"GET /v1/models/%FF%FE HTTP/1.1\r\nAuthorization: Bearer " + KEY.encode(), 404),
        (b"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\x80", 401),
        (b"GET /admin/keys HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\x80", 401),
        (
            b"GET /admin/keys/abc?period=%FF HTTP/1.1\r\nAuthorization: Bearer " + ADMIN.encode(),
            404,
        ),
        (b"GET /readyz HTTP/1.1\r\nCookie: \xff=\xfe; a", 200),
        (b"GET /v1/models HTTP/1.1\r\nAuthorization: \xff", 401),
        (b"GET /nowhere%00 HTTP/1.1", 404),
    ],
)
async def test_odd_bytes_where_the_app_reads_them_are_4xx(
    nursery: trio.Nursery, tmp_path: Path, request_: bytes, status: int
) -> None:
    """Bytes beyond ASCII in header values (legal: obs-text) and percent-decoded
    paths reach the app; every route answers them, none logs a traceback."""
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    line, _, headers = request_.partition(b"\r\n")
    await c.send(
        line + b"\r\nHost: gateway\r\n" + (headers + b"\r\n" if headers else b"") + b"\r\n"
    )
    r = await c.response()
    assert r.status == status, (r.status, r.body[:200])
    if status >= 400:
        assert_openai_error(r, status)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (b"/admin//keys", 404),
        (b"/v1//models", 404),
        (b"//admin/keys", 200),  # leading slashes: Werkzeug matches without them
        (b"/healthz/", 200),  # a trailing one: strict_slashes is off, no redirect
        (b"//healthz", 200),
    ],
)
async def test_no_redirect_is_built_from_the_clients_host(
    nursery: trio.Nursery, tmp_path: Path, path: bytes, status: int
) -> None:
    """Werkzeug merged slashes with a 308 to `http://<Host>/...`: an open redirect for
    whoever controls the Host header. Such paths are served as sent, or not found."""
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    await c.send(
        b"GET " + path + b" HTTP/1.1\r\nHost: evil.example\r\n"
        b"Authorization: Bearer " + ADMIN.encode() + b"\r\n\r\n"
    )
    r = await c.response()
    assert r.header(b"location") is None and r.status == status, (r.status, r.body[:200])
    if status == 404:
        assert_openai_error(r, 404)


# ------------------------------------------------------------------ broken framing


BROKEN_CHUNKED = {
    "bare LF after the size": b"5\nhello\r\n0\r\n\r\n",
    "negative size": b"-1\r\nhello\r\n0\r\n\r\n",
    "0x prefix": b"0x42\r\n" + b"x" * 66 + b"\r\n0\r\n\r\n",
    "16 hex digits": b"0000000000000005\r\nhello\r\n0\r\n\r\n",
    "control character in an extension": b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
    "bare LF after the data": b"5\r\nhello\n0\r\n\r\n",
}


@pytest.mark.parametrize("framing", BROKEN_CHUNKED.values(), ids=BROKEN_CHUNKED.keys())
@pytest.mark.parametrize(("method", "path", "headers", "body"), ROUTES[:2], ids=ROUTE_IDS[:2])
async def test_broken_chunked_framing_is_400_then_close(
    nursery: trio.Nursery,
    tmp_path: Path,
    framing: bytes,
    method: str,
    path: str,
    headers: tuple[str, ...],
    body: bytes,
) -> None:
    """The client learns why, instead of seeing its connection closed with no answer;
    nothing after the broken framing is read as a request."""
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    await c.send(
        head(method, path.encode(), *headers, "Transfer-Encoding: chunked") + framing + smuggled
    )
    r = await c.response()
    assert_openai_error(r, 400)
    assert r.header(b"connection") == b"close"
    assert "chunk" in r.json()["error"]["message"].lower()
    assert await c.closed(within_s=TIMEOUT_S)


async def test_a_flood_of_tiny_chunks_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    """1-byte chunks cost the loop ~2 us each: a body may have at most MAX_CHUNKS of
    them (docs/reliability.md R12), then it is a 400 and a close."""
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    method, path, headers, _ = ROUTES[0]
    await c.send(head(method, path.encode(), *headers, "Transfer-Encoding: chunked"))
    with trio.move_on_after(5):  # the server stops reading once it has refused
        with contextlib.suppress(trio.BrokenResourceError):
            await c.send(b"1\r\n \r\n" * (MAX_CHUNKS + 10))
    r = await c.response()
    assert_openai_error(r, 400)
    assert "chunks" in r.json()["error"]["message"]
    assert r.header(b"connection") == b"close"


# ------------------------------------------------------------------ slow clients


async def test_a_slow_request_head_is_408_then_close(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    await c.send(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")  # and no blank line
    t0 = trio.current_time()
    r = await c.response()
    assert_openai_error(r, 408)
    assert r.header(b"connection") == b"close"
    assert HEAD_TIMEOUT_S * 0.8 < trio.current_time() - t0 < HEAD_TIMEOUT_S + 1
    assert await c.closed()


async def test_an_idle_connection_still_closes_silently(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """No bytes of a request: nothing to answer (a 408 there could cross a request the
    client is just sending on its keep-alive connection)."""
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    assert (await c.request("GET", "/healthz")).status == 200
    assert await c.closed(within_s=HEAD_TIMEOUT_S + 1)
    silent = await Client.connect(port)
    assert await silent.closed(within_s=HEAD_TIMEOUT_S + 1)


@pytest.mark.parametrize(("method", "path", "headers", "body"), ROUTES[:2], ids=ROUTE_IDS[:2])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_every_route_has_the_body_deadline(
    nursery: trio.Nursery,
    tmp_path: Path,
    chunked: bool,
    method: str,
    path: str,
    headers: tuple[str, ...],
    body: bytes,
) -> None:
    """A body trickled a byte at a time is cut at body_timeout_s with a 408, on the
    admin API (Quart) as on the chat route: it used to be read for ever there."""
    port = await start_gateway(nursery, tmp_path)
    c = await Client.connect(port)
    if chunked:
        await c.send(head(method, path.encode(), *headers, "Transfer-Encoding: chunked"))
    else:
        await c.send(head(method, path.encode(), *headers, length=len(body)))
    t0 = trio.current_time()

    async def trickle() -> None:
        for byte in body:
            piece = bytes([byte])
            await c.send(b"1\r\n" + piece + b"\r\n" if chunked else piece)
            await trio.sleep(0.2)

    async with trio.open_nursery() as n:
        n.start_soon(trickle)
        r = await c.response()
        n.cancel_scope.cancel()
    assert_openai_error(r, 408)
    assert BODY_TIMEOUT_S * 0.8 < trio.current_time() - t0 < BODY_TIMEOUT_S + 1.5
    assert r.header(b"connection") == b"close"
