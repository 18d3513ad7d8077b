"""Running a stream translator as the relay does, checking its side of the contract.

The translator returns content only; the relay (gateway/upstream/relay.py) writes the
last event itself: `[DONE]`, or the error event. `client_bytes` stands in for that end
so the translator tests can compare whole client streams, and checks on every call
that the translator kept to the contract (providers/base.py, `StreamTranslator`).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.openai.sse import DONE, SSEDecoder
from gateway.providers.base import StreamTranslator


def content(data: bytes) -> bytes:
    """`data` after checking it is whole data events, none the terminator or an error."""
    if not data:
        return data
    assert data.startswith(b"data: ") and data.endswith(b"\n\n"), data[:80]
    decoder = SSEDecoder()
    for event in decoder.feed(data):
        assert event.data != b"[DONE]", "a translator returned the terminator"
        assert not event.data.startswith(b'{"error"'), "a translator returned an error event"
    assert not decoder.pending
    return data


def data_events(data: bytes) -> int:
    return len(SSEDecoder().feed(data))


def client_bytes(t: StreamTranslator, pieces: Iterable[bytes]) -> bytes:
    """Feed `pieces`, close, then end the stream as the relay does: the client's bytes.

    Unlike the relay it never raises for an error before any content: the error event
    stands in for the HTTP status the client would get.
    """
    out = [content(t.feed(piece)) for piece in pieces]
    if t.error is None:
        out.append(content(t.close()))
    assert t.events == data_events(b"".join(out)), "events counts what was returned"
    if t.error is not None:
        assert t.close() == b"", "nothing follows a failure"
    out.append(DONE if t.error is None else t.error.sse_event())
    return b"".join(out)
