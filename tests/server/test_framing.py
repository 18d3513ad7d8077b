"""gateway/server/framing.py on bytes: ASGI send messages in, the bytes of a response out.

Each rule of the module docstring has a case here, without sockets. The properties
read what the framer wrote back with h11 (the parser hypercorn and httpx use), as a
client would: for any response an app can send, it must see the same status and body,
and never a connection kept open that the response said would close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.server.framing import (
    CONTINUE,
    LAST_CHUNK,
    ResponseFramer,
    chunk,
    refusal,
    response_head,
)
from gateway.server.http11 import ChunkedDecoder

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DATE = b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"


def start(status: int = 200, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def frame(
    messages: list[dict[str, Any]],
    *,
    method: str = "GET",
    version: str = "1.1",
    keep_alive: bool = True,
    close: bool = False,
) -> tuple[ResponseFramer, list[bytes]]:
    """What a framer writes for each message (the date and `close` go with every one;
    only the head uses them)."""
    framer = ResponseFramer(method, version, keep_alive)
    return framer, [framer.send(m, date=DATE, close=close) for m in messages]


# ------------------------------------------------------------------ heads and chunks


def test_response_head_format() -> None:
    out = response_head(200, [(b"content-type", b"text/plain"), (b"x-a", b"")], b"x-b: 2\r\n")
    assert out == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-a: \r\nx-b: 2\r\n\r\n"
    assert response_head(404, []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert response_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"  # no reason: still valid


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-a", b"1\r\nset-cookie: evil=1"),
        (b"x-a", b"1\nset-cookie: evil=1"),
        (b"x-a", b"1\rset-cookie: evil=1"),
        (b"x-a", b"\r\n"),
        (b"set-cookie: evil=1\r\nx-a", b"1"),
        (b"x-a\n", b"1"),
    ],
)
def test_response_head_refuses_cr_and_lf(name: bytes, value: bytes) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        response_head(200, [(b"ok", b"1"), (name, value)])


def test_chunk_round_trips() -> None:
    payloads = [b"a", b"\r\n", b"0\r\n\r\n", bytes(range(256)) * 3]
    wire = b"".join(chunk(p) for p in payloads) + LAST_CHUNK
    decoder = ChunkedDecoder()
    assert decoder.feed(wire) == b"".join(payloads) and decoder.done
    assert chunk(b"hello") == b"5\r\nhello\r\n"


def test_continue_and_refusal() -> None:
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert refusal(431, b'{"e":1}', DATE) == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 7\r\n"
        b"content-type: application/json\r\nconnection: close\r\n" + DATE + b'\r\n{"e":1}'
    )


# ------------------------------------------------------------------ framing choices


def test_a_whole_body_gets_a_content_length_and_one_write() -> None:
    framer, out = frame([start(200, (b"content-type", b"text/plain")), body(b"hello")])
    assert out == [
        b"",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n"
        + DATE
        + b"\r\nhello",
    ]
    assert framer.complete and framer.keeps_connection(request_read=True)
    assert not framer.keeps_connection(request_read=False)  # an unread body: close


def test_a_streamed_body_is_chunked_with_the_head_in_the_first_write() -> None:
    framer, out = frame([start(), body(b"ab", True), body(b"", True), body(b"c", True), body()])
    assert out == [
        b"",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n" + DATE + b"\r\n2\r\nab\r\n",
        b"",  # an empty message is no chunk: that would end the body
        b"1\r\nc\r\n",
        LAST_CHUNK,
    ]
    assert framer.keeps_connection(request_read=True)
    _, out = frame([start(), body(b"", True), body(b"xyz")])
    assert out[1].endswith(b"\r\n\r\n") and out[2] == b"3\r\nxyz\r\n" + LAST_CHUNK


def test_http10_streams_end_with_the_connection_and_whole_bodies_keep_it() -> None:
    framer, out = frame([start(), body(b"ab", True), body(b"c")], version="1.0")
    assert out == [b"", b"HTTP/1.1 200 OK\r\n" + DATE + b"connection: close\r\n\r\nab", b"c"]
    assert framer.complete and not framer.keeps_connection(request_read=True)
    framer, out = frame([start(), body(b"ab")], version="1.0")
    assert b"content-length: 2\r\n" + DATE + b"connection: keep-alive\r\n\r\nab" in out[1]
    assert framer.keeps_connection(request_read=True)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_piece_of_an_open_stream_is_framed_for_a_direct_write(version: str) -> None:
    """`piece` (the server's direct writes, the pump's) frames what `send` would write
    for a body piece with more to come, chunked or, for HTTP/1.0, as is: a stream to an
    HTTP/1.0 client takes the direct path too."""
    framer, _ = frame([start(), body(b"ab", True)], version=version)
    _, sent = frame([start(), body(b"ab", True), body(b"cd", True)], version=version)
    assert framer.piece(b"cd") == sent[2]
    assert framer.piece(b"") is None  # an empty piece is no chunk
    framer.send(body())
    assert framer.piece(b"ef") is None  # the body is over


def test_head_responses_have_headers_but_no_body() -> None:
    _, out = frame([start(), body(b"hello")], method="HEAD")
    assert out[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n" + DATE + b"\r\n"
    framer, out = frame([start(), body(b"ab", True), body(b"c")], method="HEAD")
    assert out[1].endswith(b"transfer-encoding: chunked\r\n" + DATE + b"\r\n")
    assert out[2] == b"" and framer.keeps_connection(request_read=True)
    _, out = frame([start(200, (b"content-length", b"5")), body(b"hello")], method="HEAD")
    assert out[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n" + DATE + b"\r\n"


@pytest.mark.parametrize("status", [101, 204, 304])
def test_no_body_statuses_send_no_body(status: int) -> None:
    framer, out = frame([start(status), body(b"stray", True), body(b"more")])
    assert out[1] == response_head(status, [], DATE) and out[2] == b""
    assert framer.keeps_connection(request_read=True)


def test_the_apps_content_length_is_kept_and_enforced() -> None:
    cl = (b"content-length", b"5")
    framer, out = frame([start(200, cl), body(b"hel", True), body(b"lo")])
    assert out[1].endswith(b"\r\n\r\nhel") and out[2] == b"lo"
    assert framer.keeps_connection(request_read=True)
    # Too long: cut, or the client reads the rest as the next response; then close.
    framer, out = frame([start(200, cl), body(b"hel", True), body(b"lo!!", True), body(b"!")])
    assert out[2:] == [b"lo", b""] and not framer.keeps_connection(request_read=True)
    # Too short: the client waits for the rest, so the connection must close.
    framer, out = frame([start(200, cl), body(b"hel")])
    assert framer.complete and not framer.keeps_connection(request_read=True)
    with pytest.raises(ValueError, match="negative"):
        frame([start(200, (b"content-length", b"-1")), body()])
    with pytest.raises(ValueError):
        frame([start(200, (b"content-length", b"x")), body()])


def test_the_apps_framing_headers_are_dropped_and_its_close_honoured() -> None:
    framer, out = frame(
        [
            start(
                200,
                (b"Transfer-Encoding", b"gzip"),
                (b"x-a", b"1"),
                (b"Connection", b"Close"),
            ),
            body(b"ok"),
        ]
    )
    assert out[1] == (
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 2\r\n"
        + DATE
        + b"connection: close\r\n\r\nok"
    )
    assert framer.complete and not framer.keeps_connection(request_read=True)


def test_a_connection_that_will_close_says_so_in_the_head() -> None:
    for kwargs in ({"close": True}, {"keep_alive": False}):
        framer, out = frame([start(), body(b"ok")], **kwargs)  # type: ignore[arg-type]
        assert out[1].endswith(DATE + b"connection: close\r\n\r\nok")
        assert not framer.keeps_connection(request_read=True)
    framer = ResponseFramer("GET", "1.1", True)
    framer.send(start())
    framer.send(body(b"ok", True), date=DATE)
    framer.must_close()  # after the head: the connection just closes at the end
    framer.send(body())
    assert framer.complete and not framer.keeps_connection(request_read=True)


def test_a_failed_app_gets_a_500_whatever_it_started() -> None:
    framer = ResponseFramer("GET", "1.1", True)
    framer.send(start(201, (b"x-a", b"1")))
    out = framer.fail(b'{"error":1}', date=DATE)
    assert out == (
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
        b"content-length: 11\r\n" + DATE + b'connection: close\r\n\r\n{"error":1}'
    )
    assert framer.complete and not framer.keeps_connection(request_read=True)


def test_a_header_that_would_split_the_response_leaves_room_for_a_500() -> None:
    framer = ResponseFramer("GET", "1.1", True)
    framer.send(start(200, (b"x-a", b"1\r\nset-cookie: evil=1")))
    with pytest.raises(ValueError, match="CR or LF"):
        framer.send(body(b"ok"), date=DATE)
    assert not framer.head_sent and not framer.complete
    assert framer.fail(b"{}", date=DATE).startswith(b"HTTP/1.1 500 ")


def test_messages_out_of_order() -> None:
    framer = ResponseFramer("GET", "1.1", True)
    with pytest.raises(RuntimeError, match="before http"):
        framer.send(body(b"x"))
    framer.send(start())
    with pytest.raises(RuntimeError, match="twice"):
        framer.send(start())
    with pytest.raises(RuntimeError, match="unexpected ASGI message type"):
        framer.send({"type": "http.response.trailers"})
    framer.send(body(b"x"))
    assert framer.send(body(b"late")) == b""  # after the end: dropped
    with pytest.raises(RuntimeError, match="twice"):
        framer.send(start())


# ------------------------------------------------------------------ properties


@dataclass
class Parsed:
    """A response as an h11 client reads it."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reusable: bool = False  # h11 would send the next request on this connection


def read_back(method: str, wire: bytes, eof: bool) -> Parsed:
    """Parse `wire` with an h11 client that sent `method`; `eof`: the server then closes."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "a")]))
    conn.send(h11.EndOfMessage())
    parsed = Parsed()

    def drain() -> None:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                parsed.status, parsed.headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                parsed.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                parsed.ended = True
                parsed.reusable = conn.their_state is h11.DONE
            else:
                return

    conn.receive_data(wire)
    drain()
    if parsed.ended:
        assert conn.trailing_data == (b"", False)  # not a byte past the response
    if eof:
        conn.receive_data(b"")
        drain()
    return parsed


TOKENS = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=8).map(str.encode)
VALUES = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ;=/", max_size=12).map(
    lambda s: s.strip().encode()
)
BODIES = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@st.composite
def responses(draw: st.DrawFn) -> tuple[str, str, bool, bool, int, list[tuple[bytes, bytes]]]:
    method = draw(st.sampled_from(["GET", "POST", "HEAD"]))
    version = draw(st.sampled_from(["1.1", "1.0"]))
    keep_alive = draw(st.booleans())
    close = draw(st.booleans())
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 404, 429, 500, 502, 599]))
    headers = draw(st.lists(st.tuples(TOKENS, VALUES), max_size=4))
    headers = [(n, v) for n, v in headers if n not in (b"content-length", b"transfer-encoding")]
    if draw(st.booleans()):
        headers.append((b"transfer-encoding", b"chunked"))  # the app's: dropped
    if draw(st.booleans()):
        headers.append((b"connection", draw(st.sampled_from([b"close", b"keep-alive"]))))
    return method, version, keep_alive, close, status, headers


def messages_for(status: int, headers: list[tuple[bytes, bytes]], parts: list[bytes]) -> list[Any]:
    return [start(status, *headers)] + [body(p, i < len(parts) - 1) for i, p in enumerate(parts)]


@PROPS
@given(responses(), BODIES)
def test_any_response_reads_back_with_h11_as_sent(
    response: tuple[str, str, bool, bool, int, list[tuple[bytes, bytes]]], parts: list[bytes]
) -> None:
    method, version, keep_alive, close, status, headers = response
    framer, out = frame(
        messages_for(status, headers, parts),
        method=method,
        version=version,
        keep_alive=keep_alive,
        close=close,
    )
    # One write per message at most, the head with the first body, nothing after.
    assert out[0] == b"" and out[1].startswith(b"HTTP/1.1 %d " % status)
    assert framer.complete
    keeps = framer.keeps_connection(request_read=True)
    parsed = read_back(method, b"".join(out), eof=not keeps)
    assert parsed.status == status and parsed.ended
    no_body = method == "HEAD" or status in (204, 304)
    assert parsed.body == (b"" if no_body else b"".join(parts))
    assert keeps == parsed.reusable  # open exactly when the head did not say close
    if keeps:
        assert keep_alive and not close
        assert (b"connection", b"close") not in headers


@PROPS
@given(responses(), BODIES, st.integers(min_value=0, max_value=100))
def test_an_apps_content_length_is_never_overrun(
    response: tuple[str, str, bool, bool, int, list[tuple[bytes, bytes]]],
    parts: list[bytes],
    length: int,
) -> None:
    method, version, keep_alive, close, status, headers = response
    headers = [*headers, (b"content-length", b"%d" % length)]
    framer, out = frame(
        messages_for(status, headers, parts),
        method=method,
        version=version,
        keep_alive=keep_alive,
        close=close,
    )
    whole = b"".join(parts)
    keeps = framer.keeps_connection(request_read=True)
    no_body = method == "HEAD" or status in (204, 304)
    if not no_body and len(whole) != length:
        assert not keeps  # cut, or short: either way the connection closes
    if no_body or len(whole) >= length:
        parsed = read_back(method, b"".join(out), eof=not keeps)
        assert parsed.ended and parsed.body == (b"" if no_body else whole[:length])
        assert keeps == parsed.reusable or not keeps
    else:
        assert b"".join(out).endswith(whole)  # short: all of it sent, then the close


@PROPS
@given(
    st.integers(min_value=100, max_value=999),
    st.lists(st.tuples(TOKENS, VALUES), max_size=6),
    st.binary(max_size=30),
)
def test_response_heads_parse_back_with_h11(
    status: int, headers: list[tuple[bytes, bytes]], payload: bytes
) -> None:
    if 100 <= status < 200:
        return  # an informational response is not a whole one
    if status in (204, 304):
        payload = b""  # they have none
    headers = [(n, v) for n, v in headers if n not in (b"content-length", b"transfer-encoding")]
    wire = response_head(status, [*headers, (b"content-length", b"%d" % len(payload))]) + payload
    parsed = read_back("GET", wire, eof=False)
    assert (parsed.status, parsed.body, parsed.ended) == (status, payload, True)
    assert parsed.headers[: len(headers)] == headers
