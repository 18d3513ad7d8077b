"""A lean HTTP/1.1 client on trio sockets and h11, timing chat completion answers.

A load generator must cost far less than what it measures, so this is not a general
client: one keep-alive connection per `Connection`, a POST of pre-encoded bytes, and
the answer handed to a `Sink` as it arrives, each piece stamped with the time its
bytes were read. `JSONSink` keeps a non-streamed body and reads its usage at the
end; `StreamSink` decodes SSE incrementally (`gateway.openai.sse.SSEDecoder`) and times
every content delta.

Failures are raised as `TransportError` with a kind from `metrics.ERROR_KINDS`. A
keep-alive connection that the server closed while idle fails on its next request
before any answer byte; `Connection.post` then resends once on a fresh connection
(and counts it), as HTTP clients do.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11
import orjson
import trio

from bench.loadgen.metrics import RequestRecord
from gateway.openai.sse import SSEDecoder, SSEProtocolError

__all__ = [
    "Connection",
    "JSONSink",
    "Sink",
    "StreamSink",
    "Target",
    "TransportError",
]

_RECV_BYTES = 65536
_MAX_BODY_BYTES = 8 * 1024 * 1024  # a non-streamed answer larger than this is refused
_MAX_EVENT_BYTES = 1024 * 1024
_ERROR_BODY_BYTES = 2048  # kept of a non-2xx answer, to say why it failed
_SSL_CONTEXT: ssl.SSLContext | None = None


class TransportError(Exception):
    """The request failed below HTTP status level; `kind` is a key of ERROR_KINDS.

    `errno` is the OS's error number of a failed connect when one is known, to tell
    a refused connection from exhausted ports or a full backlog.
    """

    def __init__(self, kind: str, detail: str = "", errno: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail or kind
        self.errno = errno


class _Stale(Exception):
    """A reused connection was found closed before any answer byte arrived."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go: the parts of ``<base URL>/chat/completions``."""

    scheme: str  # "http" or "https"
    host: str  # name or address, without brackets
    port: int
    path: str  # request target, e.g. /v1/chat/completions
    host_header: str  # value of the Host header

    @classmethod
    def from_base_url(cls, base_url: str, endpoint: str = "/chat/completions") -> Target:
        """Parse a base URL such as ``http://127.0.0.1:8080/v1``; ValueError if unusable."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"URL must start with http:// or https://, got {base_url!r}")
        if not parts.hostname:
            raise ValueError(f"URL has no host: {base_url!r}")
        if parts.username or parts.password:
            raise ValueError("URL must not hold credentials; pass the key with --key")
        if parts.query or parts.fragment:
            raise ValueError(f"base URL must not have a query or fragment: {base_url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValueError(f"bad port in {base_url!r}: {exc}") from None
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default_port = (parts.scheme == "https" and port == 443) or port == 80
        host_header = shown if default_port else f"{shown}:{port}"
        path = parts.path.rstrip("/") + endpoint
        return cls(parts.scheme, host, port, path, host_header)

    @property
    def url(self) -> str:
        """The full URL requests are posted to."""
        return f"{self.scheme}://{self.host_header}{self.path}"


def _connect_error(exc: OSError) -> TransportError:
    """trio's "all attempts to connect failed", with the reason (and errno) of the first
    attempt."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        first = cause.exceptions[0]
        code = first.errno if isinstance(first, OSError) else None
        return TransportError("connect", f"{exc}: {first}", code)
    return TransportError("connect", str(exc))


def _ssl_context() -> ssl.SSLContext:
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


class Sink(Protocol):
    """Receives one answer as it arrives; `now` is `trio.current_time()` of the read.

    `detail` says in words why the request failed, once it has.
    """

    detail: str

    def response(self, status: int, headers: Sequence[tuple[bytes, bytes]], now: float) -> None: ...

    def data(self, data: bytes, now: float) -> None: ...

    def end(self, now: float) -> None: ...


class Connection:
    """One keep-alive HTTP/1.1 connection to `target`, opened on first use (https with
    `ssl_context`, or the system's CAs when it is None).

    Not safe for concurrent use: one request at a time. `on_connect` is called for
    every connection opened, `on_retry` for every request resent after a stale one.
    """

    __slots__ = (
        "_h11",
        "_on_connect",
        "_on_retry",
        "_socket",
        "_ssl_context",
        "_stream",
        "_target",
        "_used",
    )

    def __init__(
        self,
        target: Target,
        *,
        on_connect: Callable[[], None] | None = None,
        on_retry: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._target = target
        self._ssl_context = ssl_context  # https: None trusts the system's CAs
        self._on_connect = on_connect
        self._on_retry = on_retry
        self._stream: trio.abc.Stream | None = None
        self._socket: trio.socket.SocketType | None = None
        self._h11: h11.Connection | None = None
        self._used = False  # a request completed on the current connection

    @property
    def is_open(self) -> bool:
        """A connection is established and can take a request."""
        return self._stream is not None

    def close(self) -> None:
        """Drop the connection at once (no TLS close_notify: the peer sees a close)."""
        sock = self._socket
        self._stream = None
        self._socket = None
        self._h11 = None
        self._used = False
        if sock is not None:
            sock.close()

    async def post(self, head: h11.Request, body: bytes, sink: Sink) -> None:
        """Send one request and feed its answer to `sink`; raise TransportError on failure.

        On any failure the connection is closed; after a complete answer it stays
        open for the next request unless the server asked to close it.
        """
        try:
            try:
                await self._exchange(head, body, sink)
            except _Stale:
                self.close()
                if self._on_retry is not None:
                    self._on_retry()
                await self._exchange(head, body, sink)
        except _Stale:
            self.close()
            raise TransportError("reset", "connection closed before the answer") from None
        except BaseException:
            self.close()
            raise

    async def _connect(self) -> None:
        target = self._target
        try:
            if target.scheme == "https":
                ssl_stream = await trio.open_ssl_over_tcp_stream(
                    target.host,
                    target.port,
                    ssl_context=self._ssl_context or _ssl_context(),
                    https_compatible=True,
                )
                transport = ssl_stream.transport_stream
                assert isinstance(transport, trio.SocketStream)
                self._socket = transport.socket
                try:
                    await ssl_stream.do_handshake()
                except trio.BrokenResourceError as exc:  # certificate refused, TLS failure
                    transport.socket.close()
                    self._socket = None
                    raise TransportError("connect", f"TLS: {exc.__cause__ or exc}") from None
                self._stream = ssl_stream
            else:
                stream = await trio.open_tcp_stream(target.host, target.port)
                self._socket = stream.socket
                self._stream = stream
        except OSError as exc:
            raise _connect_error(exc) from None
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_EVENT_BYTES)
        self._used = False
        if self._on_connect is not None:
            self._on_connect()

    async def _exchange(self, head: h11.Request, body: bytes, sink: Sink) -> None:
        """One request/answer on the current connection (opened if needed)."""
        if self._stream is None:
            await self._connect()
        stream = self._stream
        conn = self._h11
        assert stream is not None and conn is not None
        reused = self._used
        out = conn.send(head)
        out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        try:
            await stream.send_all(out)
        except (trio.BrokenResourceError, OSError) as exc:
            if reused:
                raise _Stale from None
            raise TransportError("reset", str(exc)) from None
        received = False
        now = 0.0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise TransportError("protocol", str(exc)) from None
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(_RECV_BYTES)
                except (trio.BrokenResourceError, OSError) as exc:
                    if reused and not received:
                        raise _Stale from None
                    raise TransportError("reset", str(exc)) from None
                now = trio.current_time()
                if not data and reused and not received:
                    raise _Stale
                received = True
                conn.receive_data(bytes(data))  # no copy when it is bytes already
            elif type(event) is h11.Data:
                sink.data(event.data, now)
            elif type(event) is h11.Response:
                sink.response(event.status_code, event.headers, now)
            elif type(event) is h11.EndOfMessage:
                sink.end(now)
                break
            elif type(event) is h11.ConnectionClosed:
                raise TransportError("reset", "connection closed before the answer ended")
            # InformationalResponse (1xx): wait for the final answer.
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._used = True
        else:
            self.close()


class _Sink:
    """What both sinks share: the record, and why (in words) the request failed."""

    __slots__ = ("_error_body", "detail", "record")

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.detail = ""  # a human reason for the failure, when the request failed
        self._error_body = b""  # the start of a non-2xx answer's body

    def fail(self, kind: str, detail: str) -> None:
        """Mark the request failed, unless it already is (the first reason wins)."""
        if self.record.error is None:
            self.record.error = kind
            self.detail = detail

    def response(self, status: int, headers: Sequence[tuple[bytes, bytes]], now: float) -> None:
        self.record.status = status
        if not 200 <= status < 300:
            self.fail("status", f"HTTP {status}")

    def _keep_error_body(self, data: bytes) -> None:
        if len(self._error_body) < _ERROR_BODY_BYTES:
            self._error_body += data[: _ERROR_BODY_BYTES - len(self._error_body)]

    def _describe_error_body(self) -> None:
        """Put the error answer's message (OpenAI shape) or its start into `detail`."""
        text = self._error_body.decode("utf-8", "replace").strip()
        try:
            message = orjson.loads(self._error_body)["error"]["message"]
        except (orjson.JSONDecodeError, LookupError, TypeError):
            message = None
        if isinstance(message, str):
            text = message
        if text:
            self.detail = text


class JSONSink(_Sink):
    """Keeps a non-streamed answer and reads `usage.completion_tokens` from it."""

    __slots__ = ("_parts", "_size")

    def __init__(self, record: RequestRecord) -> None:
        super().__init__(record)
        self._parts: list[bytes] = []
        self._size = 0

    def data(self, data: bytes, now: float) -> None:
        if self.record.error is not None:
            if self.record.error == "status":
                self._keep_error_body(data)
            return
        self._size += len(data)
        if self._size > _MAX_BODY_BYTES:
            self.fail("bad_response", f"body larger than {_MAX_BODY_BYTES} bytes")
            self._parts = []
            return
        self._parts.append(data)

    def end(self, now: float) -> None:
        record = self.record
        if record.error is not None:
            if record.error == "status":
                self._describe_error_body()
            return
        body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.fail("bad_response", f"body is not JSON: {exc}")
            return
        if type(answer) is not dict or "choices" not in answer:
            self.fail("bad_response", "body is not a chat completion (no choices)")
            return
        tokens = _completion_tokens(answer.get("usage"))
        if tokens is not None:
            record.output_tokens = tokens
            record.tokens_from_usage = True


class StreamSink(_Sink):
    """Decodes an SSE answer as it arrives and times its content deltas.

    A content delta is a choice delta with non-empty ``content``, ``reasoning_content``
    (or ``reasoning``) or ``tool_calls``: the pieces a user sees being generated. The
    first one sets the record's `first_token`; the gaps between consecutive ones go
    to `gaps`. `usage.completion_tokens` (from the usage chunk) wins over the count
    of deltas as the output token count. A content delta that is a send time (a
    stamped stream: 20 digits of CLOCK_MONOTONIC ns, `bench.fakes.base.STAMP_HOLE`)
    adds its transit, arrival minus that time, to `transits`.
    """

    __slots__ = ("_decoder", "_done", "_last", "_origin", "_usage_tokens", "gaps", "transits")

    def __init__(self, record: RequestRecord, origin: float) -> None:
        super().__init__(record)
        self.gaps: list[float] = []
        self.transits: list[float] = []
        self._origin = origin  # trio time of the run's start
        self._decoder = SSEDecoder(_MAX_EVENT_BYTES)
        self._done = False
        self._last = 0.0
        self._usage_tokens: int | None = None

    def data(self, data: bytes, now: float) -> None:
        record = self.record
        if record.error is not None:
            if record.error == "status":
                self._keep_error_body(data)
            return
        arrived_ns = time.monotonic_ns()
        try:
            events = self._decoder.feed(data)
        except SSEProtocolError as exc:
            self.fail("bad_response", str(exc))
            return
        for event in events:
            payload = event.data
            if payload == b"[DONE]":
                self._done = True
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.fail("bad_response", f"SSE event is not JSON: {payload[:80]!r}")
                return
            if type(chunk) is not dict:
                self.fail("bad_response", f"SSE event is not a JSON object: {payload[:80]!r}")
                return
            error = chunk.get("error")
            if error is not None:
                message = error.get("message") if type(error) is dict else error
                self.fail("stream_error", f"error event: {message}")
                return
            choices = chunk.get("choices")
            if type(choices) is list and choices and _has_content(choices):
                sent_ns = _stamp(choices)
                if sent_ns is not None:
                    self.transits.append((arrived_ns - sent_ns) / 1e9)
                if record.first_token is None:
                    record.first_token = now - self._origin
                else:
                    self.gaps.append(now - self._last)
                self._last = now
                record.chunks += 1
            usage = chunk.get("usage")
            if usage is not None:
                self._usage_tokens = _completion_tokens(usage)

    def end(self, now: float) -> None:
        record = self.record
        if record.error is not None:
            if record.error == "status":
                self._describe_error_body()
            return
        if not self._done or self._decoder.pending:
            self.fail("truncated", "the stream ended without data: [DONE]")
            return
        if self._usage_tokens is not None:
            record.output_tokens = self._usage_tokens
            record.tokens_from_usage = True
        else:
            record.output_tokens = record.chunks


def _has_content(choices: list[Any]) -> bool:
    """Whether any choice of a chunk carries generated text or tool-call pieces."""
    for choice in choices:
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is dict and (
            delta.get("content")
            or delta.get("tool_calls")
            or delta.get("reasoning_content")
            or delta.get("reasoning")
        ):
            return True
    return False


def _stamp(choices: list[Any]) -> int | None:
    """The send time a stamped stream's first choice carries as its content, if any."""
    delta = choices[0].get("delta") if type(choices[0]) is dict else None
    content = delta.get("content") if type(delta) is dict else None
    if type(content) is str and len(content) == 20 and content.isdigit():
        return int(content)
    return None


def _completion_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    tokens = usage.get("completion_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
        return tokens
    return None
