"""A minimal HTTP/1.1 server on trio sockets and h11, for fake upstreams.

Cheap and fully controllable, so that a fake never bounds a benchmark and can fail in
every way a real upstream does: keep-alive, Content-Length and chunked request bodies
(bounded), full or chunked streamed responses, an abrupt TCP reset mid-response, and
never answering at all.

A handler is ``async def handler(request: Request, reply: Reply) -> None``. It gets the
whole request (body read and size-checked) and answers through `reply`: `Reply.send`
for a complete response, or `Reply.start` + `Reply.write` ... + `Reply.end` for a
streamed one, or `Reply.abort` to reset the connection. While the handler runs, the
server watches the socket: when the client goes away the handler is cancelled and
`Reply.client_gone` is set, so a handler can count disconnects in a ``finally``.

With an `ssl.SSLContext` the server speaks HTTPS (trio.SSLStream over each
connection): ``python -m bench compare --upstream-tls`` measures the targets' TLS to
their upstream with it.

`CoarseTimer` gives handlers a cheap shared ``sleep_until`` for pacing many streams.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import NoReturn

import h11
import trio

log = logging.getLogger(__name__)

_RECV_BYTES = 65536
_CHUNKED_HEADER = b"\r\ntransfer-encoding: chunked\r\n"
_LINGER_S = 2.0  # after refusing a request, drain the client's bytes this long...
_LINGER_BYTES = 1024 * 1024  # ...or this much
_RST_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, timeout 0: close() sends RST

Headers = Iterable[tuple[str, str]]
Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


def _socket_of(stream: Stream) -> trio.socket.SocketType:
    """The TCP socket under `stream`, plain or TLS."""
    if isinstance(stream, trio.SSLStream):
        return stream.transport_stream.socket
    return stream.socket


@dataclass(frozen=True, slots=True)
class Request:
    """One fully read request. Header names are lowercase; repeats are joined by ", "."""

    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class ClientDisconnected(Exception):
    """Raised by `Reply.write`/`Reply.end` when the client has gone away."""


class ConnectionAborted(Exception):
    """Raised by `Reply.abort` after the connection was reset; the server ends it."""


class Reply:
    """The answering side of one request: a full response, a stream, or a reset."""

    __slots__ = ("_chunked", "_conn", "_stream", "aborted", "client_gone", "started")

    def __init__(self, conn: h11.Connection, stream: Stream) -> None:
        self._conn = conn
        self._stream = stream
        self._chunked = False  # the streamed body goes out with chunked framing
        self.started = False  # the status line has been sent
        self.client_gone = False  # the client closed or reset before the response ended
        self.aborted = False  # the handler reset the connection

    async def send(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """Send a complete response with a Content-Length."""
        head = [*headers, ("content-length", str(len(body)))]
        data = self._conn.send(_response(status, head))
        data += self._conn.send(h11.Data(data=body)) if body else b""
        data += self._conn.send(h11.EndOfMessage())
        self.started = True
        await self._send(data)

    async def start(self, status: int, headers: Headers, first: bytes = b"") -> None:
        """Send the status line and headers of a streamed (chunked) response.

        `first`, when given, goes out as the first chunk in the same write.
        """
        self.started = True
        head = self._conn.send(_response(status, headers))
        # h11 picks the framing (chunked for HTTP/1.1 peers, close-delimited for 1.0).
        # Chunks are framed here rather than by h11: its per-event bookkeeping was half
        # of the fake's CPU per streamed chunk, and chunked framing is stateless.
        self._chunked = _CHUNKED_HEADER in head.lower()
        await self._send(head + self._frame(first) if first else head)

    async def write(self, data: bytes) -> None:
        """Send one part of a streamed response as one HTTP chunk."""
        if data:
            await self._send(self._frame(data))

    async def end(self, data: bytes = b"") -> None:
        """Send an optional last part and end the streamed response."""
        out = self._frame(data) if data else b""
        await self._send(out + self._conn.send(h11.EndOfMessage()))

    def _frame(self, data: bytes) -> bytes:
        if self._chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return self._conn.send(h11.Data(data=data))

    def abort(self) -> NoReturn:
        """Reset the connection now (TCP RST, no more bytes) and unwind the handler."""
        self.aborted = True
        sock = _socket_of(self._stream)
        with contextlib.suppress(OSError):  # already reset by the peer: just close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
        sock.close()
        raise ConnectionAborted

    async def _send(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if not self.aborted:
                self.client_gone = True
            raise ClientDisconnected from exc


Handler = Callable[[Request, Reply], Awaitable[None]]


def _response(status: int, headers: Headers) -> h11.Response:
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    return h11.Response(status_code=status, headers=list(headers), reason=reason)


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_header_bytes: int = 64 * 1024,
    max_body_bytes: int = 16 * 1024 * 1024,
    idle_timeout_s: float = 120.0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` on host:port until cancelled; report the bound port via task_status.

    Port 0 picks a free port. `idle_timeout_s` bounds the wait for (and the reading of)
    each request on a connection; handlers themselves are not timed. With `ssl_context`
    it serves HTTPS; a client that fails the handshake is dropped.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0:  # each address would get a different free port: keep one
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    actual_port: int = listeners[0].socket.getsockname()[1]
    limits = _Limits(max_header_bytes, max_body_bytes, idle_timeout_s)

    async def on_connection(stream: Stream) -> None:
        await _Connection(stream, handler, limits).run()

    task_status.started(actual_port)
    if ssl_context is None:
        await trio.serve_listeners(on_connection, listeners)
    else:
        secure = [trio.SSLListener(x, ssl_context, https_compatible=True) for x in listeners]
        await trio.serve_listeners(on_connection, secure)


@dataclass(frozen=True, slots=True)
class _Limits:
    header_bytes: int
    body_bytes: int
    idle_timeout_s: float


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Connection:
    """One client connection: read a request, run the handler, repeat while kept alive."""

    def __init__(self, stream: Stream, handler: Handler, limits: _Limits) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.header_bytes)

    async def run(self) -> None:
        try:
            while await self._one_cycle():
                self.conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ClientDisconnected):
            pass  # the client went away between or during requests
        except (ConnectionAborted, trio.TooSlowError):
            pass
        except Exception:
            log.exception("fake HTTP server: connection failed")

    async def _one_cycle(self) -> bool:
        """Serve one request; return whether the connection can serve another."""
        try:
            with trio.fail_after(self.limits.idle_timeout_s):
                request = await self._read_request()
        except (h11.RemoteProtocolError, _BadRequest) as exc:
            status = exc.status if isinstance(exc, _BadRequest) else exc.error_status_hint
            await self._refuse(status, str(exc))
            return False
        if request is None:
            return False
        reply = Reply(self.conn, self.stream)
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_peer, reply, nursery.cancel_scope)
            try:
                await self.handler(request, reply)
            except Exception as exc:
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
        if reply.aborted or reply.client_gone:
            return False
        if isinstance(failure, ClientDisconnected):
            return False
        if failure is not None:
            log.error("fake HTTP handler failed: %r", failure, exc_info=failure)
            if reply.started:
                return False  # the status is out; dropping the connection is all we can do
            await self._refuse(500, "handler failed")
            return False
        if self.conn.our_state is h11.MUST_CLOSE:
            return False  # a complete response on a connection that must close (HTTP/1.0, close)
        if self.conn.our_state is not h11.DONE:
            log.error("fake HTTP handler returned without completing %s", request.target)
            return False
        return self.conn.their_state is h11.DONE

    async def _read_request(self) -> Request | None:
        """Read one request with its whole body; None when the client closed cleanly."""
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise _BadRequest(400, f"unexpected {type(event).__name__}")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        declared = headers.get("content-length")
        if declared is not None and int(declared) > self.limits.body_bytes:
            raise _BadRequest(413, f"body over {self.limits.body_bytes} bytes")
        if self.conn.they_are_waiting_for_100_continue:
            await self.stream.send_all(
                self.conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        parts: list[bytes] = []
        size = 0
        while True:
            part = await self._next_event()
            if isinstance(part, h11.EndOfMessage):
                break
            if not isinstance(part, h11.Data):
                raise _BadRequest(400, "incomplete request body")
            size += len(part.data)
            if size > self.limits.body_bytes:
                raise _BadRequest(413, f"body over {self.limits.body_bytes} bytes")
            parts.append(bytes(part.data))
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        return Request(event.method.decode("ascii"), target, path, query, headers, b"".join(parts))

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                # bytes() of bytes is itself; SSLStream may return a bytearray
                self.conn.receive_data(bytes(await self.stream.receive_some(_RECV_BYTES)))
            else:
                return event

    async def _watch_peer(self, reply: Reply, scope: trio.CancelScope) -> None:
        """Cancel the handler when the client closes or resets the connection."""
        try:
            data = bytes(await self.stream.receive_some(_RECV_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if data:  # a pipelined next request: keep it for the next cycle, stop watching
            self.conn.receive_data(data)
            return
        if not reply.aborted and self.conn.our_state is not h11.DONE:
            reply.client_gone = True
            scope.cancel()

    async def _refuse(self, status: int, message: str) -> None:
        """Answer a request the server itself rejects, if a response can still be sent."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (
            b'{"error":{"message":"'
            + message.replace("\\", "\\\\").replace('"', '\\"').encode()
            + b'","type":"'
            + (b"server_error" if status >= 500 else b"invalid_request_error")
            + b'","param":null,"code":null}}'
        )
        headers = [("content-type", "application/json"), ("connection", "close")]
        with contextlib.suppress(ClientDisconnected, h11.LocalProtocolError):
            await Reply(self.conn, self.stream).send(status, headers, body)
            await self._linger()

    async def _linger(self) -> None:
        """Half-close, then drain what the client still sends for a while.

        Closing with unread bytes makes the kernel send a reset, which can destroy the
        error response before the client reads it.
        """
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if not isinstance(self.stream, trio.SSLStream):  # TLS has no half-close:
                await self.stream.send_eof()  # there the client closes after the answer
            with trio.move_on_after(_LINGER_S):
                drained = 0
                while drained < _LINGER_BYTES:
                    data = await self.stream.receive_some(_RECV_BYTES)
                    if not data:
                        break
                    drained += len(data)


class CoarseTimer:
    """``sleep_until`` for many tasks at 1 ms resolution, driven by one timer task.

    A trio sleep costs its own cancel scope and deadline (~14 us of CPU here, measured
    with 16 concurrent sleepers); a paced stream sleeps once per chunk, so a fake would
    spend most of its CPU there. This timer rounds deadlines up to the millisecond and
    wakes every task due in the same millisecond at once (~5 us per wait). The timer
    task is a trio system task, spawned on first use in each `trio.run` and cancelled
    with it.
    """

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._lots: dict[int, trio.lowlevel.ParkingLot] = {}
        self._ticks: list[int] = []  # heap of the milliseconds that have sleepers
        self._replan = trio.lowlevel.ParkingLot()  # the timer task waits here

    async def sleep_until(self, deadline: float) -> None:
        """Return at the first millisecond at or after `deadline` (trio clock seconds)."""
        tick = math.ceil(deadline * 1000.0)
        if tick <= trio.current_time() * 1000.0:
            await trio.lowlevel.checkpoint()
            return
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:  # first use in this run
            self._token = token
            self._lots.clear()
            self._ticks.clear()
            trio.lowlevel.spawn_system_task(self._run, name="CoarseTimer")
        lot = self._lots.get(tick)
        if lot is None:
            lot = self._lots[tick] = trio.lowlevel.ParkingLot()
            heapq.heappush(self._ticks, tick)
            if self._ticks[0] == tick:  # earlier than the timer task planned
                self._replan.unpark_all()
        await lot.park()

    async def _run(self) -> None:
        try:
            while True:
                if self._ticks:
                    with trio.move_on_at(self._ticks[0] / 1000.0):
                        await self._replan.park()
                else:
                    await self._replan.park()
                now = trio.current_time() * 1000.0 + 1e-6
                while self._ticks and self._ticks[0] <= now:
                    self._lots.pop(heapq.heappop(self._ticks)).unpark_all()
        finally:
            self._token = None
            for lot in self._lots.values():
                lot.unpark_all()
            self._lots.clear()
            self._ticks.clear()
