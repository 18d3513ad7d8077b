"""Differential property tests: gateway/upstream/http1.py against h11 on generated heads.

Response heads come from a grammar with valid and invalid pieces (status lines, names,
values, whitespace, line ends, repeats, Content-Length and Transfer-Encoding
combinations, 1xx heads before the final one), followed by some body bytes; the
outcome (refused, or status, headers, framing, reuse and the bytes after the head) must
be h11's, with http1's deliberate strictness applied, and the same however the bytes
are split. Request heads: names and values h11 refuses we refuse, and what we write
h11's server reads as h11's client would have written it.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.upstream.h11_reference import (
    expected_from_h11,
    h11_request,
    h11_response,
    ours_request,
    ours_response,
)

# 500 examples per property in every `make test` (~3 s); 20,000 each ran clean once by
# hand. The suite's whole run must stay within its budget on 2 cores.
SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Each piece is drawn from its valid forms most of the time, from invalid or unusual ones
# (`_ODD`) now and then, so that most heads are read and every refusal is still met.
_VERSIONS = ([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1"])
_FINAL_CODES = (
    [b"200", b"201", b"204", b"304", b"404", b"500", b"999"],
    [b"000", b"20", b"2000", b"2x0"],
)
_INTERIM_CODES = ([b"100", b"102", b"103", b"199"], [b"101", b"099"])
_REASONS = ([b" OK", b"", b" ", b" Not Found", b" a\tb"], [b" \x01\x7f\xe9", b" a\x00", b" a\x0c"])
_EOLS = ([b"\r\n", b"\n"], [b"\r", b"\r\r\n"])
_NAMES = (
    [b"content-type", b"X-Dup", b"x-dup", b"!#$%&'*+-.^_`|~"],
    [b"", b"bad name", b"x\x00", b"x\xe9", b"x:y", b" lead", b"\tlead", b"x\x7f"],
)  # fmt: skip
_SEPS = ([b":", b": ", b":\t", b":  "], [b" :", b"\t:"])
_VALUES = (
    [b"a", b"a b", b"a  \t b", b"a\x01b", b"", b"\xe9", b"text/event-stream"],
    [b"a\x00", b"a\rb", b"a\x0bb", b"a\x0c"],
)
# Framing fields, each with its own values: the name, then (usual values, odd ones).
_FRAMING = {
    b"Content-Length": ([b"5", b"0", b"05", b" 7 ", b"5, 5", b"5,5", b"1" * 20],
                        [b"5, 6", b"abc", b"+5", b"-1", b"1" * 21, b"\xb2", b"", b"5 5"]),
    b"content-length": ([b"5"], [b"6"]),
    b"Transfer-Encoding": ([b"chunked", b"Chunked", b"CHUNKED"],
                           [b"gzip", b"gzip, chunked", b"chunked, chunked", b"identity", b""]),
    b"connection": ([b"close", b"Close", b"keep-alive", b"keep-alive, close", b"closed"], []),
}  # fmt: skip
_TRAILING: tuple[list[bytes], list[bytes]] = ([b"", b" ", b"\t", b" \t "], [])
_ODD = 40  # one piece in this many is drawn from the odd forms


def _odd(draw: st.DrawFn) -> bool:
    """True one time in `_ODD` (hypothesis favours the ends of an integer range, so the
    odd case is one value in its middle)."""
    return bool(draw(st.sampled_from(range(_ODD))) == _ODD // 2)


def _piece(draw: st.DrawFn, forms: tuple[list[bytes], list[bytes]]) -> bytes:
    usual, odd = forms
    if odd and _odd(draw):
        return draw(st.sampled_from(odd) | st.binary(max_size=4))
    return draw(st.sampled_from(usual))


@st.composite
def _head(draw: st.DrawFn, final: bool) -> bytes:
    codes = _FINAL_CODES if final else _INTERIM_CODES
    status = _piece(draw, _VERSIONS) + b" " + _piece(draw, codes) + _piece(draw, _REASONS)
    eol = _piece(draw, _EOLS)
    lines = [status]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 2)) == 0:
            name = draw(st.sampled_from(sorted(_FRAMING)))
            name, value = name, _piece(draw, _FRAMING[name])
        else:
            name, value = _piece(draw, _NAMES), _piece(draw, _VALUES)
        line = name + _piece(draw, _SEPS) + value + _piece(draw, _TRAILING)
        lines.append(line)
    if _odd(draw):  # obs-fold
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from([b" x", b"\tx y"])))
    return b"".join(line + _piece(draw, _EOLS) for line in lines) + eol


@st.composite
def _response(draw: st.DrawFn) -> bytes:
    interim = draw(st.lists(_head(final=False), max_size=2))
    body = draw(st.sampled_from([b"", b"hello", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"]))
    return b"".join(interim) + draw(_head(final=True)) + body


def _pieces(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts})
    bounds = [0, *points, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds)]


@SETTINGS
@given(_response(), st.lists(st.integers(0, 10_000), max_size=8))
def test_response_heads_are_read_as_h11_reads_them(wire: bytes, cuts: list[int]) -> None:
    expected = expected_from_h11(wire, h11_response(wire))
    for pieces in ([wire], _pieces(wire, cuts), [wire[i : i + 1] for i in range(len(wire))]):
        got = ours_response(pieces)
        if expected.kind == "incomplete":  # we may see sooner that it is not HTTP
            assert got.kind in ("incomplete", "refused")
        else:
            assert got == expected


_HEADER_NAMES = st.one_of(
    st.sampled_from(
        ["x-a", "X-A", "authorization", "content-type", "OpenAI-Beta", "x_y", "!#$%&'*+-.^_`|~"]
    ),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=6),
    st.text(max_size=4),
).filter(lambda name: name.lower() not in {"host", "content-length", "transfer-encoding"})
_HEADER_VALUES = st.one_of(
    st.sampled_from(["v", "", "Bearer sk-1", "a b", "a\tb", " a", "a ", "a\r\nx: y", "\x00"]),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=8),
    st.text(max_size=4),
)
_TARGETS = st.one_of(
    st.sampled_from([b"/v1/chat/completions", b"/v1/x?a=b&c=%20", b"/", b"*"]),
    st.binary(max_size=6),
)


@SETTINGS
@given(_TARGETS, st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4))
def test_request_heads_are_refused_and_read_as_h11s(
    target: bytes, fields: list[tuple[str, str]]
) -> None:
    headers = [("host", "example.com"), ("content-length", "0"), *fields]
    assert ours_request(target, headers) == h11_request(target, headers)
