"""One connection of the upstream pool (h11_pool.py): its socket and its TLS.

Plain TCP reads and writes are tcp_io.py's; https is the pool's own TLS (tls.py),
which the pump can read without waiting.
"""

from __future__ import annotations

import select
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import trio

from gateway.upstream import tcp_io
from gateway.upstream.tls import TLSConnection

__all__ = ["PooledConnection"]

_POLL_BAD: Final = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL


class PooledConnection:
    """One upstream connection: its raw socket, and its TLS session for https. It holds
    no parser state: an exchange parses its own response (http1.HeadReader, then the
    body's framing), and a connection is pooled only between exchanges that ended
    cleanly."""

    __slots__ = ("fd", "idle_since", "receive_some", "send_all", "sock", "tls")

    def __init__(self, tcp: trio.SocketStream, tls: TLSConnection | None = None) -> None:
        sock = tcp.socket
        self.sock = sock  # the TCP socket (under TLS too)
        self.tls = tls
        self.fd = sock.fileno()  # read directly by `read_now`
        # Never a method of self: a bound method kept on its own instance is a
        # reference cycle, and each connection would then wait for a full collection
        # to be freed (a pause of ~0.5 s in a worker holding thousands of streams).
        self.receive_some: Callable[[int], Awaitable[bytes]]
        self.send_all: Callable[[bytes], Awaitable[None]]
        if tls is None:
            self.receive_some = partial(tcp_io.receive, sock)
            self.send_all = partial(tcp_io.send, tcp)
        else:
            self.receive_some = tls.receive_some
            self.send_all = tls.send_all
        self.idle_since = 0.0

    def readable(self) -> bool:
        """Whether the socket has something to read (or an error) right now, without
        waiting; or the TLS session has ended (a close_notify read with the last
        response, the socket then possibly never readable)."""
        if self.tls is not None and self.tls.ended:
            return True
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            return any(mask & _POLL_BAD for _, mask in poller.poll(0))
        except (OSError, ValueError):  # closed socket: fileno() is -1
            return True

    def close(self) -> None:
        """Close now, without awaiting (works under cancellation; unread data makes it an RST).

        TLS close_notify is skipped: HTTP/1.1 framing does not depend on it and a peer that
        stopped reading must not block us.
        """
        self.sock.close()
