"""Clients that go away while their response streams: one epoll set and one task for all.

A streamed response can run for minutes while its client sends nothing, and the app
must hear at once when the client closes (it cancels the upstream call:
docs/reliability.md R6). A task per stream blocked in a read of its client socket did
that, at ~5 KB of task, cancel scopes and suspended coroutine frames per stream
(docs/performance.md, "idle streams"). Here the client sockets of every stream being
watched sit in one epoll interest set (Linux), and one task per server waits until that
set is readable, then asks each ready socket's `Readable` callback what happened.
Level-triggered: a socket stays ready until its callback has read what arrived (a
pipelined next request, kept by the server) or stopped watching it.

Elsewhere (no epoll) `available()` is False and the server offers no such watch; the
app then waits on ASGI `receive` in a task, as any ASGI server expects.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable
from typing import Final

import trio

__all__ = ["GoneWatch", "Readable", "available"]

log = logging.getLogger("gateway.server.serve")

MAX_EVENTS: Final = 256  # sockets handled per wake-up; the rest stay ready for the next

Readable = Callable[[], bool]
"""Called when a watched socket is readable (data, end of stream or an error): it
reads what it can and returns whether to keep watching the socket."""


def available() -> bool:
    return hasattr(select, "epoll")


class GoneWatch:
    """The sockets being watched, by file descriptor, and the task that watches them
    (`run`, for the server's lifetime). `add` and `discard` are synchronous, so a
    socket stops being watched the moment its exchange ends, before it can close."""

    __slots__ = ("_epoll", "_watched")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched: dict[int, Readable] = {}

    def __len__(self) -> int:
        return len(self._watched)

    def add(self, fd: int, readable: Readable) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._watched[fd] = readable

    def discard(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):  # closed: the kernel dropped it
                self._epoll.unregister(fd)

    async def run(self) -> None:
        """Wait for any watched socket to be ready and hand it to its callback, until
        cancelled; then the epoll set is closed."""
        epoll = self._epoll
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _events in epoll.poll(0, MAX_EVENTS):
                    readable = self._watched.get(fd)
                    try:
                        keep = readable is not None and readable()
                    except Exception:  # one stream's fault must not end the watch for all
                        log.exception("watching a client connection failed")
                        keep = False
                    if not keep:
                        self.discard(fd)
                        if readable is None:  # never left registered without a callback
                            with contextlib.suppress(OSError, ValueError):
                                epoll.unregister(fd)
        finally:
            self._watched.clear()
            epoll.close()
