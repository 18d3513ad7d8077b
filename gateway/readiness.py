"""Many sockets, one task: an epoll interest set whose ready sockets get a plain call.

trio waits for a socket with one task per socket, and each wait re-arms the socket in
its epoll set (a one-shot registration: one `epoll_ctl` per wait) and costs a pass
through the scheduler when it ends. For sockets that are waited on for a long time or
again and again, that is most of what waiting costs. Here the sockets sit in one
epoll interest set of our own (Linux), registered once, and one task waits until that
set is readable, then calls each ready socket's `Readable` callback, synchronously.
Level-triggered: a socket stays ready until its callback has read what arrived or
stopped watching it. Two users:

- the built-in server's watch on the clients of streamed responses (one per server),
  which must hear at once when a client closes (docs/reliability.md R6), at no task
  per stream (gateway/server/serve.py, the ASGI extension `gateway.gone`);
- the relay's pump (`worker_watch`, one per worker), which relays a streamed answer's
  chunks as they arrive while the stream's own task sleeps (gateway/upstream/pump.py).

Elsewhere (no epoll) `available()` is False: the server offers no watch, and the relay
reads in its own task, as any trio program does.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable
from typing import Final

import trio

__all__ = ["Readable", "ReadyWatch", "available", "worker_watch"]

log = logging.getLogger("gateway.readiness")

MAX_EVENTS: Final = 256  # sockets handled per wake-up; the rest stay ready for the next

Readable = Callable[[], bool]
"""Called when a watched socket is readable (data, end of stream or an error): it
reads what it can and returns whether to keep watching the socket."""


def available() -> bool:
    return hasattr(select, "epoll")


class ReadyWatch:
    """The sockets being watched, by file descriptor, and the task that watches them
    (`run`, for the owner's lifetime). `add` and `discard` are synchronous, so a
    socket stops being watched the moment its owner is done with it, before it can
    close."""

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
                    except Exception:  # one socket's fault must not end the watch for all
                        log.exception("a watched socket's callback failed")
                        keep = False
                    if not keep:
                        self.discard(fd)
                        if readable is None:  # never left registered without a callback
                            with contextlib.suppress(OSError, ValueError):
                                epoll.unregister(fd)
                # Not held while waiting: the last callback is its owner's bound method,
                # which would keep a finished stream alive until the next wake-up.
                readable = None
        finally:
            self._watched.clear()
            epoll.close()


_WORKER_WATCH: trio.lowlevel.RunVar[ReadyWatch] = trio.lowlevel.RunVar("gateway_worker_watch")


def worker_watch() -> ReadyWatch | None:
    """The watch shared by everything in this trio run (a worker), started on first
    use as a system task that lives as long as the run; None without epoll."""
    try:
        return _WORKER_WATCH.get()
    except LookupError:
        pass
    if not available():
        return None
    watch = ReadyWatch()
    _WORKER_WATCH.set(watch)
    trio.lowlevel.spawn_system_task(watch.run, name="gateway.readiness.worker_watch")
    return watch
