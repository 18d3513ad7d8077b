"""Server-sent events codec: upstream bytes -> events, and events -> bytes. No I/O.

The decoder follows the WHATWG "parsing an event stream" rules, kept as bytes:

- lines end with CRLF, LF or a lone CR; one leading UTF-8 BOM of the stream is dropped;
- a blank line dispatches the event; an event without `data:` lines is not dispatched
  (its `event:` and `retry:` are reset all the same);
- a line starting with `:` is a comment; `name: value` drops one space after the
  colon; a line without a colon is a field name with an empty value; unknown fields
  are ignored;
- `data` lines are joined with LF; `id` (ignored if it holds NUL) persists across
  events like the spec's last event ID; `retry` (ASCII digits only) belongs to the
  event dispatched at the end of its block;
- bytes after the last blank line are an unfinished event and are never dispatched
  (`pending` tells whether the stream was cut in the middle of one).

It sits on the path of every streamed token, so the common shape (LF only, a
`data: ` line straight followed by the blank line, optionally after `event: `) is
sliced out with one memchr per line and no per-line call; CR framing is first
normalised to LF in one pass; everything else goes through the general line rule.

Memory is bounded: a line, or the field lines of one event, longer than
`max_event_bytes` raises `SSEProtocolError`. Both limits hold for any split of the
stream, so whether a stream is rejected does not depend on how it was chunked.

Pure module: no trio, httpx or quart imports.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

__all__ = [
    "DONE",
    "SSEDecoder",
    "SSEEvent",
    "SSEProtocolError",
    "comment",
    "encode_event",
    "encode_json",
]

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_MAX_RETRY_DIGITS = 15  # longer values are ignored (and int() of huge strings is slow)


class SSEProtocolError(ValueError):
    """The stream breaks a limit of the decoder (an oversized line or event)."""


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event; fields hold raw bytes as sent."""

    data: bytes  # data lines joined with b"\n" (no trailing newline)
    event: bytes | None = None  # the `event:` field, None if absent
    id: bytes | None = None  # the last `id:` seen on the stream so far
    retry: int | None = None  # a valid `retry:` field of this event's block


class SSEDecoder:
    """Incremental decoder: feed any split of a byte stream, get complete events.

    One instance per stream. After `SSEProtocolError` the stream is broken and the
    decoder must not be fed again.
    """

    __slots__ = (
        "_bom",
        "_cr",
        "_data",
        "_event",
        "_last_id",
        "_max",
        "_retry",
        "_size",
        "_start",
        "_tail",
        "_tail_len",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be positive")
        self._max = max_event_bytes
        self._start = True  # nothing seen yet: a BOM may still come
        self._bom = b""  # a prefix of the BOM held back at the start of the stream
        self._cr = False  # the last chunk ended with CR: drop an LF starting the next
        self._tail: list[bytes] = []  # pieces of the unterminated last line (no CR/LF)
        self._tail_len = 0
        self._data: list[bytes] = []  # data lines of the event being built
        self._event: bytes | None = None
        self._retry: int | None = None
        self._last_id: bytes | None = None
        self._size = 0  # bytes of field lines in the event being built (0: none yet)

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are buffered (stream cut mid-event)."""
        return self._size > 0 or self._tail_len > 0 or bool(self._bom)

    def lone_data(self, chunk: bytes) -> bytes | None:
        """The data of `chunk` if it is exactly one event, a single `data: ` line and
        its blank line, that `feed` would return alone (no `event:` or `retry:` before
        it, nothing buffered, no CR anywhere), leaving the decoder as it was; else
        None, and nothing is consumed. A relay that only needs the data of such chunks
        (nearly every chunk of a token stream) skips the event objects: feeding the
        decoder afterwards is as if `feed` had been given the chunk."""
        end = len(chunk) - 2
        if (
            end < 6
            or not chunk.startswith(b"data: ")
            or chunk.find(b"\n") != end
            or chunk[end + 1] != 10
            or 13 in chunk
            or end > self._max
            or self._start
            or self._cr
            or self._tail
            or self._size
        ):
            return None
        return chunk[6:end]

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode the next bytes of the stream; return the events they complete."""
        if not chunk:
            return []
        if self._start:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return []
        if self._cr:
            self._cr = False
            if chunk[0] == 10:  # the LF of a CRLF split across chunks
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._tail:
            if 10 not in chunk and 13 not in chunk:
                self._tail.append(chunk)
                self._tail_len += len(chunk)
                if self._tail_len > self._max:
                    raise SSEProtocolError(f"SSE line longer than {self._max} bytes")
                return []
            self._tail.append(chunk)
            chunk = b"".join(self._tail)
            self._tail = []
            self._tail_len = 0
        if 13 in chunk:  # CR (an int needle is a plain memchr, much cheaper than b"\r")
            # The tail never holds CR or LF, so normalising the joined bytes is exact.
            self._cr = chunk[-1] == 13
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return self._feed_lf(chunk)

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop one BOM at the very start of the stream, even if split across chunks."""
        head = self._bom + chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._bom = head
            return b""
        self._start = False
        self._bom = b""
        return head[3:] if head.startswith(_BOM) else head

    def _feed_lf(self, buf: bytes) -> list[SSEEvent]:
        """Decode bytes whose only line terminator is LF."""
        out: list[SSEEvent] = []
        limit = self._max
        end = len(buf)
        pos = 0
        while (nl := buf.find(b"\n", pos)) >= 0:
            if (
                nl + 1 < end
                and buf[nl + 1] == 10
                and buf.startswith(b"data: ", pos)
                and not self._data
            ):
                # The common case: a `data: ` line then a blank line, no data before it.
                size = self._size + nl - pos
                if size > limit:
                    raise SSEProtocolError(f"SSE event longer than {limit} bytes")
                out.append(SSEEvent(buf[pos + 6 : nl], self._event, self._last_id, self._retry))
                if self._size:
                    self._event = None
                    self._retry = None
                    self._size = 0
                pos = nl + 2
            elif buf.startswith(b"event: ", pos):  # Anthropic names every event
                self._size += nl - pos
                if self._size > limit:
                    raise SSEProtocolError(f"SSE event longer than {limit} bytes")
                self._event = buf[pos + 7 : nl]
                pos = nl + 1
            else:
                self._line(buf[pos:nl], out)
                pos = nl + 1
        if pos < end:
            if end - pos > limit:
                raise SSEProtocolError(f"SSE line longer than {limit} bytes")
            self._tail.append(buf[pos:])
            self._tail_len = end - pos
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        """Apply one complete line (terminator removed) to the event being built."""
        if not line:
            self._dispatch(out)
            return
        limit = self._max
        colon = line.find(b":")
        if colon == 0:
            if len(line) > limit:
                raise SSEProtocolError(f"SSE line longer than {limit} bytes")
            return
        self._size += len(line)
        if self._size > limit:
            raise SSEProtocolError(f"SSE event longer than {limit} bytes")
        if colon < 0:
            name = line
            value = b""
        else:
            name = line[:colon]
            start = colon + 2 if line[colon + 1 : colon + 2] == b" " else colon + 1
            value = line[start:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = value
        elif (
            name == b"retry"
            and value.isdigit()  # bytes.isdigit is ASCII-only
            and len(value) <= _MAX_RETRY_DIGITS
        ):
            self._retry = int(value)

    def _dispatch(self, out: list[SSEEvent]) -> None:
        """End the event at a blank line: emit it if it has data, then reset it."""
        data = self._data
        if data:
            joined = data[0] if len(data) == 1 else b"\n".join(data)
            out.append(SSEEvent(joined, self._event, self._last_id, self._retry))
            self._data = []
        self._event = None
        self._retry = None
        self._size = 0


DONE: bytes = b"data: [DONE]\n\n"


def encode_json(obj: object) -> bytes:
    """One `data:` event holding `obj` as compact JSON (orjson never emits raw newlines)."""
    return b"data: %b\n\n" % orjson.dumps(obj)


def _split_lines(data: bytes) -> list[bytes]:
    """Split on CRLF, LF or CR, the terminators a decoder honours."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data.split(b"\n")


def encode_event(data: bytes, event: bytes | None = None) -> bytes:
    """One event; each line of `data` becomes a `data:` line so nothing can be injected.

    A decoder gives the lines back joined with LF, so CRLF or CR in `data` come back
    as LF. `event` must be a single line (ValueError otherwise).
    """
    if b"\n" in data or b"\r" in data:
        body = b"".join([b"data: %b\n" % line for line in _split_lines(data)]) + b"\n"
    else:
        body = b"data: %b\n\n" % data
    if event is None:
        return body
    if b"\n" in event or b"\r" in event:
        raise ValueError("SSE event name must not contain CR or LF")
    return b"event: %b\n%b" % (event, body)


def comment(text: bytes) -> bytes:
    """A comment event (keepalive); decoders skip it. `text` must be a single line."""
    if b"\n" in text or b"\r" in text:
        raise ValueError("SSE comment must not contain CR or LF")
    return b": %b\n\n" % text
