"""Property tests of the SSE codec: split invariance, encode/decode round trip, robustness.

A stream is generated as blocks of fields; the expected events come from those fields
(not from the bytes), so the byte-level parsing is checked against the rules, then
against every split of the same bytes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.openai.sse import SSEDecoder, SSEEvent, SSEProtocolError, comment, encode_event

CORPUS = Path(__file__).parent / "corpus" / "sse"
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Field = tuple[bytes, bytes]  # (name, value); name b":" marks a comment line
Result = tuple[list[SSEEvent], bool] | type[SSEProtocolError]

_NO_EOL = st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)
_COMMENT = st.tuples(st.just(b":"), _NO_EOL)
_FIELD: st.SearchStrategy[Field] = st.one_of(
    st.tuples(st.just(b"data"), _NO_EOL),
    st.tuples(st.just(b"event"), _NO_EOL),
    st.tuples(st.just(b"id"), _NO_EOL | _NO_EOL.map(lambda b: b + b"\x00")),
    st.tuples(st.just(b"retry"), st.integers(0, 10**9).map(lambda n: str(n).encode())),
    st.tuples(st.just(b"retry"), st.sampled_from([b"", b"1.5", b"-3", b"x", b"12 "])),
    st.tuples(st.sampled_from([b"Data", b"foo", b"data ", b"x-y"]), _NO_EOL),
    _COMMENT,
)
_BLOCK = st.lists(_FIELD, max_size=5)
_TERMINATORS = [b"\n", b"\r\n", b"\r"]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _decode(chunks: list[bytes], max_event_bytes: int = 1 << 24) -> Result:
    """Events and `pending` after feeding `chunks`, or SSEProtocolError if raised."""
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    events: list[SSEEvent] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
    except SSEProtocolError:
        return SSEProtocolError
    return events, decoder.pending


def _expected(blocks: list[list[Field]]) -> list[SSEEvent]:
    """What the SSE rules dispatch for these blocks, each closed by a blank line."""
    out: list[SSEEvent] = []
    last_id: bytes | None = None
    for block in blocks:
        data: list[bytes] = []
        event: bytes | None = None
        retry: int | None = None
        for name, value in block:
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value
            elif name == b"id" and b"\x00" not in value:
                last_id = value
            elif name == b"retry" and value.isdigit():
                retry = int(value)
        if data:
            out.append(SSEEvent(b"\n".join(data), event, last_id, retry))
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent], bool]:
    """A rendered stream, its expected events, and whether it ends mid-event."""
    blocks = draw(st.lists(_BLOCK, max_size=6))
    tail = draw(st.lists(st.tuples(st.just(b"data"), _NO_EOL), max_size=2))
    lines: list[bytes] = []
    for block in blocks:
        for name, value in block:
            if name == b":":
                lines.append(b":" + value)
            elif not value and draw(st.booleans()):
                lines.append(name)  # a field name alone has an empty value
            elif value.startswith(b" ") or draw(st.booleans()):
                lines.append(name + b": " + value)
            else:
                lines.append(name + b":" + value)
        lines.append(b"")
    lines += [name + b": " + value for name, value in tail]
    out = [b"\xef\xbb\xbf"] if draw(st.booleans()) else []
    previous = b""
    for line in lines:
        choices = _TERMINATORS
        if previous == b"\r" and not line:
            choices = [b"\r\n", b"\r"]  # CR then LF would be one CRLF, not a blank line
        previous = draw(st.sampled_from(choices))
        out += [line, previous]
    return b"".join(out), _expected(blocks), bool(tail)


@SETTINGS
@given(streams(), st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_decodes_like_the_model(
    stream: tuple[bytes, list[SSEEvent], bool], cuts: list[int]
) -> None:
    data, events, cut_mid_event = stream
    assert _decode([data]) == (events, cut_mid_event)
    assert _decode(_split(data, cuts)) == (events, cut_mid_event)


@SETTINGS
@given(st.binary(), st.none() | _NO_EOL, st.lists(st.integers(min_value=0), max_size=8))
def test_encode_event_round_trip(data: bytes, event: bytes | None, cuts: list[int]) -> None:
    wire = comment(b"ka") + encode_event(data, event)
    joined = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert _decode(_split(wire, cuts)) == ([SSEEvent(joined, event)], False)
    if b"\r" not in data:
        assert joined == data  # without CR, the round trip is the identity


_PIECES = st.sampled_from(
    [
        b"data",
        b"event",
        b"id",
        b"retry",
        b":",
        b": ",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"\x00",
        b"7",
        b"x",
        b"\xef\xbb\xbf",
        b"\xef",
        b"\xff",
    ]
)
_NOISE = st.one_of(st.binary(max_size=200), st.lists(_PIECES, max_size=60).map(b"".join))


@settings(SETTINGS, max_examples=2000)
@given(_NOISE, st.lists(st.integers(min_value=0), max_size=20), st.integers(1, 40))
def test_arbitrary_bytes_only_raise_protocol_error(
    data: bytes, cuts: list[int], limit: int
) -> None:
    whole = _decode([data], limit)  # any exception but SSEProtocolError fails the test
    assert _decode(_split(data, cuts), limit) == whole
    assert _decode([data[i : i + 1] for i in range(len(data))], limit) == whole


CORPUS_FILES = sorted(CORPUS.glob("*"))

# Seeds whose decoding is known: file name -> (events, pending). Files added later
# (e.g. crashers found by fuzzing) need no entry; they still get the split check.
KNOWN = {
    "anthropic_error_after_200.sse": (4, False),
    "anthropic_named_events.sse": (15, False),
    "cut_after_data_line.sse": (1, True),
    "cut_mid_event.sse": (2, True),
    "gemini_crlf.sse": (4, False),
    "id_retry_fields.sse": (5, False),
    "lone_cr_framing.sse": (2, False),
    "mixed_terminators_bom.sse": (4, False),
    "multiline_data.sse": (2, False),
    "openai_compat_comments_error.sse": (3, False),
    "openai_lf_text.sse": (14, False),
    "openai_lf_tool_calls.sse": (11, False),
}


def test_corpus_is_seeded() -> None:
    assert {p.name for p in CORPUS_FILES} >= set(KNOWN)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_whole_equals_byte_by_byte(path: Path) -> None:
    data = path.read_bytes()
    whole = _decode([data])
    assert _decode([data[i : i + 1] for i in range(len(data))]) == whole
    if path.name in KNOWN:
        assert isinstance(whole, tuple), "a seed must decode without error"
        events, pending = whole
        assert (len(events), pending) == KNOWN[path.name]


_LINES = [b"event: e\n", b"retry: 5\n", b"id: 7\n", b"data: y\r\n", b"\r", b"\n", b"\r\n"]
_LINES += [b"data: z", b": keep-alive\n\n", b"\xef\xbb\xbf", b"\xef", b"data:no-space\n\n"]
_LONE = _NO_EOL.map(lambda v: b"data: " + v + b"\n\n")
_PIECE = st.one_of(
    _LONE,
    _LONE.map(lambda b: b + b"data: x\n\n"),  # two events: never lone
    st.sampled_from(_LINES),
    st.binary(max_size=16),
)


@SETTINGS
@given(st.lists(_PIECE, max_size=12), st.integers(min_value=1, max_value=40))
@example([b"\n", b"data: a\rb\n\n"], 40)  # a CR ends a line too: two lines, not one
@example([b"event: e\n", b"data: a\n\n"], 40)  # a lone line of a named event
@example([b"\n", b"data: abcdefgh\n\n"], 8)  # over the limit: feed raises
def test_lone_data_is_exactly_what_feed_would_return(pieces: list[bytes], limit: int) -> None:
    """Fed piece by piece, a decoder that takes `lone_data` whenever it answers gives
    the same events (that piece's one event, with no event name or retry) and ends in
    the same state as one that feeds everything: later pieces decode alike. (The
    first piece is never lone: a stream's start may hold a byte-order mark.)"""
    fast, reference = SSEDecoder(max_event_bytes=limit), SSEDecoder(max_event_bytes=limit)
    for piece in pieces:
        lone = fast.lone_data(piece)
        try:
            expected = reference.feed(piece)
        except SSEProtocolError:
            assert lone is None
            with pytest.raises(SSEProtocolError):
                fast.feed(piece)
            return
        if lone is None:
            assert fast.feed(piece) == expected
        else:
            assert [(e.data, e.event, e.retry) for e in expected] == [(lone, None, None)]
    assert fast.pending == reference.pending
