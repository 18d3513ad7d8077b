"""HTTP/1.1 message heads for the upstream pool (RFC 9112): a request head rendered, a
response head parsed as it arrives, and the response body's framing decided. Pure: no I/O.

h11 did this per exchange with a connection state machine, event objects and header
normalisation: ~45 us of CPU per exchange on the benchmark machine (~11 us here,
`python -m bench.headcost`), of ~550 us for all of a non-streamed request through the
gateway. A client that only ever sends `POST` with a known length and reads one
response needs much less; h11 stays the reference the tests compare this with
(tests/upstream/test_http1.py, fuzz/test_http1_props.py).

Strict where a mistake would desynchronise a pooled connection (one request's answer
read as another's): whatever h11 refuses is refused, and a few things h11 tolerates are
refused too (an HTTP version other than 1.0 and 1.1, obs-fold continuation lines, a
head over MAX_HEAD_BYTES even if it arrived whole). A response framed by both
Transfer-Encoding and Content-Length is read as chunked, as h11 does, but its connection
is not reused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "CHUNKED",
    "CLOSE",
    "LENGTH",
    "MAX_HEAD_BYTES",
    "HeadError",
    "HeadReader",
    "ResponseHead",
    "request_head",
]

MAX_HEAD_BYTES: Final = 64 * 1024  # one response head: status line, fields, blank line
MAX_LENGTH_DIGITS: Final = 20  # a Content-Length under 10**20 bytes

# How a response body ends.
CHUNKED: Final = "chunked"  # chunked transfer coding (gateway/upstream/chunked.py)
LENGTH: Final = "length"  # after `length` bytes (0 for 204, 304 and an empty body)
CLOSE: Final = "close"  # when the server closes the connection

# RFC 9110 5.1 token; 5.5 field value: visible bytes (and obs-text, and the controls h11
# lets through) with single spaces or tabs inside, never NUL, CR, LF, VT or FF.
_TOKEN: Final = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE: Final = r"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"
# Request fields are checked as str (ASCII rules for \s; a character beyond ASCII
# passes here and fails the encoding after), response fields as the bytes received.
_NAME_RE: Final = re.compile(_TOKEN, re.ASCII)
_VALUE_RE: Final = re.compile(_VALUE, re.ASCII)
_TARGET_RE: Final = re.compile(rb"[\x21-\x7e]+")
# Every field line of a response head, each ending in LF or CRLF: checked in one match.
_FIELDS_RE: Final = re.compile(f"(?:{_TOKEN}:[ \t]*{_VALUE}[ \t]*\r?\n)*".encode())
_STATUS_RE: Final = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00\n\r\x0b\x0c]*)?")
_DIGITS_RE: Final = re.compile(rb"[0-9]+")
_HEAD_END_RE: Final = re.compile(rb"\n\r?\n")  # the blank line (bare LF accepted, as h11)
_PREFIX: Final = b"HTTP/"


class HeadError(ValueError):
    """A head that must not be sent, or a response head that cannot be trusted.

    `too_large`: the response head went past MAX_HEAD_BYTES.
    """

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def request_head(target: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
    """`POST target HTTP/1.1` and the header fields, as bytes on the wire.

    Names must be tokens and values field values (no CR, LF, NUL, no whitespace at
    either end): anything else could split the head or be read differently upstream.
    Raises HeadError for those, and UnicodeEncodeError for a name or value not ASCII.
    """
    if not _TARGET_RE.fullmatch(target):
        raise HeadError(f"an invalid request target {target!r}")
    lines: list[str] = []
    for name, value in headers:
        if not _NAME_RE.fullmatch(name):
            raise HeadError(f"an invalid header name {name!r}")
        if not _VALUE_RE.fullmatch(value):
            raise HeadError(f"an invalid value for the header {name!r}")
        lines += (name, ": ", value, "\r\n")
    lines.append("\r\n")
    return b"POST " + target + b" HTTP/1.1\r\n" + "".join(lines).encode("ascii")


class ResponseHead:
    """A final (non-1xx) response head and how its body is framed.

    `headers`: names lower-cased, repeats joined with ", " (Content-Length given once,
    Transfer-Encoding lower-cased). `framing`: CHUNKED, LENGTH (with `length`) or CLOSE.
    `reusable`: the connection may carry another request once this body ended cleanly.
    """

    __slots__ = ("framing", "headers", "length", "reusable", "status")

    def __init__(
        self, status: int, headers: dict[str, str], framing: str, length: int, reusable: bool
    ) -> None:
        self.status = status
        self.headers = headers
        self.framing = framing
        self.length = length
        self.reusable = reusable


class HeadReader:
    """Finds the response to a `POST` in the bytes read, skipping 1xx interim heads.

    `feed(data)` returns the final head once it is complete, None while it is not;
    `rest` then holds the bytes read past it (the start of the body). Raises HeadError.
    """

    __slots__ = ("_buf", "_scanned", "rest")

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._scanned = 0  # the blank line is not before this offset of `_buf`
        self.rest = b""

    def feed(self, data: bytes) -> ResponseHead | None:
        buf = self._buf
        if not buf:
            buf = data
        else:  # a head over several reads: grow in place, not by copying it each time
            if isinstance(buf, bytes):
                buf = bytearray(buf)
            buf += data
        while True:
            found = _HEAD_END_RE.search(buf, self._scanned)
            if found is None:
                if len(buf) > MAX_HEAD_BYTES:
                    raise _too_large()
                if buf[:5] != _PREFIX[: len(buf)]:  # not HTTP: say so before a blank line
                    raise HeadError("no status line")
                self._buf = buf
                self._scanned = max(0, len(buf) - 2)
                return None
            end = found.end()
            if end > MAX_HEAD_BYTES:
                raise _too_large()
            head = _parse(bytes(buf[: found.start() + 1]))
            buf = buf[end:]
            self._scanned = 0
            if head is not None:
                self._buf = b""
                self.rest = bytes(buf)
                return head
            if not buf:  # an interim 1xx head, and nothing after it yet
                self._buf = b""
                return None


def _too_large() -> HeadError:
    return HeadError(f"a response head over {MAX_HEAD_BYTES} bytes", too_large=True)


def _parse(head: bytes) -> ResponseHead | None:
    """The response of a head (its lines, each ending in LF), None for a 1xx."""
    eol = head.index(b"\n")
    status_line = head[: eol - 1 if head[eol - 1 : eol] == b"\r" else eol]
    matched = _STATUS_RE.fullmatch(status_line)
    if matched is None:
        raise HeadError("a malformed status line")
    minor, code = matched.groups()
    status = int(code)
    if status < 100 or status == 101:  # 101: we never ask to switch protocols
        raise HeadError(f"an unexpected status {status}")
    fields = head[eol + 1 :]
    if not _FIELDS_RE.fullmatch(fields):  # obs-fold fails here: a line starting with SP
        raise HeadError("a malformed header field")
    headers: dict[str, str] = {}
    length = ""
    chunked = close = False
    # Checked: every line is `name:value` with optional blanks around the value and an
    # optional CR before its LF, so splitting and stripping cannot cut a field wrongly.
    for line in fields.decode("latin-1").split("\n")[:-1]:
        name, _, value = line.partition(":")
        name = name.lower()
        value = value.strip(" \t\r")
        if name == "content-length":
            values = {v.strip(" \t") for v in value.split(",")}
            if len(values) != 1:
                raise HeadError("conflicting Content-Length values")
            value = values.pop()
            if not value.isdigit() or not value.isascii() or len(value) > MAX_LENGTH_DIGITS:
                raise HeadError("an invalid Content-Length")
            if length:
                if value != length:
                    raise HeadError("conflicting Content-Length values")
                continue
            length = value
        elif name == "transfer-encoding":
            value = value.lower()
            if chunked or value != "chunked":
                raise HeadError("a Transfer-Encoding other than one 'chunked'")
            chunked = True
        elif name == "connection":
            close = close or "close" in [v.strip(" \t") for v in value.lower().split(",")]
        prev = headers.get(name)
        headers[name] = value if prev is None else f"{prev}, {value}"
    if status < 200:
        return None
    reusable = minor == b"1" and not close and not (chunked and length)
    if status in (204, 304):
        return ResponseHead(status, headers, LENGTH, 0, reusable)
    if chunked:
        return ResponseHead(status, headers, CHUNKED, 0, reusable)
    if length:
        return ResponseHead(status, headers, LENGTH, int(length), reusable)
    return ResponseHead(status, headers, CLOSE, 0, False)
