"""Table-driven tests of the SSE codec: every decoding rule, the size limit, the encoders."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from gateway.openai.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    DONE,
    SSEDecoder,
    SSEEvent,
    SSEProtocolError,
    comment,
    encode_event,
    encode_json,
)

E = SSEEvent


@dataclass(frozen=True)
class Case:
    name: str
    chunks: list[bytes]
    events: list[SSEEvent]
    pending: bool = False
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES


CASES = [
    # Framing
    Case("lf one event", [b"data: a\n\n"], [E(b"a")]),
    Case("lf two events one chunk", [b"data: a\n\ndata: b\n\n"], [E(b"a"), E(b"b")]),
    Case("crlf", [b"data: a\r\n\r\ndata: b\r\n\r\n"], [E(b"a"), E(b"b")]),
    Case("lone cr", [b"data: a\r\rdata: b\r\r"], [E(b"a"), E(b"b")]),
    Case("mixed terminators", [b"data: a\r\ndata: b\rdata: c\n\r\n"], [E(b"a\nb\nc")]),
    Case("cr then crlf is two lines", [b"data: a\r\r\n"], [E(b"a")]),
    Case("split crlf across feeds", [b"data: a\r", b"\n\r", b"\n"], [E(b"a")]),
    Case("split crlf, data follows", [b"data: a\r", b"\ndata: b\r\n\r\n"], [E(b"a\nb")]),
    Case("cr at end survives an empty feed", [b"data: a\r", b"", b"\ndata: b\n\n"], [E(b"a\nb")]),
    Case("cr at end then cr is a blank line", [b"data: a\r", b"\rdata: b\r\r"], [E(b"a"), E(b"b")]),
    Case("event split mid-line", [b"da", b"ta: he", b"llo\n", b"\n"], [E(b"hello")]),
    Case("data line and blank line in separate feeds", [b"data: a\n", b"\n"], [E(b"a")]),
    Case("leading blank lines", [b"\n\n\r\n\rdata: a\n\n"], [E(b"a")]),
    Case("extra blank lines between events", [b"data: a\n\n\n\n\ndata: b\n\n"], [E(b"a"), E(b"b")]),
    Case("bom stripped", [b"\xef\xbb\xbfdata: a\n\n"], [E(b"a")]),
    Case("bom split across feeds", [b"\xef", b"\xbb", b"\xbfdata: a\n\n"], [E(b"a")]),
    Case("only first bom stripped", [b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n"], []),
    Case("bom prefix that is not a bom", [b"\xef\xbbdata: a\n\n"], []),
    # Comments
    Case("comment only", [b": ping\n\n"], []),
    Case("bare colon comment", [b":\n\n"], []),
    Case("comment inside event", [b"data: a\n: keep-alive\ndata: b\n\n"], [E(b"a\nb")]),
    Case("comment between events", [b"data: a\n\n: ping\n\ndata: b\n\n"], [E(b"a"), E(b"b")]),
    # Data
    Case("multi-line data", [b"data: a\ndata: b\ndata: c\n\n"], [E(b"a\nb\nc")]),
    Case("data without space", [b"data:{}\n\n"], [E(b"{}")]),
    Case("only one space stripped", [b"data:  a \n\n"], [E(b" a ")]),
    Case("tab is not stripped", [b"data:\ta\n\n"], [E(b"\ta")]),
    Case("colon in value", [b"data: a:b: c\n\n"], [E(b"a:b: c")]),
    Case("empty data line", [b"data:\n\n"], [E(b"")]),
    Case("empty data line with space", [b"data: \n\n"], [E(b"")]),
    Case("field name without colon", [b"data\n\n"], [E(b"")]),
    Case("two empty data lines", [b"data\ndata:\n\n"], [E(b"\n")]),
    Case("trailing empty data line", [b"data: a\ndata:\n\n"], [E(b"a\n")]),
    Case("done", [DONE], [E(b"[DONE]")]),
    # Fields
    Case("event field", [b"event: add\ndata: 1\n\n"], [E(b"1", b"add")]),
    Case("event after data", [b"data: 1\nevent: add\n\n"], [E(b"1", b"add")]),
    Case("last event field wins", [b"event: a\nevent: b\ndata: 1\n\n"], [E(b"1", b"b")]),
    Case("empty event field", [b"event:\ndata: 1\n\n"], [E(b"1", b"")]),
    Case(
        "event field resets after dispatch",
        [b"event: a\ndata: 1\n\ndata: 2\n\n"],
        [E(b"1", b"a"), E(b"2")],
    ),
    Case(
        "event without data is dropped and reset",
        [b"event: a\n\ndata: 1\n\n"],
        [E(b"1")],
    ),
    Case(
        "event field in an earlier feed",
        [b"event: a\n", b"data: 1\n\ndata: 2\n\n"],
        [E(b"1", b"a"), E(b"2")],
    ),
    Case("id field", [b"id: 7\ndata: a\n\n"], [E(b"a", None, b"7")]),
    Case(
        "id persists across events",
        [b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n"],
        [E(b"a", None, b"7"), E(b"b", None, b"7"), E(b"c", None, b"8")],
    ),
    Case("id set by an event without data", [b"id: 7\n\ndata: a\n\n"], [E(b"a", None, b"7")]),
    Case("empty id", [b"id: 7\n\nid\ndata: a\n\n"], [E(b"a", None, b"")]),
    Case("id with nul ignored", [b"id: 7\n\nid: 8\x00\ndata: a\n\n"], [E(b"a", None, b"7")]),
    Case(
        "retry belongs to its event",
        [b"retry: 3000\ndata: a\n\ndata: b\n\n"],
        [E(b"a", None, None, 3000), E(b"b")],
    ),
    Case("retry zero", [b"retry: 0\ndata: a\n\n"], [E(b"a", None, None, 0)]),
    Case("retry not digits", [b"retry: 3s\ndata: a\n\n"], [E(b"a")]),
    Case("retry negative", [b"retry: -1\ndata: a\n\n"], [E(b"a")]),
    Case("retry empty", [b"retry\ndata: a\n\n"], [E(b"a")]),
    Case("retry non-ascii digits", ["retry: ١٢\ndata: a\n\n".encode()], [E(b"a")]),
    Case("retry too long ignored", [b"retry: " + b"9" * 5000 + b"\ndata: a\n\n"], [E(b"a")]),
    Case("retry without data is dropped", [b"retry: 5\n\ndata: a\n\n"], [E(b"a")]),
    Case("unknown field ignored", [b"foo: bar\ndata: a\nbaz\n\n"], [E(b"a")]),
    Case("field names are case sensitive", [b"Data: a\nEVENT: b\n\n"], []),
    Case("space before colon is part of the name", [b"data : a\n\n"], []),
    Case(
        "anthropic named events",
        [
            b"event: message_start\ndata: {}\n\n"
            b"event: ping\ndata: {}\n\n"
            b"event: content_block_delta\ndata: {}\n\n"
        ],
        [E(b"{}", b"message_start"), E(b"{}", b"ping"), E(b"{}", b"content_block_delta")],
    ),
    # Cut streams
    Case("cut after data line", [b"data: a\n"], [], pending=True),
    Case("cut mid-line", [b'data: {"a"'], [], pending=True),
    Case("cut after event line", [b"event: x\n"], [], pending=True),
    Case("cut after one of two events", [b"data: a\n\ndata: b"], [E(b"a")], pending=True),
    Case("cut after cr", [b"data: a\r"], [], pending=True),
    Case("complete stream is not pending", [b"data: a\n\n"], [E(b"a")]),
    Case("complete stream, cr framing", [b"data: a\r\r"], [E(b"a")]),
    Case("comment line alone is not pending", [b"data: a\n\n: ping\n"], [E(b"a")]),
    Case("partial comment line is pending", [b": pi"], [], pending=True),
    Case("held bom prefix is pending", [b"\xef\xbb"], [], pending=True),
    Case("nothing fed", [], []),
    # Size limit boundary (no error)
    Case("line at the limit", [b"data: 0123\n\n"], [E(b"0123")], max_event_bytes=10),
    Case("event at the limit", [b"data: 1\ndata\n\n"], [E(b"1\n")], max_event_bytes=11),
    Case("comment at the limit", [b":123456789\n\n"], [], max_event_bytes=10),
    Case(
        "limit counts per event",
        [b"data: 0123\n\ndata: 4567\n\n"],
        [E(b"0123"), E(b"4567")],
        max_event_bytes=10,
    ),
]


def _decode(chunks: list[bytes], max_event_bytes: int) -> tuple[list[SSEEvent], bool]:
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events, decoder.pending


def _bytewise(chunks: list[bytes]) -> list[bytes]:
    whole = b"".join(chunks)
    return [whole[i : i + 1] for i in range(len(whole))]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decode_table(case: Case) -> None:
    assert _decode(case.chunks, case.max_event_bytes) == (case.events, case.pending)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decode_table_one_feed(case: Case) -> None:
    whole = [b"".join(case.chunks)]
    assert _decode(whole, case.max_event_bytes) == (case.events, case.pending)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decode_table_byte_by_byte(case: Case) -> None:
    chunks = _bytewise(case.chunks)
    assert _decode(chunks, case.max_event_bytes) == (case.events, case.pending)


def test_event_field_values() -> None:
    event = SSEDecoder().feed(b"event: e\nid: 1\nretry: 2\ndata: d\n\n")[0]
    assert (event.data, event.event, event.id, event.retry) == (b"d", b"e", b"1", 2)


# Size limit


LIMIT_ERRORS = [
    ("unterminated line", [b"data: 0123456789"], 10),
    ("unterminated line over feeds", [b"data: ", b"0123", b"4"], 10),
    ("unterminated line after a newline", [b"data: a\n\ndata: 01234"], 10),
    ("terminated line", [b"data: 01234\n\n"], 10),
    ("line of an event over feeds", [b"data: 0", b"1234\n"], 10),
    ("event of many lines", [b"data: 1\ndata: 2\ndata: 3\n"], 20),
    ("event lines over feeds", [b"event: abc\n", b"data: abcdefghij\n\n"], 20),
    ("long comment", [b": 0123456789\n"], 10),
    ("long unterminated comment", [b": 01234", b"56789"], 10),
    ("long unknown field", [b"x" * 11 + b"\n"], 10),
    ("long crlf line", [b"data: 01234\r\n"], 10),
]


@pytest.mark.parametrize(
    ("chunks", "limit"), [(c, n) for _, c, n in LIMIT_ERRORS], ids=[i for i, _, _ in LIMIT_ERRORS]
)
def test_size_limit_raises(chunks: list[bytes], limit: int) -> None:
    with pytest.raises(SSEProtocolError):
        _decode(chunks, limit)
    with pytest.raises(SSEProtocolError):
        _decode(_bytewise(chunks), limit)


def test_default_limit_is_16_mib() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 16 * 1024 * 1024
    decoder = SSEDecoder()
    piece = b"x" * (1024 * 1024)
    decoder.feed(b"data: ")
    for _ in range(15):
        assert decoder.feed(piece) == []
    with pytest.raises(SSEProtocolError, match="longer than"):
        decoder.feed(piece)


def test_protocol_error_is_value_error() -> None:
    assert issubclass(SSEProtocolError, ValueError)


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        SSEDecoder(max_event_bytes=limit)


# Encoders


def test_done() -> None:
    assert DONE == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("obj", "wire"),
    [
        ({"a": 1}, b'data: {"a":1}\n\n'),
        ({"t": "x\ny\r\n"}, b'data: {"t":"x\\ny\\r\\n"}\n\n'),
        ({"t": "é"}, 'data: {"t":"é"}\n\n'.encode()),
        ([], b"data: []\n\n"),
    ],
)
def test_encode_json(obj: object, wire: bytes) -> None:
    assert encode_json(obj) == wire
    (event,) = SSEDecoder().feed(wire)
    assert orjson.loads(event.data) == obj


@pytest.mark.parametrize(
    ("data", "event", "wire", "decoded"),
    [
        (b"a", None, b"data: a\n\n", b"a"),
        (b"", None, b"data: \n\n", b""),
        (b" a", None, b"data:  a\n\n", b" a"),
        (b"a\nb", None, b"data: a\ndata: b\n\n", b"a\nb"),
        (b"a\n", None, b"data: a\ndata: \n\n", b"a\n"),
        (b"\n", None, b"data: \ndata: \n\n", b"\n"),
        (b"a\r\nb\rc", None, b"data: a\ndata: b\ndata: c\n\n", b"a\nb\nc"),
        (b"x\revent: evil", None, b"data: x\ndata: event: evil\n\n", b"x\nevent: evil"),
        (b"{}", b"message_stop", b"event: message_stop\ndata: {}\n\n", b"{}"),
        (b"a\nb", b"e", b"event: e\ndata: a\ndata: b\n\n", b"a\nb"),
    ],
)
def test_encode_event(data: bytes, event: bytes | None, wire: bytes, decoded: bytes) -> None:
    assert encode_event(data, event) == wire
    assert SSEDecoder().feed(wire) == [SSEEvent(decoded, event)]


@pytest.mark.parametrize("event", [b"a\nb", b"a\r", b"\r\n"])
def test_encode_event_rejects_multiline_event_name(event: bytes) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        encode_event(b"x", event)


def test_comment() -> None:
    assert comment(b"ping") == b": ping\n\n"
    assert comment(b"") == b": \n\n"
    decoder = SSEDecoder()
    assert decoder.feed(comment(b"keep-alive") + encode_json(1)) == [SSEEvent(b"1")]
    assert not decoder.pending


@pytest.mark.parametrize("text", [b"a\nb", b"a\r", b"\r\ndata: x"])
def test_comment_rejects_newlines(text: bytes) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        comment(text)
