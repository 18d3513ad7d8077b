"""What every connection of one built-in server shares (gateway/server/serve.py):
the app, the options, the connection count and cap, the drain state, the `date:`
line, the watch on streams' clients; and the accept loop, which refuses connections
over the cap with a 503 and pauses while the process is out of file descriptors."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from gateway import readiness
from gateway.server.lifespan import ASGIApp
from gateway.server.options import Draining, ServerOptions
from gateway.server.quiet import Throttled
from gateway.server.replies import date_line, error_response

__all__ = ["LINGER_S", "READ_SIZE", "IdleConnection", "Server"]

log = logging.getLogger("gateway.server.serve")

READ_SIZE = 65536
LINGER_S = 2.0  # after a response to a request we did not read to its end
REFUSE_WAIT_S = 1.0  # a connection over the cap: wait this long for its request
MAX_REFUSING = 64  # connections over the cap being answered at once; beyond, closed at once
ACCEPT_PAUSE_S = (0.05, 1.0)  # out of file descriptors: accept pauses, doubling up to the max
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class IdleConnection(Protocol):
    """A connection waiting for its next request head: a drain ends it early."""

    served: int
    idle_scope: trio.CancelScope


class Server:
    """What every connection shares: the app, the options, the connection count and
    the drain state."""

    def __init__(
        self,
        app: ASGIApp,
        options: ServerOptions,
        local: tuple[str, int],
        draining: Draining | None,
        serve_connection: Callable[[Server, trio.SocketStream], Awaitable[None]],
    ) -> None:
        self.app = app
        self.serve_connection = serve_connection
        self.options = options
        self.local = local
        self.listener = draining
        self.draining = False  # responses say close; keep-alive connections end after theirs
        self.closing = False  # no longer accepting: idle connections end now
        self.idle: set[IdleConnection] = set()  # connections waiting for a request head
        self.open = 0  # connections being served (those refused over the cap aside)
        self.refusing = 0
        self.starved = False  # accept failed for want of file descriptors
        self.all_closed = trio.Event()  # set once closing and no connection is left
        self.quiet = Throttled(log)
        self.gone: readiness.ReadyWatch | None = None  # watches streams' clients (serve starts it)
        name = options.server_header.encode("latin-1")
        self._server_line = b"server: " + name + b"\r\n" if name else b""
        self._dated = b""
        self._stamp = b""

    def stamp(self) -> bytes:
        """The `date:` and `server:` header lines every response carries, rendered once
        per second."""
        line = date_line()
        if line is not self._dated:
            self._dated = line
            self._stamp = line + self._server_line
        return self._stamp

    def start_drain(self) -> None:
        """SIGTERM: idle keep-alive connections close, responses say `connection: close`,
        the app is told; new connections are still served (drain_delay_s)."""
        self.draining = True
        for conn in list(self.idle):
            if conn.served:
                conn.idle_scope.cancel()
        if self.listener is not None:
            self.listener.drain_started()

    def stop_accepting(self) -> None:
        self.closing = True
        for conn in list(self.idle):
            conn.idle_scope.cancel()
        if self.open == 0:
            self.all_closed.set()

    async def accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Accept connections for ever, each served in a task of `nursery`. Out of file
        descriptors, accept pauses (up to a second) instead of spinning: the kernel's
        backlog holds new connections meanwhile, and one warning says so."""
        pause = ACCEPT_PAUSE_S[0]
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return  # closed by serve(): draining
            except OSError as e:
                if e.errno not in OUT_OF_RESOURCES:
                    raise
                if not self.starved:
                    self.starved = True
                    self.quiet.log(
                        logging.WARNING,
                        "accept",
                        "cannot accept connections (%s: %s) with %d open; pausing accept until"
                        " some close (lower [server] max_connections or raise the open-file"
                        " limit)",
                        errno.errorcode.get(e.errno or 0, e.errno),
                        os.strerror(e.errno or 0),
                        self.open,
                    )
                await trio.sleep(pause)
                pause = min(2 * pause, ACCEPT_PAUSE_S[1])
                continue
            if self.starved:
                self.starved = False
                log.info("accepting connections again (%d open)", self.open)
            pause = ACCEPT_PAUSE_S[0]
            if self.open >= self.options.max_connections:
                nursery.start_soon(self.refuse, stream)
            else:
                self.open += 1  # counted at once, so that a burst cannot overshoot the cap
                nursery.start_soon(self.handle, stream)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self.serve_connection(self, stream)
        finally:
            self.open -= 1
            if self.open == 0 and self.closing:
                self.all_closed.set()

    async def refuse(self, stream: trio.SocketStream) -> None:
        """A connection past max_connections: 503 with Retry-After once its request has
        begun to arrive (or REFUSE_WAIT_S passed), then a close. Beyond MAX_REFUSING at
        once, closed without a word: answering must not cost more than serving."""
        cap = self.options.max_connections
        self.quiet.log(
            logging.WARNING, "cap", "refusing connections past max_connections (%d)", cap
        )
        if self.refusing >= MAX_REFUSING:
            await trio.aclose_forcefully(stream)
            return
        self.refusing += 1
        message = f"The gateway is serving its maximum of {cap} connections; retry shortly."
        try:
            with trio.move_on_after(REFUSE_WAIT_S):
                await stream.receive_some(READ_SIZE)
            with trio.move_on_after(LINGER_S):
                await stream.send_all(error_response(503, message, self.stamp()))
                await stream.send_eof()
                while await stream.receive_some(READ_SIZE):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.refusing -= 1
            await trio.aclose_forcefully(stream)
