"""HTTP/1.1 requests for the built-in server: request heads and chunked request bodies.
Pure (no I/O), so every rule is tested on bytes and fuzzed; responses are `framing`'s.

Strict where laxness has been exploited (docs/reliability.md R8, request smuggling): a
request with both Transfer-Encoding and Content-Length, a transfer coding other than
chunked, conflicting Content-Lengths, obsolete header folding, a space before the
colon, control characters in a header value, or a second Host header is refused with
400 (501 for unknown codings, 505 for other HTTP versions, 431 for too many headers),
and so is a byte beyond ASCII anywhere in the request target (query included).
Line ends in a request head may be CRLF or bare LF (RFC 9112 2.2); a chunked body's
framing must use CRLF (RFC 9112 7.1, docs/reliability.md R11: a bare LF there, or a control
character in a chunk extension, is refused), and it may have at most MAX_CHUNKS chunks
(R12: decoding costs CPU per chunk).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_CHUNKS",
    "MAX_HEADERS",
    "ChunkedDecoder",
    "HTTPParseError",
    "RequestHead",
    "find_head_end",
    "parse_request_head",
]

MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024  # chunk size + extensions
MAX_TRAILERS = 16 * 1024
# Chunks in one body (the last, empty one aside): each costs ~2 us to decode, so a
# body of 1-byte chunks is bounded to ~0.1 s of CPU (docs/reliability.md R12); 16 MiB sent
# in chunks of 256 bytes or more fits.
MAX_CHUNKS = 65_536
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HT
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")


class HTTPParseError(Exception):
    """A request we refuse; `status` is what the client is told before we close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class RequestHead:
    method: str
    target: bytes  # as sent (origin-form path and query, absolute-form URI, or "*")
    raw_path: bytes  # the path of the target (of the URI, for absolute-form)
    path: str  # percent-decoding is the app's business; this is raw_path as text
    query: bytes
    http_version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]  # names lower-cased, values stripped
    content_length: int | None  # None with chunked (or no body)
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def find_head_end(buf: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(end of the head, start of the body) if `buf` holds a whole request head."""
    i = buf.find(b"\n", start)
    while i != -1:
        if buf[i + 1 : i + 2] == b"\n":
            return i, i + 2
        if buf[i + 1 : i + 3] == b"\r\n":
            return i, i + 3
        i = buf.find(b"\n", i + 1)
    return None


def _split_target(target: bytes) -> tuple[bytes, bytes]:
    """Origin-form (or the path of an absolute-form) target, split at '?'."""
    if target[:1] != b"/":
        if target == b"*":
            return b"*", b""
        lower = target[:8].lower()
        if lower.startswith(b"http://") or lower.startswith(b"https://"):
            rest = target.split(b"://", 1)[1]
            end = len(rest)  # the authority ends at the first "/" or "?"
            for sep in (b"/", b"?"):
                i = rest.find(sep, 0, end)
                if i != -1:
                    end = i
            target = rest[end:]
            if target[:1] != b"/":
                target = b"/" + target
        else:
            raise HTTPParseError(400, "Invalid request target.")
    path, _, query = target.partition(b"?")
    return path, query


def parse_request_head(head: bytes | bytearray) -> RequestHead:
    """Parse a request line and headers (without the blank line that ends them)."""
    lines = bytes(head).split(b"\n")
    request_line = lines[0].removesuffix(b"\r")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HTTPParseError(400, "Malformed request line.")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HTTPParseError(400, "Invalid method in the request line.")
    if version == b"HTTP/1.1":
        http_version = "1.1"
    elif version == b"HTTP/1.0":
        http_version = "1.0"
    elif _VERSION.fullmatch(version):
        raise HTTPParseError(505, "Only HTTP/1.0 and HTTP/1.1 are supported here.")
    else:
        raise HTTPParseError(400, "Malformed HTTP version in the request line.")
    if not target or _BAD_TARGET.search(target):
        raise HTTPParseError(400, "Invalid request target.")
    if not target.isascii():  # RFC 3986: whoever decodes the query next may choke on it
        raise HTTPParseError(400, "Non-ASCII bytes in the request target: percent-encode them.")
    path, query = _split_target(target)

    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPParseError(431, f"More than {MAX_HEADERS} request headers.")
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    transfer_encoding: bytes | None = None
    hosts = 0
    connection = b""
    expect = b""
    for raw in lines[1:]:
        line = raw.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):
            raise HTTPParseError(400, "Obsolete line folding in request headers is not allowed.")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HTTPParseError(400, "Malformed request header line.")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HTTPParseError(400, "Control characters in a request header value.")
        name = name.lower()
        headers.append((name, value))
        if name == b"content-length":
            if not _DIGITS.fullmatch(value):
                raise HTTPParseError(400, "Invalid Content-Length header.")
            n = int(value)
            if content_length is not None and n != content_length:
                raise HTTPParseError(400, "Conflicting Content-Length headers.")
            content_length = n
        elif name == b"transfer-encoding":
            transfer_encoding = (
                value if transfer_encoding is None else transfer_encoding + b"," + value
            )
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            connection += b"," + value.lower()
        elif name == b"expect":
            expect = value.lower()

    chunked = False
    if transfer_encoding is not None:
        if http_version == "1.0":
            raise HTTPParseError(400, "Transfer-Encoding is not allowed in HTTP/1.0.")
        if content_length is not None:
            raise HTTPParseError(400, "Both Transfer-Encoding and Content-Length were sent.")
        if transfer_encoding.strip().lower() != b"chunked":
            raise HTTPParseError(501, "Only the chunked transfer coding is supported.")
        chunked = True
    if hosts > 1 or (hosts == 0 and http_version == "1.1"):
        raise HTTPParseError(400, "An HTTP/1.1 request needs exactly one Host header.")
    tokens = {t.strip() for t in connection.split(b",")}
    keep_alive = b"close" not in tokens and (http_version == "1.1" or b"keep-alive" in tokens)
    return RequestHead(
        method=method.decode("ascii"),
        target=target,
        raw_path=path,
        path=path.decode("ascii"),
        query=query,
        http_version=http_version,
        headers=headers,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        expect_continue=expect == b"100-continue" and http_version == "1.1",
    )


class ChunkedDecoder:
    """Incremental decoder of a chunked request body.

    `feed(data)` returns the body bytes found in `data` and keeps the rest of a
    partial chunk header; `done` turns true after the last chunk and its trailers,
    and `unused` then holds the bytes that followed (a pipelined next request).
    """

    __slots__ = ("_buf", "_chunks", "_remaining", "_state", "done", "unused")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._chunks = 0
        self._remaining = 0  # data bytes left in the current chunk
        self._state = "size"  # size | data | data_crlf | trailers
        self.done = False
        self.unused = b""

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        buf = self._buf
        while not self.done:
            if self._state == "size":
                line = _take_line(buf, MAX_CHUNK_LINE, "Chunk size line too long.")
                if line is None:
                    break
                size, _, ext = line.partition(b";")
                size = size.rstrip(b" \t")  # BWS before an extension
                if not _HEX.fullmatch(size):
                    raise HTTPParseError(400, "Invalid chunk size in the request body.")
                if ext and _BAD_VALUE.search(ext):
                    raise HTTPParseError(400, "Control characters in a chunk extension.")
                self._remaining = int(size, 16)
                if self._remaining:
                    self._chunks += 1
                    if self._chunks > MAX_CHUNKS:
                        raise HTTPParseError(
                            400, f"More than {MAX_CHUNKS} chunks in the request body."
                        )
                self._state = "data" if self._remaining else "trailers"
            elif self._state == "data":
                if not buf:
                    break
                take = min(self._remaining, len(buf))
                out += buf[:take]
                del buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "data_crlf"
            elif self._state == "data_crlf":
                if buf[:2] == b"\r\n":
                    del buf[:2]
                elif buf == b"" or buf == b"\r":
                    break
                else:
                    raise HTTPParseError(400, "Missing CRLF after a chunk of the body.")
                self._state = "size"
            else:  # trailers: lines until an empty one; their content is dropped
                line = _take_line(buf, MAX_TRAILERS, "Request trailers too large.")
                if line is None:
                    break
                if not line:
                    self.done = True
                    self.unused = bytes(buf)
                    buf.clear()
                elif _BAD_VALUE.search(line):
                    raise HTTPParseError(400, "Control characters in a request trailer.")
        return bytes(out)


def _take_line(buf: bytearray, limit: int, too_long: str) -> bytes | None:
    """The next CRLF-ended line taken off `buf`, or None until one has arrived (400
    with `too_long` if more than `limit` bytes came without one)."""
    nl = buf.find(b"\n")
    if nl == -1:
        if len(buf) > limit:
            raise HTTPParseError(400, too_long)
        return None
    return _crlf_line(buf, nl)


def _crlf_line(buf: bytearray, nl: int) -> bytes:
    """Take the line ending at buf[nl] (an LF) off `buf`; it must end with CRLF."""
    if nl == 0 or buf[nl - 1] != 0x0D:
        raise HTTPParseError(400, "Bare LF in the chunked framing of the request body.")
    line = bytes(buf[: nl - 1])
    del buf[: nl + 1]
    return line
