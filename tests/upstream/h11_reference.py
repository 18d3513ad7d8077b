"""h11 as the reference for gateway/upstream/http1.py: what it makes of the same bytes.

`h11_response(wire)` feeds a response to an h11 client that sent a `POST`, and
`ours_response(pieces)` feeds the same bytes, in pieces, to `http1.HeadReader`; both
say the outcome in one shape, `Outcome`, so tests compare them with ==. Where http1
is stricter on purpose (module docstring), `expected_from_h11` turns h11's outcome
into ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11

from gateway.upstream.http1 import (
    CHUNKED,
    CLOSE,
    LENGTH,
    MAX_HEAD_BYTES,
    HeadError,
    HeadReader,
    request_head,
)

__all__ = [
    "REFUSED",
    "Outcome",
    "expected_from_h11",
    "h11_request",
    "h11_response",
    "ours_request",
    "ours_response",
]


@dataclass(frozen=True)
class Outcome:
    """A final response head and its framing, or `refused` (or `incomplete`)."""

    kind: str  # "head", "refused" or "incomplete"
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    framing: str = ""
    length: int = 0
    reusable: bool = False
    rest: bytes = b""


REFUSED = Outcome("refused")
INCOMPLETE = Outcome("incomplete")


def _joined(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Repeated names joined with ", ", in first-seen order (what the pool exposes)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        out[name] = value if name not in out else f"{out[name]}, {value}"
    return tuple(out.items())


def h11_response(wire: bytes) -> Outcome:
    """What an h11 client that sent `POST / HTTP/1.1` makes of `wire` (1xx skipped)."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")])
    )
    conn.send(h11.EndOfMessage())
    try:
        conn.receive_data(wire)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return INCOMPLETE
            if isinstance(event, h11.Response):
                break
            assert isinstance(event, h11.InformationalResponse)
    except h11.RemoteProtocolError:
        return REFUSED
    headers = _joined([(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers])
    reader = conn._reader  # private, read only here: the framing h11 chose
    if conn.their_state is h11.DONE or conn.their_state is h11.MUST_CLOSE:
        framing, length = LENGTH, 0
    elif type(reader).__name__ == "ChunkedReader":
        framing, length = CHUNKED, 0
    elif type(reader).__name__ == "ContentLengthReader":
        framing, length = LENGTH, reader._length  # type: ignore[union-attr]
    else:
        framing, length = CLOSE, 0
    reusable = conn._cstate.keep_alive and framing != CLOSE
    rest = conn.trailing_data[0]
    return Outcome("head", event.status_code, headers, framing, length, reusable, rest)


def ours_response(pieces: list[bytes]) -> Outcome:
    """What `HeadReader` makes of the bytes arriving as `pieces`."""
    reader = HeadReader()
    try:
        for i, piece in enumerate(pieces):
            head = reader.feed(piece)
            if head is not None:
                rest = reader.rest + b"".join(pieces[i + 1 :])
                headers = tuple(head.headers.items())
                return Outcome(
                    "head", head.status, headers, head.framing, head.length, head.reusable, rest
                )
    except HeadError:
        return REFUSED
    return INCOMPLETE


_VERSION_RE = re.compile(rb"HTTP/(\d\.\d)")
_FOLD_RE = re.compile(rb"\n[ \t]")


def expected_from_h11(wire: bytes, reference: Outcome) -> Outcome:
    """h11's outcome, with http1's deliberate differences applied (see its docstring)."""
    if reference.kind == "incomplete":
        return reference
    heads = _heads(wire)
    for head in heads:
        version = _VERSION_RE.match(head)
        if version is not None and version.group(1) not in (b"1.0", b"1.1"):
            return REFUSED
        if _FOLD_RE.search(head):
            return REFUSED
        if len(head) > MAX_HEAD_BYTES:
            return REFUSED
    if reference.kind == "refused":
        return reference
    names = [name for name, _ in reference.headers]
    if "transfer-encoding" in names and "content-length" in names:
        return Outcome(
            "head",
            reference.status,
            reference.headers,
            reference.framing,
            reference.length,
            False,
            reference.rest,
        )
    return reference


def _heads(wire: bytes) -> list[bytes]:
    """The heads h11 reads in `wire`, up to the first final one (each with its blank line)."""
    out: list[bytes] = []
    while True:
        end = re.search(rb"\n\r?\n", wire)
        if end is None:
            return out
        out.append(wire[: end.end()])
        status = re.match(rb"HTTP/\d\.\d (\d\d\d)", wire)
        wire = wire[end.end() :]
        if status is None or not status.group(1).startswith(b"1"):
            return out


def h11_request(
    target: bytes, headers: list[tuple[str, str]]
) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The target and headers h11's server reads from the head h11's client writes,
    or None if h11 refuses to write it."""
    client = h11.Connection(h11.CLIENT)
    try:
        wire = client.send(h11.Request(method="POST", target=target, headers=headers))
    except (h11.LocalProtocolError, UnicodeError):
        return None
    assert wire is not None
    return _served(wire)


def ours_request(
    target: bytes, headers: list[tuple[str, str]]
) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The target and headers h11's server reads from our head, or None if we refuse."""
    try:
        wire = request_head(target, headers)
    except (HeadError, UnicodeError):
        return None
    return _served(wire)


def _served(wire: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    event = server.next_event()
    assert isinstance(event, h11.Request) and event.method == b"POST"
    return event.target, list(event.headers)
