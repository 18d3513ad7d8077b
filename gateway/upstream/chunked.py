"""Decoding a chunked response body as it arrives, cheaply (RFC 9112 7.1).

h11 parses a streamed upstream body one event at a time, a few state-machine steps and
objects per chunk: about as much CPU as the rest of relaying that chunk. A streamed
answer is nearly always one SSE event per chunk, so the common case here is one slice
of the bytes just read. The pool (h11_pool.py) hands the body to this once h11 has
parsed the response head. Pure: no I/O.

Strict where a mistake would misframe the connection: the chunk size must be hex, a
chunk's data must be followed by CRLF, a size line and the trailers are bounded; chunk
extensions and trailer fields are ignored, as a relay needs neither.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_LINE_BYTES", "MAX_TRAILER_BYTES", "ChunkedBody", "ChunkedError"]

MAX_LINE_BYTES: Final = 4096  # a chunk-size line, extensions included
MAX_TRAILER_BYTES: Final = 64 * 1024  # all trailer lines together
_MAX_SIZE_DIGITS: Final = 15  # a chunk under 2**60 bytes
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_SIZE_LINE: Final = re.compile(rb"[0-9a-fA-F]{1,15}\r\n").match  # no extensions

# The decoder's state when not inside a chunk's data (`_left` > 0 is inside).
_SIZE: Final = -1  # expecting a chunk-size line
_CRLF: Final = -2  # expecting the CRLF after a chunk's data
_TRAILERS: Final = -3  # after the last chunk: trailer lines until an empty one


class ChunkedError(ValueError):
    """The body's chunked framing is broken."""


class ChunkedBody:
    """Incremental decoder: `feed(data)` returns the body bytes `data` completes.

    `done` turns true after the last chunk and its trailers; `unused` then holds any
    bytes that followed them (a clean connection has none).
    """

    __slots__ = ("_buf", "_left", "_trailer_bytes", "done", "unused")

    def __init__(self) -> None:
        self._buf = b""  # bytes of an incomplete size line, CRLF or trailer line
        self._left = _SIZE
        self._trailer_bytes = 0
        self.done = False
        self.unused = b""

    def feed(self, data: bytes) -> bytes:
        if self._left == _SIZE and not self._buf:
            # The common case, one whole chunk (a size line, its data, CRLF): a slice.
            head = _SIZE_LINE(data)
            if head is not None:
                start = head.end()
                stop = start + int(data[:start], 16)
                if stop > start and len(data) == stop + 2 and data.endswith(b"\r\n"):
                    return data[start:stop]
        if self.done:
            self.unused += data
            return b""
        buf = self._buf + data if self._buf else data
        pos = 0
        end = len(buf)
        out: list[bytes] = []
        left = self._left
        while pos < end:
            if left > 0:  # inside a chunk's data
                stop = pos + left
                if stop > end:
                    stop = end
                out.append(buf[pos:stop] if pos or stop != end else buf)
                left -= stop - pos
                pos = stop
                if not left:
                    left = _CRLF
            elif left == _CRLF:
                if end - pos < 2:
                    if buf[pos:] != b"\r":
                        raise ChunkedError("no CRLF after a chunk's data")
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ChunkedError("no CRLF after a chunk's data")
                pos += 2
                left = _SIZE
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > MAX_LINE_BYTES:
                        raise ChunkedError("a chunk-size or trailer line is too long")
                    break
                line = buf[pos:eol]
                pos = eol + 2
                if left == _SIZE:
                    left = _size(line) or _TRAILERS
                elif not line:  # the empty line after the trailers: the end
                    self.done = True
                    self.unused = buf[pos:]
                    pos = end
                    break
                else:
                    self._trailer_bytes += len(line) + 2
                    if self._trailer_bytes > MAX_TRAILER_BYTES:
                        raise ChunkedError("the trailers are too large")
        self._left = left
        self._buf = buf[pos:] if pos < end else b""
        if len(out) == 1:
            return out[0]
        return b"".join(out)


def _size(line: bytes) -> int:
    """The chunk size of a size line (extensions after ';' ignored)."""
    size = line.split(b";", 1)[0].rstrip(b" \t")
    if not size or len(size) > _MAX_SIZE_DIGITS or not _HEX.issuperset(size):
        raise ChunkedError("an invalid chunk size")
    return int(size, 16)
