"""A lean HTTP/1.1 upstream transport on trio sockets (`transport.Transport`).

httpx + httpcore cost about 0.75 ms of CPU per relayed request here, and its pool
bookkeeping grows with concurrency (encode/httpx#3215). The gateway needs far less:
one origin per provider, `POST` with a byte body, a response read as it arrives. This
module does just that:

- A pool per origin (scheme, host, port): keep-alive connections reused LIFO (the most
  recently used socket is the least likely to have been closed by the server), at most
  `max_connections` checked out at once (waiters queue fairly on a `trio.Semaphore`;
  a cancelled waiter simply leaves it). Idle connections older than `idle_expiry_s`,
  or that the server closed, are closed when the pool is next touched and by
  `prune_idle`, which the gateway calls on a timer (gateway/state.py).
- A connection goes back to the pool only when the whole request went out, its
  response was read to the end, allowed reuse (HTTP/1.1, no `connection: close`, a
  framed body) and nothing came after it. Anything else (client gone, error, cancellation, a
  body left unread) closes the socket at once, synchronously, so it works under
  cancellation and the upstream sees EOF/RST and stops generating.
- Before reusing an idle connection, a zero-timeout poll checks it is not readable: an
  idle socket with something to read holds EOF (the server closed it) or garbage.
  A connection failure raises `UpstreamConnectionError` saying whether the whole request
  had been sent (`sent`): a send that failed, with no answer read, had not; a connection
  that broke after the request went out may have started a generation. The routing
  chain decides what to retry from that (gateway/upstream/retry.py).
- The heads and framing are ours (`http1.py`: the request head rendered and checked,
  the response head parsed, bounded to `MAX_HEAD_BYTES`, 1xx skipped; reads are
  `RECV_BYTES`), and so are the bodies: a chunked one is decoded by
  `chunked.ChunkedBody`, a Content-Length one counted, a close-delimited one read to
  EOF. h11 did the heads and the non-chunked bodies until its per-exchange state
  machine and events were measured at ~45-51 us of CPU per exchange against ~11 us
  now (`python -m bench.headcost`); a non-streamed request through the gateway went
  from ~0.55 to ~0.44 ms of CPU (`python -m bench compare`, json). h11 is still the
  reference for http1.py's tests.
  The module and the `transport = "h11"` value keep the name users' configs know.
- A connection's socket I/O is `pooled.PooledConnection`'s; https is TLS of our own
  on the raw socket (`tls.TLSConnection`: an `ssl.SSLObject` between memory BIOs, as
  inside trio's `SSLStream`), so that `read_now` can decrypt a ready socket's records
  without waiting and the pump relays TLS streams as it does plain ones.

Deadlines are not enforced here: the Relay owns them as trio cancel scopes. This module
only does I/O and maps its failures to the gateway's error tree, with the messages and
codes of `httpx_transport.HttpxTransport`, plus `upstream_protocol_error` for a malformed or
oversized response head.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

import trio

from gateway import __version__
from gateway.config import ProviderConfig
from gateway.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamConnectTimeout,
    UpstreamError,
)
from gateway.providers.base import CallContext, UpstreamRequest
from gateway.upstream.chunked import ChunkedBody, ChunkedError
from gateway.upstream.http1 import (
    CHUNKED,
    CLOSE,
    MAX_HEAD_BYTES,
    HeadError,
    HeadReader,
    request_head,
)
from gateway.upstream.pooled import PooledConnection
from gateway.upstream.tls import TLSConnection
from gateway.upstream.transport import out_of_resources

__all__ = ["IDLE_EXPIRY_S", "MAX_HEAD_BYTES", "RECV_BYTES", "USER_AGENT", "H11Transport"]

USER_AGENT: Final = f"llm-gateway/{__version__}"
RECV_BYTES: Final = 64 * 1024  # one receive_some
IDLE_EXPIRY_S: Final = 30.0  # an idle pooled connection older than this is closed
ONE_WRITE_BYTES: Final = 64 * 1024  # bodies up to this go out in the same write as the head
# On a normal exit before the end of the body (the Relay stops at `data: [DONE]`), read
# at most this much for at most this long, hoping to reach the end and keep the connection.
DRAIN_BYTES: Final = 64 * 1024
DRAIN_WAIT_S: Final = 0.005

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Framing and hop-by-hop headers are ours to set; a caller's copy is dropped.
_OURS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "expect",
        "accept-encoding",
    }
)
_IO_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


class _Pool:
    """Connections to one origin: an idle LIFO stack and a limit on those checked out."""

    __slots__ = ("host", "host_header", "idle", "port", "slots", "tls")

    def __init__(self, tls: bool, host: str, port: int, host_header: str, limit: int) -> None:
        self.tls = tls
        self.host = host
        self.port = port
        self.host_header = host_header
        self.idle: list[PooledConnection] = []
        # Checked-out connections <= limit; idle ones are only created by returning a
        # checked-out one, so open connections <= limit too.
        self.slots = trio.Semaphore(limit)

    def take_idle(self, now: float, expiry_s: float) -> PooledConnection | None:
        """The most recently used live idle connection, closing stale ones on the way."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if now - conn.idle_since > expiry_s or conn.readable():
                conn.close()
                continue
            return conn
        return None

    def put_idle(self, conn: PooledConnection, now: float, expiry_s: float) -> None:
        """Keep `conn` for reuse; close the expired ones at the bottom of the stack."""
        conn.idle_since = now
        idle = self.idle
        idle.append(conn)
        while now - idle[0].idle_since > expiry_s:
            idle.pop(0).close()

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def prune(self, now: float, expiry_s: float) -> None:
        """Close the idle connections that expired or that the server closed."""
        keep = []
        for conn in self.idle:
            if now - conn.idle_since > expiry_s or conn.readable():
                conn.close()
            else:
                keep.append(conn)
        self.idle[:] = keep


class H11Transport:
    """A pooled HTTP/1.1 client for one provider, on trio sockets.

    `open(req, ctx)` is an async context manager giving the response once its head has
    arrived; its body is read with `next_chunk()`. Leaving the context returns the
    connection to the pool if the body was read to the end, else closes it.

    `ssl_context` defaults to `ssl.create_default_context()` with ALPN "http/1.1"; a
    given context is used as is.
    """

    def __init__(
        self,
        p: ProviderConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_expiry_s: float | None = None,
    ) -> None:
        self._name = p.name
        self._connect_timeout_s = p.connect_timeout_s
        self._limit = max(1, p.max_connections)
        self._idle_expiry_s = IDLE_EXPIRY_S if idle_expiry_s is None else idle_expiry_s
        self._ssl_context = ssl_context
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._closed = False

    def open(self, req: UpstreamRequest, ctx: CallContext) -> _UpstreamExchange:
        """One request/response exchange, as an async context manager."""
        return _UpstreamExchange(self, req)

    async def aclose(self) -> None:
        """Close every idle connection; connections in use are closed when released."""
        self._closed = True
        for pool in self._pools.values():
            pool.close_idle()
        await trio.lowlevel.checkpoint()

    def prune_idle(self) -> None:
        """Close idle connections that expired or that the server closed, now."""
        now = trio.current_time()
        for pool in self._pools.values():
            pool.prune(now, self._idle_expiry_s)

    def connections(self) -> tuple[int, int]:
        """(busy, idle): slots checked out (a connection in use or being made) and idle
        pooled connections, over every origin."""
        busy = sum(self._limit - pool.slots.value for pool in self._pools.values())
        return busy, sum(len(pool.idle) for pool in self._pools.values())

    # -- internals used by _UpstreamExchange --------------------------------------------

    def _pool_and_target(self, url: str) -> tuple[_Pool, bytes]:
        """The pool for the URL's origin and the request target (path and query)."""
        parts = urlsplit(url)  # cached by the standard library for repeated URLs
        key = (parts.scheme, parts.netloc)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._new_pool(url)
            self._pools[key] = pool
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        return pool, target.encode()

    def _new_pool(self, url: str) -> _Pool:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = -1
        host = parts.hostname
        if scheme not in _DEFAULT_PORTS or not host or port == -1:
            raise UpstreamError(
                f"The upstream URL of '{self._name}' is not a valid http(s) URL.",
                code="upstream_unreachable",
            )
        port = port or _DEFAULT_PORTS[scheme]
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        return _Pool(scheme == "https", host, port, host_header, self._limit)

    def _ssl(self) -> ssl.SSLContext:
        """The TLS context, built on first use (loading the CA store costs milliseconds)."""
        if self._ssl_context is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def _connect(self, pool: _Pool) -> PooledConnection:
        """A new connection (TCP, and TLS for https) within the connect timeout."""
        with trio.move_on_after(self._connect_timeout_s) as scope:
            try:
                tcp = await trio.open_tcp_stream(pool.host, pool.port)
            except OSError as e:
                raise out_of_resources(e) or self._unreachable("ConnectError", sent=False) from None
            if not pool.tls:
                # trio sets TCP_NODELAY on every SocketStream
                return PooledConnection(tcp)
            try:
                # ValueError: a host name TLS refuses (a leading dot, bad IDNA).
                tls = TLSConnection(tcp, self._ssl(), pool.host)
                await tls.handshake()
            except (*_IO_ERRORS, ValueError):
                tcp.socket.close()
                raise self._unreachable("ConnectError", sent=False) from None
            except BaseException:
                tcp.socket.close()
                raise
            return PooledConnection(tcp, tls)
        assert scope.cancelled_caught
        raise UpstreamConnectTimeout(
            f"Timed out connecting to the upstream '{self._name}'.", code="upstream_timeout"
        )

    def _unreachable(self, why: str, *, sent: bool) -> UpstreamConnectionError:
        return UpstreamConnectionError(
            f"Could not reach the upstream '{self._name}' ({why}).",
            code="upstream_unreachable",
            sent=sent,
        )

    def _request_failed(self, why: str) -> UpstreamError:
        return UpstreamError(
            f"The request to the upstream '{self._name}' failed ({why}).",
            code="upstream_unreachable",
        )

    def _head(self, pool: _Pool, req: UpstreamRequest, target: bytes) -> bytes:
        headers: list[tuple[str, str]] = [
            ("host", pool.host_header),
            ("content-length", str(len(req.body))),
            ("accept-encoding", "identity"),  # bodies are relayed raw
        ]
        agent = False
        for name, value in req.headers.items():
            lower = name.lower()
            if lower in _OURS:
                continue
            agent = agent or lower == "user-agent"
            headers.append((name, value))
        if not agent:
            headers.append(("user-agent", USER_AGENT))
        # The reasons keep the messages of the h11 days (an invalid name or value, a
        # name or value not ASCII): operators' alerts may match them.
        try:
            return request_head(target, headers)
        except HeadError:
            raise self._request_failed("LocalProtocolError") from None
        except UnicodeError as e:
            raise self._request_failed(type(e).__name__) from None


class _UpstreamExchange:
    """One request on a pooled connection; the async context manager and the response."""

    __slots__ = (
        "_body",
        "_conn",
        "_done",
        "_early",
        "_left",
        "_pool",
        "_req",
        "_reusable",
        "_t",
        "headers",
        "status",
    )

    def __init__(self, transport: H11Transport, req: UpstreamRequest) -> None:
        self._t = transport
        self._req = req
        self._pool: _Pool | None = None  # set while we hold a slot of it
        self._conn: PooledConnection | None = None
        self._done = False  # the response body was read to its end
        self._body: ChunkedBody | None = None  # the decoder of a chunked body
        self._left = -1  # bytes of a Content-Length body still to read; -1: until EOF
        self._early = b""  # body bytes read with the head, not yet handed on
        # The connection may carry another request once the body ended: the whole
        # request went out, the head allows it, and nothing came past the body.
        self._reusable = False
        self.status = 0
        self.headers: Mapping[str, str] = {}

    async def __aenter__(self) -> _UpstreamExchange:
        t = self._t
        if t._closed:
            raise UpstreamError(
                f"The upstream client of '{t._name}' is closed.", code="upstream_unreachable"
            )
        pool, target = t._pool_and_target(self._req.url)
        try:
            pool.slots.acquire_nowait()
        except trio.WouldBlock:
            await pool.slots.acquire()  # fair FIFO wait; cancellation leaves no trace
        self._pool = pool
        try:
            conn = pool.take_idle(trio.current_time(), t._idle_expiry_s)
            if conn is None:
                conn = await t._connect(pool)
            self._conn = conn
            await self._send_and_read_head(pool, conn, target)
        except BaseException:
            self._release(reuse=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None and not self._done and exc_type is None:
            await self._drain_rest()
        self._release(reuse=self._done)

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as it arrives, or None at its end."""
        conn = self._conn
        if conn is None or self._done:
            return None
        body = self._body
        if body is not None:
            try:
                while True:
                    data = self._early
                    if data:
                        self._early = b""
                    else:
                        data = await conn.receive_some(RECV_BYTES)
                        if not data:
                            why = "the connection closed early"
                            break
                    piece = self._decoded(body, data)
                    if self._done:
                        return piece or None
                    if piece:
                        return piece
            except _IO_ERRORS:
                why = "the connection was reset"
            raise self._lost(why)
        data = self._early
        if data:
            self._early = b""
        else:
            try:
                data = await conn.receive_some(RECV_BYTES)
            except _IO_ERRORS:
                raise self._lost("the connection was reset") from None
            if not data:
                if self._left < 0:  # a close-delimited body ends here
                    self._done = True
                    return None
                raise self._lost("the connection closed early")
        return self._counted(bytes(data))

    def _counted(self, data: bytes) -> bytes:
        """`data` as far as it belongs to a Content-Length body, counted off (all of it
        for a close-delimited one). Bytes past the body make the connection unclean."""
        left = self._left
        if left < 0:
            return data
        if len(data) < left:
            self._left = left - len(data)
            return data
        if len(data) > left:
            self._reusable = False
            data = data[:left]
        self._left = 0
        self._done = True
        return data

    def pump_fd(self) -> int | None:
        """The socket `read_now` reads, while it can: a chunked body (over TCP or TLS)
        not yet ended, with nothing read and left undecoded, and (over TLS) its end
        or a TLS failure not already read with the last records: the socket may then
        never be readable again (after a close_notify). None otherwise."""
        conn = self._conn
        if conn is None or self._done or self._body is None or self._early:
            return None
        if conn.tls is not None and conn.tls.ended:
            return None
        return conn.fd

    def read_now(self) -> bytes:
        """The body that arrived, decoded, without waiting (b"" if none, or only chunk
        framing): what `next_chunk` reads, for a caller told the socket is readable
        (`pump_fd`). Raises as `next_chunk` does; once the body is complete, `pump_fd`
        is None and `next_chunk` says so."""
        conn, body = self._conn, self._body
        assert conn is not None and body is not None
        # Each failure is raised outside its `except`, so the error carries no context
        # (and no traceback of this frame) for whoever keeps it.
        why = ""
        tls = conn.tls
        if tls is None:
            try:
                data: bytes | None = os.read(conn.fd, RECV_BYTES) or None
            except BlockingIOError:
                return b""
            except OSError:
                data, why = None, "the connection was reset"
        else:
            try:
                data = tls.read_now()
            except (OSError, trio.BrokenResourceError):
                data, why = None, "the connection was reset"
            if data == b"":  # nothing yet, or part of a TLS record
                return data
        if data is None:
            raise self._lost(why or "the connection closed early")
        return self._decoded(body, data)

    # -- internals ---------------------------------------------------------------------

    def _decoded(self, body: ChunkedBody, data: bytes) -> bytes:
        """`data` through the chunked body's decoder, its end noted (`_done`); a
        malformed body is the connection lost, raised outside the `except`."""
        try:
            piece: bytes | None = body.feed(data)
        except ChunkedError:
            piece = None
        if piece is None:
            raise self._lost("the body was malformed")
        if body.done:
            self._done = True
        return piece

    def _lost(self, why: str) -> UpstreamConnectionError:
        """The connection failed mid-response: let it go, and say why."""
        self._release(reuse=False)
        return UpstreamConnectionError(
            f"The upstream connection failed mid-response ({why}).",
            code="upstream_connection_lost",
            sent=True,
        )

    async def _send_and_read_head(self, pool: _Pool, conn: PooledConnection, target: bytes) -> None:
        t = self._t
        body = self._req.body
        head = t._head(pool, self._req, target)
        send_failed = False
        try:
            if len(body) <= ONE_WRITE_BYTES:
                await conn.send_all(head + body if body else head)
            else:
                await conn.send_all(head)
                await conn.send_all(body)
        except _IO_ERRORS:
            # The server may have answered (say 413) and closed before reading it all:
            # read what it sent before deciding the request never got through.
            send_failed = True
        reader = HeadReader()
        got_bytes = eof = False
        try:
            while True:
                data = await conn.receive_some(RECV_BYTES)
                if not data:
                    eof = True
                    raise HeadError("the connection closed before the response head")
                got_bytes = True
                response = reader.feed(data)
                if response is not None:
                    break
        except (HeadError, *_IO_ERRORS) as e:
            if send_failed and not got_bytes:
                # The request did not all go out and nothing came back: the upstream
                # cannot have started on it (typically a pooled connection the server
                # had closed, whose reset met our write).
                raise t._unreachable("WriteError", sent=False) from None
            if not got_bytes:
                # The request went out, then the connection closed or was reset with no
                # answer: the upstream may have read it and started generating.
                why = "RemoteProtocolError" if eof else "ReadError"
                raise t._unreachable(why, sent=True) from None
            raise self._broken_head(e, eof) from None
        self.status = response.status
        self.headers = response.headers
        self._reusable = response.reusable and not send_failed
        self._early = early = reader.rest
        if response.framing == CHUNKED:
            self._body = ChunkedBody()
        elif response.framing != CLOSE:
            self._left = response.length
            if not self._left:  # no body (204, 304, length 0): anything read is extra
                self._done = True
                self._reusable = self._reusable and not early

    def _broken_head(self, e: BaseException, eof: bool) -> GatewayError:
        """The error for a response head that started but was cut or malformed."""
        name = self._t._name
        if isinstance(e, HeadError) and not eof:
            if e.too_large:
                why = f"a response head over {MAX_HEAD_BYTES} bytes"
            else:
                why = "a malformed response head"
            return UpstreamError(
                f"The upstream '{name}' sent {why}.", code="upstream_protocol_error"
            )
        return UpstreamConnectionError(
            "The upstream connection failed mid-response "
            f"(the connection was {'closed early' if eof else 'reset'}).",
            code="upstream_connection_lost",
            sent=True,
        )

    async def _drain_rest(self) -> None:
        """Read the end of the body if it comes at once, so that the connection is kept.

        The Relay stops reading at an SSE stream's `[DONE]`; the chunked terminator is
        right behind it (often in the same read, or in a TLS record of its own). At most
        DRAIN_BYTES within DRAIN_WAIT_S: an upstream still generating is not waited for,
        its connection is closed instead. Shielded, as it is bounded: a reused connection
        saves a connect (and a TLS handshake) on a later request. A close-delimited body
        is not drained: its connection cannot be reused.
        """
        conn = self._conn
        assert conn is not None
        if not self._reusable:
            return
        budget = DRAIN_BYTES
        body = self._body
        with trio.CancelScope(shield=True, deadline=trio.current_time() + DRAIN_WAIT_S):
            try:
                while budget >= 0:
                    data = self._early
                    self._early = b""
                    if not data:
                        data = await conn.receive_some(RECV_BYTES)
                        if not data:
                            return
                    if body is None:
                        budget -= len(self._counted(bytes(data)))
                        if self._done:
                            return
                    else:
                        budget -= len(body.feed(data))
                        if body.done:
                            self._done = True
                            return
            except (ChunkedError, *_IO_ERRORS):
                return

    def _release(self, *, reuse: bool) -> None:
        """Give the slot back; pool the connection if `reuse` and the exchange ended
        cleanly (see `_reusable`), else close it."""
        pool, conn = self._pool, self._conn
        self._pool = self._conn = None
        if conn is not None:
            if reuse and self._reusable and not self._t._closed and pool is not None:
                body = self._body
                if body is None or not body.unused:
                    pool.put_idle(conn, trio.current_time(), self._t._idle_expiry_s)
                    conn = None
            if conn is not None:
                conn.close()
        if pool is not None:
            pool.slots.release()
