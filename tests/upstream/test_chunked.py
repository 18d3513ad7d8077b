"""The chunked body decoder: any split of a valid body gives the body; broken framing raises."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.upstream.chunked import MAX_LINE_BYTES, ChunkedBody, ChunkedError


def encode(pieces: list[bytes], trailers: bytes = b"", ext: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces if p)
    return out + b"0\r\n" + trailers + b"\r\n"


def decode(wire: bytes, cuts: list[int]) -> tuple[bytes, ChunkedBody]:
    body = ChunkedBody()
    out = b""
    last = 0
    for cut in [*sorted(cuts), len(wire)]:
        out += body.feed(wire[last:cut])
        last = cut
    return out, body


@given(
    st.lists(st.binary(max_size=40), max_size=8),
    st.lists(st.integers(0, 400), max_size=10),
    st.sampled_from([b"", b";name=value", b" ;x"]),
    st.sampled_from([b"", b"x-trailer: 1\r\n", b"a: b\r\nc: d\r\n"]),
)
def test_any_split_gives_the_body(
    pieces: list[bytes], cuts: list[int], ext: bytes, trailers: bytes
) -> None:
    wire = encode(pieces, trailers, ext)
    out, body = decode(wire, [c for c in cuts if c <= len(wire)])
    assert out == b"".join(pieces)
    assert body.done and body.unused == b""


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=6))
def test_agrees_with_h11(pieces: list[bytes]) -> None:
    wire = encode(pieces)
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")])
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + wire)
    assert isinstance(conn.next_event(), h11.Response)
    seen = b""
    while isinstance(event := conn.next_event(), h11.Data):
        seen += event.data
    assert isinstance(event, h11.EndOfMessage)
    assert decode(wire, [])[0] == seen


def test_bytes_after_the_end_are_kept_as_unused() -> None:
    body = ChunkedBody()
    assert body.feed(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1") == b"abc"
    assert body.done and body.unused == b"HTTP/1.1"


def test_a_whole_chunk_in_one_read_is_one_slice() -> None:
    body = ChunkedBody()
    assert body.feed(b"5\r\nhello\r\n") == b"hello"
    assert not body.done


@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    st.sampled_from([b"%x", b"%X", b"000%x"]),
)
def test_chunks_fed_whole_as_an_upstream_sends_them(pieces: list[bytes], size: bytes) -> None:
    """Each read one whole chunk (the common case, a slice): the same body, then the end."""
    body = ChunkedBody()
    out = [body.feed(size % len(p) + b"\r\n" + p + b"\r\n") for p in pieces]
    assert out == pieces
    assert body.feed(b"0\r\n\r\n") == b"" and body.done


@pytest.mark.parametrize(
    "wire",
    [
        b"+3\r\nabc\r\n",  # what int() takes but the grammar does not
        b" 3\r\nabc\r\n",
        b"3_0\r\nabc\r\n",
        b"3\r\nabcd\r",  # the data's length off by one, in one read
        b"3\r\nab\r\n\r",
    ],
)
def test_a_whole_chunk_misframed_in_one_read_raises(wire: bytes) -> None:
    with pytest.raises(ChunkedError):
        ChunkedBody().feed(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nabc\r\n",  # not hex
        b"-1\r\n",
        b"\r\n",  # empty size
        b"3\r\nabcXY",  # no CRLF after the data
        b"3\r\nabc\rX",
        b"1000000000000000\r\n",  # too many digits
        b"0x3\r\nabc\r\n",
    ],
)
def test_broken_framing_raises(wire: bytes) -> None:
    with pytest.raises(ChunkedError):
        ChunkedBody().feed(wire)


def test_an_endless_size_line_raises() -> None:
    body = ChunkedBody()
    body.feed(b"1" * 10)
    with pytest.raises(ChunkedError):
        body.feed(b";" + b"x" * MAX_LINE_BYTES)


def test_endless_trailers_raise() -> None:
    body = ChunkedBody()
    body.feed(b"0\r\n")
    with pytest.raises(ChunkedError):
        for _ in range(10_000):
            body.feed(b"x-trailer: " + b"y" * 100 + b"\r\n")
