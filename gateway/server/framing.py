"""HTTP/1.1 responses for the built-in server: ASGI send messages in, bytes out.

The response side of the wire format, as `http11` is the request side, so that every
framing rule is tested on bytes, without sockets (tests/server/test_framing.py). The
connection code (`serve`) writes what `ResponseFramer.send` returns, one write per
message: the head goes out together with the first body.

The rules, and why:
- A body the app gives whole (one message) gets a Content-Length. A streamed one is
  chunked; to an HTTP/1.0 client (no chunked coding) it ends with the connection.
- An app's own Content-Length is kept and enforced: bytes beyond it are cut (the
  client would read them as the next response) and a body that ends short closes the
  connection. The app's Transfer-Encoding and Connection headers are dropped (the
  framing is ours); its `Connection: close` is honoured.
- Responses to HEAD, 1xx, 204 and 304 have no body, whatever the app sends.
- A connection carries another request only if the response is complete, the request
  was read to its end and nothing asked to close; the head says `connection: close`
  when it will close (and `connection: keep-alive` to an HTTP/1.0 client when not).
- A header name or value containing CR or LF is refused (ValueError) rather than let
  it split the response; nothing is marked sent then, so the app gets a 500 instead.

Pure module: no I/O (the caller passes the date header line).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

__all__ = [
    "CONTINUE",
    "LAST_CHUNK",
    "NO_BODY_STATUSES",
    "ResponseFramer",
    "chunk",
    "refusal",
    "response_head",
]

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
NO_BODY_STATUSES: Final = frozenset({204, 304})

_STATUS_LINES: Final = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}
_CLOSE: Final = b"connection: close\r\n"
_KEEP_ALIVE: Final = b"connection: keep-alive\r\n"
_JSON: Final = [(b"content-type", b"application/json")]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def response_head(status: int, headers: list[tuple[bytes, bytes]], extra: bytes = b"") -> bytes:
    """Status line and headers, CRLF-terminated, with `extra` (pre-encoded header lines)
    added before the blank line. Header names and values must not contain CR or LF:
    a value that does is refused (ValueError), it would split the response."""
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))
    parts = [line]
    for name, value in headers:
        if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
            raise ValueError(f"CR or LF in response header {name!r}")
        parts.append(name + b": " + value + b"\r\n")
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked response body (never empty: that would end the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def refusal(
    status: int, body: bytes, date: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> bytes:
    """A whole JSON error response the server gives itself, not the app (a head too
    large, malformed or too slow, a body past its deadline, a connection over the
    cap); the connection closes after it."""
    extra = b"content-type: application/json\r\n" + _CLOSE + date
    head = [(b"content-length", b"%d" % len(body)), *headers]
    return response_head(status, head, extra) + body


class ResponseFramer:
    """The response to one request: what each ASGI send message puts on the wire.

    `keep_alive` starts as the request allowed (its version and Connection header)
    and turns False when anything means the connection must close after this
    response; `complete` once the last body message is framed.
    """

    __slots__ = (
        "complete",
        "head_sent",
        "headers",
        "http_version",
        "is_head",
        "keep_alive",
        "length_left",
        "mode",
        "status",
    )

    def __init__(self, method: str, http_version: str, keep_alive: bool) -> None:
        self.is_head = method == "HEAD"
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        self.complete = False
        self.mode = ""  # "length", "chunked", "close" (HTTP/1.0 stream), "none" (no body)
        self.length_left = -1  # body bytes the app's own content-length still allows

    def send(self, message: Mapping[str, Any], *, date: bytes = b"", close: bool = False) -> bytes:
        """The bytes to write for one ASGI send message (b"" for none).

        `date` (the rendered `date:` header line) and `close` (the connection closes
        after this response anyway: the server is draining, or the request body was
        not read to its end) are used by the message that carries the head, the first
        body. A body after the last one is dropped; messages out of order raise
        RuntimeError, a bad header ValueError.
        """
        kind = message["type"]
        if kind == "http.response.body":
            if self.complete:
                return b""
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not self.head_sent:
                data = self._head(body, more, date, close)
            elif self.mode == "chunked":
                if more:
                    data = chunk(body) if body else b""
                else:
                    data = chunk(body) + LAST_CHUNK if body else LAST_CHUNK
            elif body and self.mode != "none":
                data = self._within_length(body) if self.length_left >= 0 else body
            else:
                data = b""
            if not more:
                self._end()
            return data
        if kind == "http.response.start":
            if self.head_sent or self.status:
                raise RuntimeError("http.response.start sent twice")
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
            return b""
        raise RuntimeError(f"unexpected ASGI message type {kind!r}")

    def piece(self, body: bytes) -> bytes | None:
        """The bytes of a non-empty body piece with more to come, in a chunked body or
        one that ends with the connection (HTTP/1.0), still open; else None (it needs
        `send`)."""
        if not body or self.complete:
            return None
        if self.mode == "chunked":
            return chunk(body)
        return body if self.mode == "close" else None

    def fail(self, body: bytes, *, date: bytes) -> bytes:
        """A 500 with a JSON `body` for an app that failed (or returned) before its head
        went out, whatever it had started; the connection closes after it."""
        self.keep_alive = False
        self.status = 500
        self.headers = list(_JSON)
        data = self._head(body, False, date, True)
        self._end()
        return data

    def must_close(self) -> None:
        """The connection cannot carry another request (the request's framing broke)."""
        self.keep_alive = False

    def keeps_connection(self, *, request_read: bool) -> bool:
        """Whether the connection may carry another request once the app has returned:
        the response is complete, the request was read to its end, nothing said close."""
        return self.complete and request_read and self.keep_alive

    def _head(self, body: bytes, more: bool, date: bytes, close: bool) -> bytes:
        """Head and first body: the framing is decided here, once."""
        if not self.status:
            raise RuntimeError("http.response.body before http.response.start")
        headers = self.headers
        status = self.status
        keep_alive = self.keep_alive and not close
        given_length = -1
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                given_length = int(value)  # a bad value raises into the app: a 500
                if given_length < 0:
                    raise ValueError(f"negative content-length {value!r}")
            elif lower in (b"transfer-encoding", b"connection"):
                if lower == b"connection" and b"close" in value.lower():
                    keep_alive = False
                headers = [(n, v) for n, v in headers if n.lower() != lower]
        length_left = -1
        if status in NO_BODY_STATUSES or status < 200:
            mode, framing, payload = "none", b"", b""
        elif given_length >= 0:
            mode, framing, payload = "length", b"", body
            length_left = -1 if self.is_head else given_length
        elif not more:  # the whole body in one message: we know its length
            mode, framing, payload = "none", b"content-length: %d\r\n" % len(body), body
        elif self.http_version == "1.0":
            mode, framing, payload = "close", b"", body  # the body ends with the connection
            keep_alive = False
        else:
            mode, framing = "chunked", b"transfer-encoding: chunked\r\n"
            payload = chunk(body) if body else b""
        if self.is_head:
            mode, payload = "none", b""
        if not keep_alive:
            connection = date + _CLOSE
        elif self.http_version == "1.0":
            connection = date + _KEEP_ALIVE
        else:
            connection = date
        out = response_head(status, headers, framing + connection)
        # Only now that the head is valid: a bad one leaves the app free to get a 500.
        self.head_sent = True
        self.keep_alive = keep_alive
        self.mode = mode
        self.length_left = length_left
        if mode == "length":
            payload = self._within_length(payload)
        return out + payload

    def _within_length(self, body: bytes) -> bytes:
        """`body` cut to what the app's content-length still allows: bytes beyond it
        would be read as the start of the next response."""
        if len(body) > self.length_left:
            body = body[: self.length_left]
            self.keep_alive = False
        self.length_left -= len(body)
        return body

    def _end(self) -> None:
        if self.length_left > 0:  # shorter than the app's content-length said
            self.keep_alive = False
        self.complete = True
