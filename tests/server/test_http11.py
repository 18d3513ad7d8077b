"""gateway/server/http11.py on bytes: request heads and chunked request bodies.

Every refusal named in the module docstring has a case here; the chunked decoder is
checked at every split of its input, and both parsers are fuzzed (anything they do
with arbitrary bytes other than return or raise HTTPParseError is a bug). Where h11
(the parser hypercorn uses) also accepts a head, both must agree on its framing: a
disagreement between two parsers on where a body ends is what request smuggling is.
"""

from __future__ import annotations

import itertools

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.server.http11 import (
    MAX_CHUNK_LINE,
    MAX_CHUNKS,
    MAX_HEADERS,
    MAX_TRAILERS,
    ChunkedDecoder,
    HTTPParseError,
    RequestHead,
    find_head_end,
    parse_request_head,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def head(*lines: bytes | str, eol: bytes = b"\r\n") -> bytes:
    """A request head as the server hands it to the parser (no blank line)."""
    return eol.join(x.encode("latin-1") if isinstance(x, str) else x for x in lines)


def post(*headers: bytes | str) -> bytes:
    return head("POST / HTTP/1.1", "Host: a", *headers)


def get(*headers: bytes | str, version: str = "HTTP/1.1", target: str = "/") -> bytes:
    return head(f"GET {target} {version}", *headers)


def refused(raw: bytes) -> int:
    with pytest.raises(HTTPParseError) as info:
        parse_request_head(raw)
    return info.value.status


# ------------------------------------------------------------------ request heads


def test_a_plain_request() -> None:
    h = parse_request_head(
        head("POST /v1/chat?x=1 HTTP/1.1", "Host: a", "Content-Type:  text/plain \t", "X-E:")
    )
    assert h.method == "POST"
    assert h.target == b"/v1/chat?x=1"
    assert h.path == "/v1/chat"
    assert h.raw_path == b"/v1/chat"
    assert h.query == b"x=1"
    assert h.http_version == "1.1"
    assert h.headers == [(b"host", b"a"), (b"content-type", b"text/plain"), (b"x-e", b"")]
    assert (h.content_length, h.chunked, h.keep_alive, h.expect_continue) == (
        None,
        False,
        True,
        False,
    )


def test_bare_lf_and_mixed_line_ends_in_the_head() -> None:
    for eol in (b"\n", b"\r\n"):
        h = parse_request_head(head("GET / HTTP/1.1", "Host: a", "X: 1", eol=eol))
        assert h.headers == [(b"host", b"a"), (b"x", b"1")]
    h = parse_request_head(b"GET / HTTP/1.1\nHost: a\r\nX: 1")
    assert h.headers == [(b"host", b"a"), (b"x", b"1")]


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", b""),
        ("/a/b?c=1&d=2", "/a/b", b"c=1&d=2"),
        ("/a?", "/a", b""),
        ("/a?b?c=/d", "/a", b"b?c=/d"),
        ("/a%20b?q=%C3%A9", "/a%20b", b"q=%C3%A9"),  # decoding is the app's business
        ("//double", "//double", b""),
        ("*", "*", b""),
        # absolute-form (RFC 9112 3.2.2): the path and query of the URI
        ("http://example.com/v1/x?a=1", "/v1/x", b"a=1"),
        ("HTTPS://example.com:8443/p", "/p", b""),
        ("http://example.com", "/", b""),
        ("http://example.com?a=1", "/", b"a=1"),
        ("http://example.com?next=/x/y", "/", b"next=/x/y"),
        ("http://user@example.com/p?q", "/p", b"q"),
    ],
)
def test_targets_and_the_query_split(target: str, path: str, query: bytes) -> None:
    h = parse_request_head(get("Host: a", target=target))
    assert (h.path, h.query, h.target) == (path, query, target.encode())
    assert h.raw_path == path.encode()


def test_obs_text_and_tabs_are_allowed_in_values() -> None:
    h = parse_request_head(get("Host: a", b"X-Name: caf\xc3\xa9\tau lait"))
    assert h.headers[1] == (b"x-name", b"caf\xc3\xa9\tau lait")


def test_content_length_forms_accepted() -> None:
    assert parse_request_head(get("Host: a", "Content-Length: 0")).content_length == 0
    assert parse_request_head(get("Host: a", "content-length:\t 42 ")).content_length == 42
    twice = get("Host: a", "Content-Length: 7", "Content-Length: 7")
    assert parse_request_head(twice).content_length == 7
    assert parse_request_head(get("Host: a", "Content-Length: 007")).content_length == 7
    big = "9" * 18
    assert parse_request_head(get("Host: a", f"Content-Length: {big}")).content_length == int(big)


def test_chunked_transfer_encoding_accepted() -> None:
    for value in ("chunked", "Chunked", " CHUNKED "):
        h = parse_request_head(post(f"Transfer-Encoding: {value}"))
        assert h.chunked and h.content_length is None


def test_http10_needs_no_host() -> None:
    h = parse_request_head(head("GET / HTTP/1.0"))
    assert h.http_version == "1.0" and h.headers == []


def test_exactly_max_headers_is_fine() -> None:
    lines = ["Host: a"] + [f"X-{i}: v" for i in range(MAX_HEADERS - 1)]
    assert len(parse_request_head(get(*lines)).headers) == MAX_HEADERS


REFUSALS = [
    # request smuggling: framing both ways, or a framing we do not speak
    pytest.param(post("Content-Length: 5", "Transfer-Encoding: chunked"), 400, id="cl+te"),
    pytest.param(post("Transfer-Encoding: chunked", "Content-Length: 5"), 400, id="te+cl"),
    pytest.param(post("Transfer-Encoding: gzip"), 501, id="te gzip"),
    pytest.param(post("Transfer-Encoding: gzip, chunked"), 501, id="te gzip,chunked"),
    pytest.param(post("Transfer-Encoding: chunked, chunked"), 501, id="te chunked,chunked"),
    pytest.param(
        post("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 501, id="te twice"
    ),
    pytest.param(post("Transfer-Encoding:"), 501, id="te empty"),
    pytest.param(post("Transfer-Encoding: xchunked"), 501, id="te x-chunked"),
    pytest.param(head("POST / HTTP/1.0", "Transfer-Encoding: chunked"), 400, id="te in 1.0"),
    pytest.param(get("Host: a", "Content-Length: 5", "Content-Length: 6"), 400, id="cl conflict"),
    pytest.param(get("Host: a", "Content-Length: 5, 5"), 400, id="cl list"),
    pytest.param(get("Host: a", "Content-Length: +5"), 400, id="cl plus"),
    pytest.param(get("Host: a", "Content-Length: -5"), 400, id="cl minus"),
    pytest.param(get("Host: a", "Content-Length: 5 5"), 400, id="cl inner space"),
    pytest.param(get("Host: a", "Content-Length: 0x5"), 400, id="cl hex"),
    pytest.param(get("Host: a", "Content-Length: 5a"), 400, id="cl hex digits"),
    pytest.param(get("Host: a", "Content-Length:"), 400, id="cl empty"),
    pytest.param(get("Host: a", "Content-Length: 5.0"), 400, id="cl float"),
    pytest.param(get("Host: a", "Content-Length: \u0665".encode()), 400, id="cl unicode digit"),
    pytest.param(get("Host: a", "Content-Length: " + "1" * 19), 400, id="cl 19 digits"),
    # header syntax
    pytest.param(get("Host: a", "X: 1", " 2"), 400, id="obs-fold space"),
    pytest.param(get("Host: a", "X: 1", "\t2"), 400, id="obs-fold tab"),
    pytest.param(get("Host : a"), 400, id="space before colon"),
    pytest.param(get("Host\t: a"), 400, id="tab before colon"),
    pytest.param(get("Host: a", "X-No-Colon"), 400, id="no colon"),
    pytest.param(get("Host: a", ": x"), 400, id="empty name"),
    pytest.param(get("Host: a", "X(y): 1"), 400, id="non-token name"),
    pytest.param(get("Host: a", b"X: a\x00b"), 400, id="nul in value"),
    pytest.param(get("Host: a", b"X: a\x01b"), 400, id="ctl in value"),
    pytest.param(get("Host: a", b"X: a\x7fb"), 400, id="del in value"),
    pytest.param(get("Host: a", b"X: a\rb"), 400, id="cr in value"),
    pytest.param(get("Host: a", b"X: \x1b[31m"), 400, id="esc in value"),
    pytest.param(get("Host: a", "Host: b"), 400, id="two hosts"),
    pytest.param(get("Host: a", "Host: a"), 400, id="two identical hosts"),
    pytest.param(get("X: 1"), 400, id="no host in 1.1"),
    pytest.param(get("Host: a", "", "X: 1"), 400, id="blank line inside"),
    # request line
    pytest.param(get("Host: a", version="HTTP/2.0"), 505, id="http/2.0"),
    pytest.param(get("Host: a", version="HTTP/1.2"), 505, id="http/1.2"),
    pytest.param(get("Host: a", version="HTTP/0.9"), 505, id="http/0.9"),
    pytest.param(get("Host: a", version="HTTP/x.y"), 400, id="http/x.y"),
    pytest.param(get("Host: a", version="HTTP/1.1x"), 400, id="http/1.1x"),
    pytest.param(get("Host: a", version="HTTP/1"), 400, id="http/1"),
    pytest.param(get("Host: a", version="http/1.1"), 400, id="lower-case http"),
    pytest.param(get("Host: a", version="FTP/1.1"), 400, id="other protocol"),
    pytest.param(head("GET /", "Host: a"), 400, id="no version"),
    pytest.param(head("GET / HTTP/1.1 x", "Host: a"), 400, id="extra part"),
    pytest.param(head("GET  / HTTP/1.1", "Host: a"), 400, id="double space"),
    pytest.param(head("GET\t/ HTTP/1.1", "Host: a"), 400, id="tab separator"),
    pytest.param(head(" / HTTP/1.1", "Host: a"), 400, id="empty method"),
    pytest.param(head("GE(T / HTTP/1.1", "Host: a"), 400, id="bad method"),
    pytest.param(head(b"GE\x00T / HTTP/1.1", "Host: a"), 400, id="nul in method"),
    pytest.param(head("", "Host: a"), 400, id="empty line"),
    pytest.param(b"GET / HTTP/1.1\rHost: a", 400, id="bare cr line end"),
    pytest.param(get("Host: a", target="a/b"), 400, id="relative target"),
    pytest.param(get("Host: a", target="example.com:443"), 400, id="authority-form"),
    pytest.param(get("Host: a", target="ftp://example.com/"), 400, id="other scheme"),
    pytest.param(head(b"GET /a\x00 HTTP/1.1", "Host: a"), 400, id="nul in target"),
    pytest.param(head(b"GET /a\x7f HTTP/1.1", "Host: a"), 400, id="del in target"),
    pytest.param(head(b"GET /a\rb HTTP/1.1", "Host: a"), 400, id="cr in target"),
    pytest.param(head(b"GET /caf\xc3\xa9 HTTP/1.1", "Host: a"), 400, id="non-ascii path"),
    pytest.param(
        get("Host: a", *[f"X-{i}: v" for i in range(MAX_HEADERS)]), 431, id="too many headers"
    ),
]


@pytest.mark.parametrize(("raw", "status"), REFUSALS)
def test_refusals(raw: bytes, status: int) -> None:
    assert refused(raw) == status


def test_parse_error_carries_status_and_message() -> None:
    e = HTTPParseError(431, "too big")
    assert (e.status, e.message, str(e)) == (431, "too big", "too big")


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", [], True),
        ("HTTP/1.1", ["close"], False),
        ("HTTP/1.1", ["Close"], False),
        ("HTTP/1.1", ["keep-alive, close"], False),
        ("HTTP/1.1", ["upgrade", "CLOSE"], False),
        ("HTTP/1.1", ["closed"], True),
        ("HTTP/1.1", ["keep-alive"], True),
        ("HTTP/1.0", [], False),
        ("HTTP/1.0", ["keep-alive"], True),
        ("HTTP/1.0", ["Keep-Alive"], True),
        ("HTTP/1.0", ["foo,keep-alive"], True),
        ("HTTP/1.0", ["keep-alive", "close"], False),
        ("HTTP/1.0", ["close"], False),
    ],
)
def test_keep_alive_rules(version: str, connection: list[str], keep_alive: bool) -> None:
    lines = [f"Connection: {c}" for c in connection]
    h = parse_request_head(get("Host: a", *lines, version=version))
    assert h.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("version", "expect", "expected"),
    [
        ("HTTP/1.1", "100-continue", True),
        ("HTTP/1.1", "100-Continue", True),
        ("HTTP/1.1", None, False),
        ("HTTP/1.1", "something-else", False),
        ("HTTP/1.0", "100-continue", False),  # 1.0 clients do not wait for a 100
    ],
)
def test_expect_continue(version: str, expect: str | None, expected: bool) -> None:
    lines = ["Host: a", "Content-Length: 3"] + ([f"Expect: {expect}"] if expect else [])
    h = parse_request_head(head(f"POST / {version}", *lines))
    assert h.expect_continue is expected


# ------------------------------------------------------------------ find_head_end


@pytest.mark.parametrize(
    ("buf", "found"),
    [
        (b"", None),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r", None),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", (24, 27)),
        (b"GET / HTTP/1.1\nHost: a\n\nBODY", (22, 24)),
        (b"GET / HTTP/1.1\nHost: a\r\n\nBODY", (23, 25)),
        (b"GET / HTTP/1.1\nHost: a\n\r\nBODY", (22, 25)),
        (b"GET / HTTP/1.1\r\nX: a\r\r\n", None),  # CR CR LF is not a blank line
    ],
)
def test_find_head_end(buf: bytes, found: tuple[int, int] | None) -> None:
    assert find_head_end(buf) == found
    if found is not None:
        assert buf[found[1] :] == b"BODY"


def test_find_head_end_from_an_offset() -> None:
    buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    for start in range(len(buf) - 2):
        assert find_head_end(buf, start) == (24, 27)
    assert find_head_end(buf, len(buf)) is None


_line_end = st.sampled_from([b"\r\n", b"\n"])
_field_line = st.builds(
    lambda name, value: name + b": " + value,
    st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z"),
    st.from_regex(rb"\A[ -~]{0,30}\Z"),
)


@FUZZ
@given(
    lines=st.lists(_field_line, max_size=8),
    ends=st.lists(_line_end, min_size=10, max_size=10),
    body=st.binary(max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
)
def test_find_head_end_incrementally(
    lines: list[bytes], ends: list[bytes], body: bytes, cuts: list[int]
) -> None:
    """The head ends where it ends whatever the line ends; and scanning a growing buffer
    from 2 bytes before its previous end (as the server does) finds the same end."""
    parts = [b"GET / HTTP/1.1", *lines]
    raw = b"".join(p + e for p, e in zip(parts, ends, strict=False)) + ends[-1] + body
    expected = find_head_end(raw)
    assert expected is not None
    assert raw[expected[1] :] == body
    scanned = 0
    found = None
    for cut in [*sorted(set(cuts)), len(raw)]:
        prefix = raw[:cut]
        found = find_head_end(prefix, scanned)
        if found is not None:
            break
        scanned = max(len(prefix) - 2, 0)
    assert found == expected


# ------------------------------------------------------------------ chunked bodies


def decode(*pieces: bytes) -> tuple[bytes, ChunkedDecoder]:
    d = ChunkedDecoder()
    out = b"".join(d.feed(p) for p in pieces)
    return out, d


def test_chunked_simple() -> None:
    out, d = decode(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert (out, d.done, d.unused) == (b"hello world", True, b"")


def test_chunked_hex_sizes_and_data_containing_crlf() -> None:
    data = b"0123456789\r\n\r\n0\r\n\r\n..\r"  # 22 bytes that look like framing
    out, d = decode(b"16\r\n" + data + b"\r\n0000\r\n\r\n")
    assert out == data and d.done
    out, d = decode(b"000a\r\n0123456789\r\n0\r\n\r\n")
    assert out == b"0123456789" and d.done


def test_chunked_extensions_are_ignored() -> None:
    out, d = decode(b'5;name=value\r\nhello\r\n1 ;a;b="quoted ; \\" value"\r\n!\r\n0;last\r\n\r\n')
    assert (out, d.done) == (b"hello!", True)


def test_chunked_trailers_are_dropped() -> None:
    out, d = decode(b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: two\r\n\r\nNEXT")
    assert (out, d.done, d.unused) == (b"abc", True, b"NEXT")


def test_chunked_keeps_the_pipelined_tail() -> None:
    tail = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    out, d = decode(b"2\r\nhi\r\n0\r\n\r\n" + tail)
    assert (out, d.done, d.unused) == (b"hi", True, tail)


def test_chunked_not_done_until_the_blank_line() -> None:
    d = ChunkedDecoder()
    assert d.feed(b"2\r\nhi\r\n0\r\n") == b"hi"
    assert not d.done
    assert d.feed(b"X: y\r\n") == b"" and not d.done
    assert d.feed(b"\r\n") == b"" and d.done


def test_chunked_returns_data_as_it_arrives() -> None:
    d = ChunkedDecoder()
    assert d.feed(b"a\r\n01234") == b"01234"
    assert d.feed(b"56789") == b"56789"
    assert d.feed(b"\r") == b""
    assert d.feed(b"\n0\r\n\r\n") == b"" and d.done


VALID_BODY = b'4;ext="x"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\nTAIL'


def test_chunked_split_at_every_boundary() -> None:
    whole, d = decode(VALID_BODY)
    assert (whole, d.unused) == (b"Wikipedia in\r\n\r\nchunks.", b"TAIL")
    for i in range(len(VALID_BODY) + 1):
        for j in range(i, len(VALID_BODY) + 1):
            pieces = [VALID_BODY[:i], VALID_BODY[i:j], VALID_BODY[j:]]
            assert feed_until_done(pieces) == (whole, b"TAIL"), (i, j)
    byte_by_byte = [VALID_BODY[i : i + 1] for i in range(len(VALID_BODY))]
    assert feed_until_done(byte_by_byte) == (whole, b"TAIL")


def feed_until_done(pieces: list[bytes]) -> tuple[bytes, bytes]:
    """Feed pieces until the body is done, as the server does; (body, the bytes after)."""
    decoder = ChunkedDecoder()
    out = bytearray()
    for i, piece in enumerate(pieces):
        out += decoder.feed(piece)
        if decoder.done:
            return bytes(out), decoder.unused + b"".join(pieces[i + 1 :])
    raise AssertionError("the body never ended")


_h11_ext = st.one_of(st.just(b""), st.from_regex(rb"\A(;[a-z]{1,5}(=[a-z0-9]{1,5})?){1,3}\Z"))
_ext = st.one_of(_h11_ext, st.just(b' ;q="a;b"'))  # BWS before ";" (RFC 9112 7.1.1): not h11
_trailer = st.from_regex(rb"\A[A-Za-z][A-Za-z-]{0,10}: [ -~]{0,12}\Z")


@st.composite
def chunked_bodies(
    draw: st.DrawFn, ext: st.SearchStrategy[bytes] = _ext
) -> tuple[bytes, bytes, bytes]:
    """(encoded body and tail, decoded data, tail)"""
    wire = bytearray()
    data = bytearray()
    chunks = st.tuples(st.binary(min_size=1, max_size=40), st.booleans(), ext)
    for payload, upper, ext_ in draw(st.lists(chunks, max_size=6)):
        size = b"%X" % len(payload) if upper else b"%x" % len(payload)
        wire += size + ext_ + b"\r\n" + payload + b"\r\n"
        data += payload
    wire += b"0" + draw(ext) + b"\r\n"
    for line in draw(st.lists(_trailer, max_size=3)):
        wire += line + b"\r\n"
    wire += b"\r\n"
    tail = draw(st.one_of(st.just(b""), st.binary(max_size=30)))
    return bytes(wire + tail), bytes(data), tail


@FUZZ
@given(body=chunked_bodies(), cuts=st.lists(st.integers(min_value=0, max_value=500)))
def test_any_split_of_a_valid_chunked_body_decodes_the_same(
    body: tuple[bytes, bytes, bytes], cuts: list[int]
) -> None:
    wire, data, tail = body
    points = [0, *sorted(c for c in cuts if c <= len(wire)), len(wire)]
    pieces = [wire[a:b] for a, b in itertools.pairwise(points)]
    assert feed_until_done(pieces) == (data, tail)


@FUZZ
@given(body=chunked_bodies(_h11_ext))
def test_chunked_agrees_with_h11(body: tuple[bytes, bytes, bytes]) -> None:
    """h11 >= 0.16 (strict since CVE-2025-43859) decodes our valid bodies identically."""
    wire, data, _ = body
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + wire)
    got = bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            got += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            assert isinstance(event, h11.Request)
    assert bytes(got) == data


BAD_CHUNKED: list[tuple[str, bytes]] = [
    ("empty size", b"\r\nhello\r\n0\r\n\r\n"),
    ("non-hex size", b"g\r\nhello\r\n0\r\n\r\n"),
    ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
    ("minus sign", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("leading space", b" 5\r\nhello\r\n0\r\n\r\n"),
    ("inner space", b"5 5\r\nhello\r\n0\r\n\r\n"),
    ("underscore", b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n"),
    ("16 hex digits", b"1" + b"0" * 15 + b"\r\n"),
    ("unicode digit", "\u0665\r\nhello\r\n0\r\n\r\n".encode()),
    ("data too long", b"5\r\nhelloX\r\n0\r\n\r\n"),
    ("data too short", b"5\r\nhell\r\n0\r\n\r\n"),
    ("no crlf after data", b"5\r\nhello0\r\n\r\n"),
    ("cr x after data", b"5\r\nhello\rX0\r\n\r\n"),
    ("any 2 bytes after data", b"5\r\nhelloXY0\r\n\r\n"),  # the h11 CVE-2025-43859 form
    # bare LF in chunked framing: RFC 9112 7.1 allows only CRLF, and docs/reliability.md R11
    # requires refusing it (intermediaries that read LF as part of an extension desync)
    ("bare lf after size", b"5\nhello\r\n0\r\n\r\n"),
    ("bare lf after data", b"5\r\nhello\n0\r\n\r\n"),
    ("bare lf after last size", b"5\r\nhello\r\n0\n\r\n"),
    ("bare lf ends trailers", b"5\r\nhello\r\n0\r\n\n"),
    ("bare lf after a trailer", b"5\r\nhello\r\n0\r\nX: y\n\r\n"),
    ("bare lf in an extension", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
    ("bare cr in an extension", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
    ("nul in an extension", b"5;a\x00\r\nhello\r\n0\r\n\r\n"),
    ("ctl in a trailer", b"0\r\nX: a\x01b\r\n\r\n"),
]


@pytest.mark.parametrize("wire", [w for _, w in BAD_CHUNKED], ids=[n for n, _ in BAD_CHUNKED])
def test_chunked_refusals(wire: bytes) -> None:
    with pytest.raises(HTTPParseError) as info:
        decode(wire)
    assert info.value.status == 400
    d = ChunkedDecoder()  # byte by byte: no refusal depends on how the bytes arrive
    with pytest.raises(HTTPParseError):
        for i in range(len(wire)):
            d.feed(wire[i : i + 1])


def test_chunked_size_line_length_is_bounded() -> None:
    d = ChunkedDecoder()
    d.feed(b"5;" + b"x" * (MAX_CHUNK_LINE - 10))
    with pytest.raises(HTTPParseError):
        d.feed(b"x" * 20)


def test_the_number_of_chunks_is_bounded() -> None:
    """A body of tiny chunks costs CPU per chunk (docs/reliability.md R12): past MAX_CHUNKS
    in one body it is refused, whatever their size."""
    d = ChunkedDecoder()
    assert d.feed(b"1\r\nx\r\n" * MAX_CHUNKS) == b"x" * MAX_CHUNKS
    with pytest.raises(HTTPParseError, match="chunks") as info:
        d.feed(b"1\r\nx\r\n")
    assert info.value.status == 400
    whole = ChunkedDecoder()  # the last chunk (size 0) does not count
    whole.feed(b"1\r\nx\r\n" * MAX_CHUNKS + b"0\r\n\r\n")
    assert whole.done


def test_chunked_trailers_are_bounded() -> None:
    d = ChunkedDecoder()
    d.feed(b"0\r\nX: " + b"x" * (MAX_TRAILERS - 10))
    with pytest.raises(HTTPParseError):
        d.feed(b"x" * 20)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_chunked_decoder_on_arbitrary_bytes(pieces: list[bytes]) -> None:
    d = ChunkedDecoder()
    try:
        for piece in pieces:
            assert isinstance(d.feed(piece), bytes)
            if d.done:
                break
    except HTTPParseError as e:
        assert e.status == 400


# ------------------------------------------------------------------ fuzz


def check_head(h: RequestHead) -> None:
    assert h.method and h.http_version in ("1.0", "1.1")
    assert h.path == "*" or h.path.startswith("/")
    assert h.raw_path == h.path.encode()
    assert not (h.chunked and h.content_length is not None)
    assert h.content_length is None or h.content_length >= 0
    assert len(h.headers) <= MAX_HEADERS
    for name, value in h.headers:
        assert name == name.lower() and b":" not in name
        assert b"\r" not in value and b"\n" not in value and b"\x00" not in value


@FUZZ
@given(st.binary(max_size=300))
def test_parse_request_head_on_arbitrary_bytes(raw: bytes) -> None:
    try:
        h = parse_request_head(raw)
    except HTTPParseError as e:
        assert e.status in (400, 431, 501, 505)
    else:
        check_head(h)


_METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"get", b"G\x00T", b"", b"PO ST"])
_TARGETS = st.sampled_from(
    [b"/", b"/a?b", b"*", b"http://h/p?q", b"http://h?q", b"a", b"/\x7f", b"/\xc3\xa9", b""]
)
_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"HTTP/x.y"])
_NAMES = st.sampled_from(
    [
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"Expect",
        b"X-A",
        b"Host ",
        b" Host",
        b"",
        b"Content-Length\x00",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            b"a",
            b"0",
            b"5",
            b" 5 ",
            b"+5",
            b"5,5",
            b"chunked",
            b"Chunked",
            b"chunked, gzip",
            b"close",
            b"keep-alive",
            b"100-continue",
            b"",
            b"\x00",
            b"\r",
            b"\t",
        ]
    ),
    st.binary(max_size=8),
)
_SEPARATORS = st.sampled_from([b":", b": ", b":\t", b" :", b""])


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    line = draw(_METHODS) + b" " + draw(_TARGETS) + b" " + draw(_VERSIONS)
    fields = draw(
        st.lists(st.tuples(_NAMES, _SEPARATORS, _VALUES, st.sampled_from([b"\r\n", b"\n"])))
    )
    out = line
    for name, sep, value, eol in fields:
        out += eol + name + sep + value
    return out


@FUZZ
@given(mutated_heads())
def test_parse_request_head_on_mutated_heads(raw: bytes) -> None:
    try:
        h = parse_request_head(raw)
    except HTTPParseError as e:
        assert e.status in (400, 431, 501, 505)
        return
    check_head(h)
    # Where h11 accepts the same request, it must see the same framing.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n\r\n")
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return
    assert isinstance(event, h11.Request)
    te = [v for n, v in event.headers if n == b"transfer-encoding"]
    cl = [int(v) for n, v in event.headers if n == b"content-length"]
    assert h.chunked == bool(te)
    assert h.content_length == (cl[0] if cl else None)


@FUZZ
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=210))
def test_find_head_end_on_arbitrary_bytes(buf: bytes, start: int) -> None:
    found = find_head_end(buf, start)
    if found is not None:
        end, body = found
        assert start <= end < body <= len(buf)
        assert buf[end : end + 1] == b"\n" and buf[end + 1 : body] in (b"\n", b"\r\n")
        assert find_head_end(bytearray(buf), start) == found
