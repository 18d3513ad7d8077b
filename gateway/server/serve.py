"""The built-in HTTP/1.1 server: trio sockets in, ASGI 3 out, nothing else.

Why not hypercorn (which stays available as `[server] http_server = "hypercorn"`):
its trio worker costs ~400 us of CPU per trivial request and ~30 us per streamed
chunk on this machine, more than the whole gateway around it (docs/performance.md).
This server does one thing: HTTP/1.1 with keep-alive, one task per connection, the
app called in that task, a whole response written with one `send`, streamed bodies
chunk-encoded with one `send` per ASGI message. The bytes of a response are decided
by `framing` (pure), those of a request head parsed by `http11` (pure); this module
moves them between sockets and the app. A streamed body may also go out through the
scope's extension `gateway.body` (`write_body`): one framed write per piece, no ASGI
message, written at once when the socket takes it (the gateway's SSE relay uses it).

What a client can rely on:
- every request gets exactly one final response; the ones the server refuses itself
  get an OpenAI-shaped JSON error and a close, never a silent close;
- request heads are parsed strictly (gateway/http11.py: smuggling-prone forms and
  bytes beyond ASCII in the target get a 400) and bounded (16 KiB, 100 headers: 431);
  a request head must arrive within `keep_alive_timeout_s` of the connection going
  idle (part of one that does not: 408; nothing at all: a silent close);
- a request body must arrive within `body_timeout_s` of the app's first read of it,
  on every route (408), and its chunked framing must be sound (400); the app hears
  `http.disconnect` and the server answers;
- `Expect: 100-continue` is answered when the app first reads the body, unless its
  response has begun; a body the app did not read to the end is skipped if all of it
  has arrived, else it closes the connection (the response says `connection: close`,
  and the close lingers so the kernel does not answer the unread bytes with a reset
  that would destroy the response);
- a connection carries at most MAX_REQUESTS_PER_CONNECTION requests, a chunked body
  at most `http11.MAX_CHUNKS` chunks (docs/reliability.md R12);
- the app hears `http.disconnect` when the client closes, also while it is streaming
  (the gateway cancels the upstream call then);
- a client that stops reading while a response is being written (no progress for
  `send_timeout_s`) is treated as gone: the connection closes and the app hears
  `http.disconnect`, so a stalled reader cannot pin a stream and its upstream call;
- at most `max_connections` connections are served at once (default: half of what
  the open-file limit leaves); one past that gets 503 with Retry-After and a close,
  and running out of file descriptors pauses accepting, with one warning;
- SIGTERM (via `shutdown_trigger`) tells the app draining has started (`Draining`),
  keeps accepting for `drain_delay_s`, then stops accepting, closes idle connections,
  lets in-flight requests finish for up to `graceful_timeout_s` (their responses carry
  `connection: close`), tells the app to end what still runs with a final answer,
  cuts what is left after FINAL_WORDS_S, then runs the ASGI lifespan shutdown.

Nothing a client sends is logged as an error: refusals are INFO lines, throttled
(`quiet.Throttled`).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import trio

from gateway import readiness
from gateway.server.framing import CONTINUE, ResponseFramer
from gateway.server.http11 import (
    ChunkedDecoder,
    HTTPParseError,
    RequestHead,
    find_head_end,
    parse_request_head,
)
from gateway.server.lifespan import ASGI_VERSION, ASGIApp, Lifespan
from gateway.server.options import Draining, ServerOptions, default_max_connections
from gateway.server.replies import error, error_response
from gateway.server.shared import LINGER_S, READ_SIZE, Server

__all__ = ["Draining", "ServerOptions", "default_max_connections", "serve"]

log = logging.getLogger("gateway.server.serve")

MAX_PIPELINED = 65536  # bytes of a next request buffered while a response streams
MAX_REQUESTS_PER_CONNECTION = 1000  # then `connection: close` (hypercorn's default; R12)
FINAL_WORDS_S = 2.0  # after the grace: for the final answers of what still runs
DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
# scope["extensions"][...]: `write_body`, `write_now` and `watch_gone` (gateway/api/asgi.py)
BODY_EXTENSION = "gateway.body"
GONE_EXTENSION = "gateway.gone"
BODY_NOW_EXTENSION = "gateway.body_now"


class _ClientConnection:
    """One client connection: request heads in, responses out, one request at a time."""

    __slots__ = ("buf", "client", "eof", "idle_scope", "linger", "served", "server", "stream")

    def __init__(self, server: Server, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.buf = bytearray()
        self.eof = False  # the client closed (or reset) its side
        self.linger = False  # the client may still be sending what we will not read
        self.served = 0  # requests answered on this connection
        self.idle_scope = trio.CancelScope()
        try:
            peer = stream.socket.getpeername()
            self.client: tuple[str, int] | None = (peer[0], peer[1])
        except OSError:
            self.client = None

    async def run(self) -> None:
        try:
            while not self.eof:
                head = await self._next_head()
                if head is None or not await _ServerExchange(self, head).respond():
                    break
                self.served += 1
            if self.linger and not self.eof:
                await self._linger()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _linger(self) -> None:
        """Close after a response to a request we did not read to its end: FIN first,
        then drop what the client still sends for a moment. Closing a socket with
        unread bytes makes the kernel send RST, which discards response bytes not yet
        delivered; a client that sends its whole body before reading (httpx does)
        would see a reset instead of our 413 or 401."""
        await self.stream.send_eof()
        with trio.move_on_after(LINGER_S):
            while await self.stream.receive_some(READ_SIZE):
                pass

    async def _next_head(self) -> RequestHead | None:
        """The next request head, or None when the connection should close."""
        server = self.server
        opts = server.options
        buf = self.buf
        with trio.move_on_after(opts.keep_alive_timeout_s) as scope:
            self.idle_scope = scope
            waiting = not buf
            if waiting:
                if server.closing or (server.draining and self.served):
                    return None
                server.idle.add(self)
            scanned = 0  # where the search for the head's end resumes
            try:
                while True:
                    while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # RFC 9112 2.2
                        del buf[: 2 if buf[:1] == b"\r" else 1]
                    found = find_head_end(buf, scanned)
                    if found is not None:
                        break
                    scanned = max(len(buf) - 2, 0)  # a blank line may straddle reads
                    if len(buf) > opts.max_head_bytes:
                        await self._refuse(431, "The request line and headers are too large.")
                        return None
                    data = await self.stream.receive_some(READ_SIZE)
                    if not data:
                        self.eof = True
                        return None
                    if waiting:
                        waiting = False
                        server.idle.discard(self)
                    buf += data
            finally:
                server.idle.discard(self)
        if scope.cancelled_caught:
            if buf.strip(b"\r\n"):  # part of a head came: the client is told why
                wait_s = opts.keep_alive_timeout_s
                server.quiet.log(logging.INFO, "408", "a request head took over %g s", wait_s)
                await self._refuse(408, f"The request head did not arrive within {wait_s:g} s.")
            return None  # idle too long, a head too slow, or draining
        assert found is not None
        end, body_start = found
        if end > opts.max_head_bytes:
            await self._refuse(431, "The request line and headers are too large.")
            return None
        try:
            head = parse_request_head(buf[:end])
        except HTTPParseError as e:
            server.quiet.log(logging.INFO, "head", "refused a request head: %s", e.message)
            await self._refuse(e.status, e.message)
            return None
        del buf[:body_start]
        return head

    async def _refuse(self, status: int, message: str) -> None:
        """The server's own answer to a request it will not pass on; then a close."""
        self.linger = True
        await self.stream.send_all(error_response(status, message, self.server.stamp()))


class _ServerExchange:
    """One request and its response: the ASGI receive and send of one call."""

    __slots__ = (
        "body_deadline",
        "body_left",
        "conn",
        "continue_due",
        "continue_sent",
        "decoder",
        "empty_due",
        "fd",
        "framer",
        "head",
        "on_gone",
        "refused",
        "request_done",
        "sent",
        "wait_scope",
    )

    def __init__(self, conn: _ClientConnection, head: RequestHead) -> None:
        self.conn = conn
        self.head = head
        self.framer = ResponseFramer(head.method, head.http_version, head.keep_alive)
        self.fd = conn.stream.socket.fileno()  # for `write_body`'s direct writes
        self.continue_due = head.expect_continue
        self.continue_sent: trio.Event | None = None  # set once a 100 Continue is written
        self.decoder: ChunkedDecoder | None = ChunkedDecoder() if head.chunked else None
        self.body_left = head.content_length or 0
        self.body_deadline = math.inf  # set by the app's first read of the body
        self.request_done = not head.chunked and not self.body_left  # all read off the wire
        self.empty_due = self.request_done  # a bodiless request still gets one http.request
        self.sent = False  # the whole response is written (framed is not enough)
        self.wait_scope: trio.CancelScope | None = None
        self.on_gone: Callable[[], None] | None = None  # the app's `watch_gone` callback
        # The server's own answer (status, message) to a body it will not take: the app
        # hears http.disconnect, its writes are dropped, and this goes out after it.
        self.refused: tuple[int, str] | None = None

    def scope(self) -> dict[str, Any]:
        head = self.head
        path = head.path
        extensions: dict[str, Any] = {
            BODY_EXTENSION: self.write_body,
            BODY_NOW_EXTENSION: self.write_now,
        }
        if self.conn.server.gone is not None:
            extensions[GONE_EXTENSION] = self.watch_gone
        return {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": head.http_version,
            "method": head.method,
            "scheme": "http",
            "path": unquote(path) if "%" in path else path,
            "raw_path": head.raw_path,
            "query_string": head.query,
            "root_path": "",
            "headers": head.headers,
            "client": self.conn.client,
            "server": self.conn.server.local,
            "extensions": extensions,
        }

    async def respond(self) -> bool:
        """Run the app for this request; True if the connection may take another."""
        conn = self.conn
        framer = self.framer
        try:
            await conn.server.app(self.scope(), self.receive, self.send)
        except Exception:
            log.exception("unhandled error in the app for %s %s", self.head.method, self.head.path)
            if not framer.head_sent and not conn.eof and self.refused is None:
                await self._send_500("The server failed unexpectedly.")
        else:
            if self.refused is None:
                if framer.keeps_connection(request_read=self.request_done):
                    return not conn.eof
                if not framer.head_sent and not conn.eof:
                    log.error(
                        "the app sent no response for %s %s", self.head.method, self.head.path
                    )
                    await self._send_500("The server sent no response.")
        finally:
            self._stop_watching()  # an app that left its watch on hears nothing after
        if self.refused is not None and not framer.head_sent and not conn.eof:
            status, message = self.refused
            conn.server.quiet.log(logging.INFO, "body", "refused a request body: %s", message)
            await conn._refuse(status, message)
            return False
        # Closing. The rest of an unread body would be taken for the next request.
        conn.linger = not self.request_done
        return False

    # -- receive ------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.request_done:
            if self.empty_due:
                self.empty_due = False
                return {"type": "http.request", "body": b"", "more_body": False}
            return await self._wait_disconnect()
        if self.refused is not None:
            return DISCONNECT
        conn = self.conn
        try:
            if self.body_deadline == math.inf:
                self.body_deadline = trio.current_time() + conn.server.options.body_timeout_s
            if self.continue_due:
                self.continue_due = False
                # A client already sending the body is not waiting; a response that has
                # begun makes the 100 pointless (RFC 9110 10.1.1).
                if not conn.buf and not self.framer.status:
                    await self._send_continue()
            if self.decoder is not None:
                return await self._receive_chunked()
            buf = conn.buf
            if not buf:
                data = await self._read_body(min(READ_SIZE, self.body_left))
                if not data:
                    return DISCONNECT
                buf += data
            take = min(self.body_left, len(buf))
            body = bytes(buf[:take])
            del buf[:take]
            self.body_left -= take
            self.request_done = self.body_left == 0
            return {"type": "http.request", "body": body, "more_body": not self.request_done}
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.eof = True
            return DISCONNECT

    async def _send_continue(self) -> None:
        """100 Continue, written by the task reading the body. An app may answer from
        another task meanwhile (Quart reads bodies in a task of its own): its write
        waits for this one, as two writes at once on one stream would both fail."""
        self.continue_sent = sent = trio.Event()
        try:
            await self.conn.stream.send_all(CONTINUE)
        finally:
            sent.set()

    async def _read_body(self, max_bytes: int) -> bytes:
        """The next bytes of the request body off the socket; b"" when there are none
        to come: the client closed (`eof`), or the body deadline passed (`refused`)."""
        conn = self.conn
        with trio.CancelScope(deadline=self.body_deadline):
            data = await conn.stream.receive_some(max_bytes)
            if not data:
                conn.eof = True
            return data
        timeout_s = conn.server.options.body_timeout_s
        self.refused = (408, f"The request body did not arrive within {timeout_s:g} s.")
        return b""

    async def _receive_chunked(self) -> dict[str, Any]:
        conn = self.conn
        decoder = self.decoder
        assert decoder is not None
        while True:
            if conn.buf:
                data = bytes(conn.buf)
                conn.buf.clear()
            else:
                data = await self._read_body(READ_SIZE)
                if not data:
                    return DISCONNECT
            try:
                body = decoder.feed(data)
            except HTTPParseError as e:
                # The framing is broken: nothing after this can be trusted; the client
                # is told why, then the connection closes.
                self.framer.must_close()
                self.refused = (e.status, e.message)
                return DISCONNECT
            if decoder.done:
                conn.buf += decoder.unused
                self.request_done = True
                return {"type": "http.request", "body": body, "more_body": False}
            if body:
                return {"type": "http.request", "body": body, "more_body": True}

    def watch_gone(self, on_gone: Callable[[], None]) -> Callable[[], None] | None:
        """The extension `gateway.gone`: call `on_gone` once if the client goes away
        (closes, resets, stops reading) before the returned function is called, with no
        task reading the client meanwhile (`readiness.ReadyWatch`; a pipelined next request is
        kept, as by `receive`). None while the request body is still to be read, or if
        the watch refuses the socket: the app waits on `receive` then."""
        conn, watch = self.conn, self.conn.server.gone
        if watch is None or not self.request_done or self.on_gone is not None:
            return None
        gone = self.sent or conn.eof
        if not gone and len(conn.buf) <= MAX_PIPELINED:
            try:
                watch.add(self.fd, self._client_readable)
            except OSError:  # epoll refused it (max_user_watches, ENOMEM): `receive` then
                return None
        self.on_gone = on_gone
        if gone:
            self._gone()
        return self._stop_watching

    def _stop_watching(self) -> None:
        if self.on_gone is not None:
            self.on_gone = None
            if self.conn.server.gone is not None:
                self.conn.server.gone.discard(self.fd)

    def _client_readable(self) -> bool:
        """What a watched client sent: a pipelined next request is kept (up to
        MAX_PIPELINED, then no longer watched); its end or an error means it is gone."""
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self._gone()
            return False
        buf = self.conn.buf
        buf += data
        return len(buf) <= MAX_PIPELINED

    def _gone(self) -> None:
        """The client is gone, or counts as gone: the app hears it, however it waits."""
        self.conn.eof = True
        if self.wait_scope is not None:
            self.wait_scope.cancel()
        on_gone = self.on_gone
        if on_gone is not None:
            self._stop_watching()
            on_gone()

    async def _wait_disconnect(self) -> dict[str, Any]:
        """Block until the client goes away (or the response is complete)."""
        conn = self.conn
        if self.sent or conn.eof:
            return DISCONNECT
        with trio.CancelScope() as scope:
            self.wait_scope = scope
            try:
                while True:
                    if len(conn.buf) > MAX_PIPELINED:
                        await trio.sleep_forever()
                    data = await conn.stream.receive_some(READ_SIZE)
                    if not data:
                        conn.eof = True
                        return DISCONNECT
                    conn.buf += data  # a pipelined next request: kept for later
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.eof = True
                return DISCONNECT
            finally:
                self.wait_scope = None
        return DISCONNECT

    # -- send ---------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI send: one write per message that puts bytes on the wire (`framing`)."""
        framer = self.framer
        if self.refused is not None:  # the server answers this one itself
            await trio.lowlevel.checkpoint()
            return
        if framer.complete:  # a body after the end is dropped (a start still raises)
            framer.send(message)
            await trio.lowlevel.checkpoint()
            return
        if framer.head_sent or message["type"] != "http.response.body":
            data = framer.send(message)
        else:  # the head goes out now: whether it may promise keep-alive is known now
            if not self.request_done:
                self._skip_arrived_body()
            conn = self.conn
            close = (
                conn.server.draining
                or not self.request_done
                or conn.served + 1 >= MAX_REQUESTS_PER_CONNECTION
            )
            data = framer.send(message, date=conn.server.stamp(), close=close)
        if data:
            await self._write(data)
        if framer.complete:
            self._completed()

    def _skip_arrived_body(self) -> None:
        """A Content-Length body the app answered without reading, all of it already
        in the buffer, is dropped there: the connection may then carry the next request
        instead of closing (an overloaded worker's 503, a 401, answer before reading)."""
        conn = self.conn
        if self.decoder is None and len(conn.buf) >= self.body_left:
            del conn.buf[: self.body_left]
            self.body_left = 0
            self.request_done = True

    def _completed(self) -> None:
        """The last bytes are written: a receive waiting for the client hears it gone."""
        self.sent = True
        if self.wait_scope is not None:
            self.wait_scope.cancel()

    async def write_body(self, data: bytes) -> None:
        """The extension `gateway.body`: `send` of a body message with more to come, once
        the head is out. Framed and written at once when the socket takes it all (no
        scheduler pass: the caller's next read is the checkpoint); else as `send`."""
        rest = self.write_now(data)
        if rest is not None:
            await rest

    def write_now(self, data: bytes) -> Awaitable[None] | None:
        """The extension `gateway.body_now`: `write_body` without awaiting. None when the
        framed piece went out whole at once; else an awaitable that writes the rest as
        `send` would (the caller must await it, before writing anything else)."""
        conn, framed = self.conn, self.framer.piece(data)
        if (
            framed is None
            or conn.eof
            or self.refused is not None
            or (self.continue_sent is not None and not self.continue_sent.is_set())
        ):
            return self.send({"type": "http.response.body", "body": data, "more_body": True})
        sent = self._write_at_once(framed)
        if sent is None or sent == len(framed):
            return None
        return self._write_rest(framed[sent:])

    async def _send_500(self, message: str) -> None:
        """The response of an app that failed before starting its own; then close."""
        await self._write(
            self.framer.fail(error(500, message).body(), date=self.conn.server.stamp())
        )
        self._completed()

    async def _write(self, data: bytes) -> None:
        """Send bytes; a client that has gone away makes this a no-op (the app hears
        http.disconnect from receive)."""
        conn = self.conn
        if conn.eof:
            await trio.lowlevel.checkpoint()  # a send is a checkpoint even when it is a no-op
            return
        if self.continue_sent is not None and not self.continue_sent.is_set():
            await self.continue_sent.wait()
        sent = self._write_at_once(data)
        if sent is not None and sent < len(data):
            await self._write_rest(data[sent:])

    def _write_at_once(self, data: bytes) -> int | None:
        """What the socket takes of `data` now, with no cancel scope and no scheduler
        pass (nearly always all of it: a response head, a JSON answer, a stream's
        piece); None if the client is gone (reset or closed: the app hears it)."""
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            self._gone()
            return None

    async def _write_rest(self, data: bytes) -> None:
        """What the socket did not take at once, through trio, within the send timeout."""
        conn = self.conn
        try:
            with trio.move_on_after(conn.server.options.send_timeout_s) as scope:
                await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._gone()
            return
        except trio.Cancelled:
            # Part of `data` may be on the wire: nothing can follow it on this connection.
            conn.eof = True
            raise
        if scope.cancelled_caught:
            # A client that stopped reading would hold this connection, the app's
            # upstream call and their memory forever: it counts as gone.
            conn.server.quiet.log(
                logging.INFO, "stalled", "closed a connection whose client stopped reading"
            )
            self._gone()


async def _serve_connection(server: Server, stream: trio.SocketStream) -> None:
    await _ClientConnection(server, stream).run()


def close(listeners: list[trio.SocketListener]) -> None:
    """No new connection from here on (closing is synchronous, and may be repeated)."""
    for listener in listeners:
        listener.socket.close()


async def serve(
    app: ASGIApp,
    host: str,
    port: int,
    options: ServerOptions | None = None,
    *,
    listen: Callable[[], socket.socket] | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    draining: Draining | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown_trigger` returns (then drain) or until cancelled.

    `listen` returns the listening socket, called once the app has started (a worker
    joining an SO_REUSEPORT group must not be handed connections while it is still
    starting; `gateway serve` binds before the event loop so that a taken port fails
    early, and passes that socket back here); without it this binds host:port.
    `draining` hears when a drain starts and when its grace ends (`Draining`).
    task_status gets the bound port once the app's lifespan startup has completed and
    connections are being accepted.
    """
    options = options or ServerOptions()
    lifespan = Lifespan(app)
    async with trio.open_nursery() as outer:
        outer.start_soon(lifespan.run)
        await lifespan.startup()
        if listen is not None:
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(listen()))]
        else:
            listeners = await trio.open_tcp_listeners(port, host=host, backlog=options.backlog)
        sockname = listeners[0].socket.getsockname()
        server = Server(app, options, (sockname[0], sockname[1]), draining, _serve_connection)
        if readiness.available():
            server.gone = readiness.ReadyWatch()
            outer.start_soon(server.gone.run)
        try:
            async with trio.open_nursery() as connections:
                accepting = trio.CancelScope()

                async def accept() -> None:
                    try:
                        with accepting:
                            async with trio.open_nursery() as acceptors:
                                for listener in listeners:
                                    acceptors.start_soon(server.accept, listener, connections)
                    finally:
                        close(listeners)

                connections.start_soon(accept)
                task_status.started(sockname[1])
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                await shutdown_trigger()
                server.start_drain()
                await trio.sleep(options.drain_delay_s)
                accepting.cancel()
                close(listeners)
                server.stop_accepting()
                with trio.move_on_after(options.graceful_timeout_s):
                    await server.all_closed.wait()
                if not server.all_closed.is_set() and draining is not None:
                    draining.grace_ended()
                    with trio.move_on_after(FINAL_WORDS_S):
                        await server.all_closed.wait()
                connections.cancel_scope.cancel()
            await lifespan.shutdown(options.graceful_timeout_s)
        finally:
            outer.cancel_scope.cancel()  # a lifespan that never returns must not hang us
