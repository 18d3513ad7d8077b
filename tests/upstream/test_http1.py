"""http1.py on exact bytes, each case against h11 (the reference) where they should agree.

The generated cases are in fuzz/test_http1_props.py; the pool's use of this, on real
sockets, in tests/upstream/test_h11_pool_heads.py.
"""

from __future__ import annotations

import pytest

from gateway.upstream.http1 import (
    CHUNKED,
    CLOSE,
    LENGTH,
    MAX_HEAD_BYTES,
    HeadError,
    HeadReader,
    request_head,
)
from tests.upstream.h11_reference import (
    REFUSED,
    Outcome,
    expected_from_h11,
    h11_request,
    h11_response,
    ours_request,
    ours_response,
)

OK = b"HTTP/1.1 200 OK\r\n"


def outcome_everywhere(wire: bytes) -> Outcome:
    """Our outcome, the same whole, byte by byte and at every single cut, and what h11's
    (with our deliberate differences) says it should be."""
    whole = ours_response([wire])
    assert ours_response([wire[i : i + 1] for i in range(len(wire))]) == whole
    for cut in range(1, len(wire)):
        assert ours_response([wire[:cut], wire[cut:]]) == whole, cut
    assert whole == expected_from_h11(wire, h11_response(wire))
    return whole


@pytest.mark.parametrize(
    ("wire", "framing", "length", "reusable"),
    [
        (OK + b"content-length: 5\r\n\r\nhello", LENGTH, 5, True),
        (OK + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n", LENGTH, 5, True),
        (OK + b"content-length: 5, 5\r\n\r\n", LENGTH, 5, True),
        (OK + b"content-length: 0\r\n\r\n", LENGTH, 0, True),
        (OK + b"transfer-encoding: Chunked\r\n\r\n0\r\n\r\n", CHUNKED, 0, True),
        (OK + b"\r\nhello", CLOSE, 0, False),  # no framing: read until the server closes
        (OK + b"connection: close\r\ncontent-length: 2\r\n\r\nok", LENGTH, 2, False),
        (OK + b"Connection: keep-alive, Close\r\ncontent-length: 2\r\n\r\n", LENGTH, 2, False),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", LENGTH, 2, False),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n", LENGTH, 0, True),
        (b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n", LENGTH, 0, True),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"content-length: 1\r\n\r\nx", LENGTH, 1, True),
        (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201\r\n\r\n", CLOSE, 0, False),
        (b"HTTP/1.1 200 OK\ncontent-length: 1\n\nx", LENGTH, 1, True),  # bare LF, as h11
        (b"HTTP/1.1 200 \r\ncontent-length: 1\r\n\r\nx", LENGTH, 1, True),  # empty reason
        (OK + b"x:\r\nY:  a  b \t\r\ncontent-length: 1\r\n\r\nx", LENGTH, 1, True),
    ],
)
def test_framing_and_reuse_agree_with_h11(
    wire: bytes, framing: str, length: int, reusable: bool
) -> None:
    got = outcome_everywhere(wire)
    assert (got.kind, got.framing, got.length, got.reusable) == ("head", framing, length, reusable)


def test_headers_are_lower_cased_joined_and_the_rest_kept() -> None:
    wire = OK + b"X-A: 1\r\nx-a: 2\r\nContent-Type: text/plain\r\ncontent-length: 3\r\n\r\nabcde"
    got = outcome_everywhere(wire)
    assert dict(got.headers) == {"x-a": "1, 2", "content-type": "text/plain", "content-length": "3"}
    assert got.rest == b"abcde"  # the pool counts 3 and sees 2 extra bytes


@pytest.mark.parametrize(
    "wire",
    [
        b"SMTP ready\r\n\r\n",
        b"\r\nHTTP/1.1 200 OK\r\n\r\n",  # an empty line before the status line
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",  # we never asked
        b"http/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
        OK + b"bad name: x\r\n\r\n",
        OK + b"name : x\r\n\r\n",
        OK + b": x\r\n\r\n",
        OK + b"x: a\x00b\r\n\r\n",
        OK + b"x: a\rb\r\n\r\n",
        OK + b"x: a\x0bb\r\n\r\n",
        OK + b"x: a\r\r\n\r\n",
        OK + b" x: a\r\n\r\n",  # a continuation line at the start
        OK + b"content-length: 5, 6\r\n\r\n",
        OK + b"content-length: 5\r\ncontent-length: 6\r\n\r\n",
        OK + b"content-length: -1\r\n\r\n",
        OK + b"content-length: +1\r\n\r\n",
        OK + b"content-length: 1 2\r\n\r\n",
        OK + b"content-length:\r\n\r\n",
        OK + b"content-length: \xb2\r\n\r\n",  # a digit to str.isdigit, not to HTTP
        OK + b"content-length: " + b"9" * 21 + b"\r\n\r\n",
        OK + b"transfer-encoding: gzip, chunked\r\n\r\n",
        OK + b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
        OK + b"transfer-encoding: identity\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\ncontent-length: x\r\n\r\n" + OK + b"\r\n",
    ],
)
def test_what_h11_refuses_is_refused(wire: bytes) -> None:
    assert h11_response(wire) == REFUSED
    assert outcome_everywhere(wire) == REFUSED


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.2 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/0.9 200 OK\r\n\r\n",
        OK + b"x: a\r\n b\r\ncontent-length: 0\r\n\r\n",  # obs-fold
        OK + b"x: a\r\n\tb\r\ncontent-length: 0\r\n\r\n",
    ],
)
def test_stricter_than_h11_where_it_could_misframe(wire: bytes) -> None:
    assert h11_response(wire).kind == "head"
    assert outcome_everywhere(wire) == REFUSED


def test_both_framings_read_as_chunked_but_the_connection_is_not_reused() -> None:
    wire = OK + b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    assert h11_response(wire).reusable
    got = outcome_everywhere(wire)
    assert (got.framing, got.reusable) == (CHUNKED, False)


def test_a_head_is_bounded_even_when_it_arrives_whole() -> None:
    big = OK + b"x: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    with pytest.raises(HeadError) as info:
        HeadReader().feed(big)
    assert info.value.too_large and str(MAX_HEAD_BYTES) in str(info.value)
    reader = HeadReader()
    with pytest.raises(HeadError) as info:  # and as it arrives, before it ends
        for i in range(0, len(big), 4096):
            reader.feed(big[i : i + 4096])
    assert info.value.too_large
    fits = OK + b"x: " + b"a" * (MAX_HEAD_BYTES - 100) + b"\r\n\r\n"
    assert len(fits) <= MAX_HEAD_BYTES and HeadReader().feed(fits) is not None


def test_not_http_is_refused_before_a_blank_line_arrives() -> None:
    with pytest.raises(HeadError):
        HeadReader().feed(b"\x16\x03\x01\x02\x00")  # a TLS record on a plain connection
    assert HeadReader().feed(b"HTT") is None


def test_a_head_split_in_single_bytes_is_read_in_linear_time() -> None:
    reader = HeadReader()
    wire = OK + b"x: " + b"a" * 60_000 + b"\r\n\r\n"
    for i in range(len(wire)):
        got = reader.feed(wire[i : i + 1])
    assert got is not None and len(got.headers["x"]) == 60_000


# ------------------------------------------------------------------------ request heads


HOST = ("host", "api.example.com")


@pytest.mark.parametrize(
    "headers",
    [
        [HOST, ("content-length", "2"), ("X-Mixed-Case", "v"), ("x-empty", "")],
        [HOST, ("authorization", "Bearer a b\tc"), ("x", "!#$%&'*+-.^_`|~")],
        [HOST, ("x", "\x01\x7f")],  # controls h11 lets through (not NUL, CR, LF)
    ],
)
def test_a_request_head_reads_back_as_written(headers: list[tuple[str, str]]) -> None:
    ours = ours_request(b"/v1/chat/completions?a=b", headers)
    assert ours is not None and ours == h11_request(b"/v1/chat/completions?a=b", headers)
    head = request_head(b"/v1/x", headers)
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\nhost: api.example.com\r\n")
    assert head.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("target", "header"),
    [
        (b"/ok", ("bad name", "v")),
        (b"/ok", ("", "v")),
        (b"/ok", ("x:y", "v")),
        (b"/ok", ("x", "a\r\nInjected: yes")),
        (b"/ok", ("x", "a\nb")),
        (b"/ok", ("x", "a\x00b")),
        (b"/ok", ("x", " leading")),
        (b"/ok", ("x", "trailing ")),
        (b"/ok", ("x", "a\x0bb")),
        (b"/ok", ("x", "caf\u00e9")),  # not ASCII
        (b"/ok", ("n\u00e4me", "v")),
        (b"/a b", ("x", "v")),
        (b"", ("x", "v")),
        (b"/\x7f", ("x", "v")),
    ],
)
def test_what_h11_will_not_send_we_do_not_send(target: bytes, header: tuple[str, str]) -> None:
    assert h11_request(target, [HOST, header]) is None
    assert ours_request(target, [HOST, header]) is None
