"""The pool's heads and body framing (gateway/upstream/http1.py) on real loopback sockets.

A scripted server answers each request on a connection with exact bytes, so every kind
of response (Content-Length, chunked, 204, 1xx first, close-delimited, malformed, split
in many reads) is met through `H11Transport` itself, and whether the pool reused the
connection for the next request is counted on the server's side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial

import pytest
import trio

from gateway.errors import UpstreamConnectionError, UpstreamError
from tests.upstream.test_h11_pool import fetch, post, transport_for

Answer = tuple[bytes, bool]  # the bytes to send, and whether to close after them
OK = b"HTTP/1.1 200 OK\r\n"


class Script:
    """Answers requests in order, whatever connection they come on; counts connections
    and the requests each received."""

    def __init__(self, answers: Sequence[Answer], *, byte_by_byte: bool = False) -> None:
        self.answers = list(answers)
        self.byte_by_byte = byte_by_byte
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = b""
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while self.answers:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                self.requests.append(head)
                buf = buf[length:]
                wire, close = self.answers.pop(0)
                if self.byte_by_byte:
                    for i in range(len(wire)):
                        await stream.send_all(wire[i : i + 1])
                        await trio.sleep(0.001)
                else:
                    await stream.send_all(wire)
                if close:
                    await stream.aclose()
                    return


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, script.handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


AFTER: Answer = (OK + b"content-length: 4\r\n\r\nnext", False)


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        ((OK + b"content-length: 5\r\n\r\nhello", False), 200, b"hello"),
        ((OK + b"Content-Length: 0\r\n\r\n", False), 200, b""),
        ((b"HTTP/1.1 204 No Content\r\n\r\n", False), 204, b""),
        (
            (b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"content-length: 2\r\n\r\nok", False),
            200,
            b"ok",
        ),
        ((OK + b"transfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", False), 200, b"hi"),
        ((b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok", False), 200, b"ok"),  # bare LF
    ],
)
async def test_each_cleanly_ended_kind_of_response_keeps_the_connection(
    answer: Answer, status: int, body: bytes
) -> None:
    script = Script([answer, AFTER])
    async with scripted(script) as port, transport_for(port) as transport:
        got = await fetch(transport, post(port))
        assert (got[0], got[2]) == (status, body)
        assert (await fetch(transport, post(port)))[2] == b"next"
    assert script.connections == 1


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        ((OK + b"connection: close\r\ncontent-length: 2\r\n\r\nok", False), b"ok"),
        ((b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", False), b"ok"),
        ((OK + b"\r\nuntil the end", True), b"until the end"),  # close-delimited
        ((OK + b"content-length: 2\r\n\r\nokEXTRA", False), b"ok"),  # bytes past the body
        ((b"HTTP/1.1 204 No Content\r\n\r\nEXTRA", False), b""),
        (  # both framings: read as chunked (as h11 does), but never trusted again
            (
                OK + b"content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                False,
            ),
            b"ok",
        ),
    ],
)
async def test_a_response_that_may_not_end_cleanly_closes_its_connection(
    answer: Answer, body: bytes
) -> None:
    script = Script([answer, AFTER])
    async with scripted(script) as port, transport_for(port) as transport:
        assert (await fetch(transport, post(port)))[2] == body
        assert (await fetch(transport, post(port)))[2] == b"next"
    assert script.connections == 2


async def test_a_head_split_in_many_reads_is_read_and_the_connection_kept() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nx-a: 1\r\nX-A: 2\r\n"
        b"content-length: 5\r\n\r\nhello"
    )
    script = Script([(wire, False), AFTER], byte_by_byte=True)
    async with scripted(script) as port, transport_for(port) as transport:
        status, headers, body = await fetch(transport, post(port))
        assert (await fetch(transport, post(port)))[2] == b"next"
    assert (status, headers, body) == (201, {"x-a": "1, 2", "content-length": "5"}, b"hello")
    assert script.connections == 1


@pytest.mark.parametrize(
    "wire",
    [
        OK + b"bad name: x\r\ncontent-length: 0\r\n\r\n",
        OK + b"x: a\r\n folded\r\ncontent-length: 0\r\n\r\n",
        OK + b"content-length: 2\r\ncontent-length: 3\r\n\r\nok",
        OK + b"transfer-encoding: gzip\r\n\r\n",
        b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
async def test_a_malformed_head_is_a_protocol_error_and_the_connection_is_dropped(
    wire: bytes,
) -> None:
    script = Script([(wire, False), AFTER])
    async with scripted(script) as port, transport_for(port) as transport:
        with pytest.raises(UpstreamError) as info:
            await fetch(transport, post(port))
        assert info.value.code == "upstream_protocol_error"
        assert "malformed response head" in info.value.message
        assert (await fetch(transport, post(port)))[2] == b"next"
    assert script.connections == 2


async def test_a_content_length_body_cut_short_is_a_lost_connection() -> None:
    script = Script([(OK + b"content-length: 10\r\n\r\nhello", True)])
    async with scripted(script) as port, transport_for(port) as transport:
        with pytest.raises(UpstreamConnectionError) as info:
            await fetch(transport, post(port))
    assert info.value.code == "upstream_connection_lost" and info.value.sent
    assert "closed early" in info.value.message


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("x-a", "v\r\nx-injected: 1", "LocalProtocolError"),
        ("bad name", "v", "LocalProtocolError"),
        ("x-a", " padded ", "LocalProtocolError"),
        ("x-a", "caf\u00e9", "UnicodeEncodeError"),
    ],
)
async def test_a_header_that_cannot_be_sent_fails_the_request_and_sends_nothing(
    name: str, value: str, why: str
) -> None:
    script = Script([AFTER])
    async with scripted(script) as port, transport_for(port) as transport:
        with pytest.raises(UpstreamError) as info:
            await fetch(transport, post(port, headers={name: value}))
        assert info.value.code == "upstream_unreachable"
        assert info.value.message == f"The request to the upstream 'up' failed ({why})."
        assert (await fetch(transport, post(port)))[2] == b"next"
    assert len(script.requests) == 1 and b"x-injected" not in script.requests[0]
