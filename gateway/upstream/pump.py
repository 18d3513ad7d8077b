"""The steady state of a streamed answer, relayed with no task switch per chunk.

Once a stream's first content has gone out, what follows is nearly always the same
step, tens of times a second for a minute: a chunk arrives, is translated, is written
to the client. In a task of its own that step is a trio wait (an `epoll_ctl` to re-arm
the socket, a pass through the scheduler, the resumption of a dozen suspended
coroutine frames) around a few microseconds of work. Here the upstream socket joins
the worker's readiness watch (gateway/readiness.py) and the step runs as a plain call
when the socket is readable, while the stream's task sleeps.

Anything but that step hands the stream back to its task, which carries on as before
(upstream/relay.py): the end of the body, the translator finishing or failing, a read
that fails, a client whose socket did not take a whole write (the rest is written by
the task, with trio's flow control and the server's send timeout), and the deadlines.
The relay's deadlines stay its cancel scope's: the pump moves the idle deadline as
chunks arrive, as the relay's loop does, and a cancellation wakes the task as always.

Used only where every part can do its step synchronously: the h11 pool's chunked
bodies over TCP or TLS (`read_now`; its TLS is its own, upstream/tls.py, so that a
ready socket's records can be decrypted in a plain call), the built-in server's direct
writes (`write_now`) and a platform with epoll. Otherwise the relay reads in its own
task.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import trio

from gateway import readiness
from gateway.providers.base import StreamTranslator
from gateway.upstream.idle import IdleDeadline

__all__ = ["Pumped", "WriteNow", "pump", "pumpable"]

log = logging.getLogger("gateway.upstream.pump")

WriteNow = Callable[[bytes], Awaitable[None] | None]
"""Writes to the client at once: None when all of it went out, else an awaitable that
writes the rest (it must be awaited, or closed)."""


class Pumped(Protocol):
    """An upstream response whose body can be read without waiting (h11_pool)."""

    def pump_fd(self) -> int | None: ...

    def read_now(self) -> bytes: ...


def pumpable(resp: object) -> Pumped | None:
    """`resp` if it can be pumped, else None. A duck check: `isinstance` against a
    runtime-checkable Protocol walks the protocol's attributes, microseconds a stream."""
    if callable(getattr(resp, "read_now", None)) and callable(getattr(resp, "pump_fd", None)):
        return cast(Pumped, resp)
    return None


class _Stream:
    """One stream in the pump: what its callback needs, and what it leaves the task."""

    __slots__ = ("failure", "gaps", "resp", "rest", "task", "translator", "woken", "write_now")

    def __init__(
        self, resp: Pumped, translator: StreamTranslator, write_now: WriteNow, gaps: IdleDeadline
    ) -> None:
        self.resp = resp
        self.translator = translator
        self.write_now = write_now
        self.gaps = gaps
        self.task = trio.lowlevel.current_task()
        self.failure: Exception | None = None  # raised in the task, where it would have been
        self.rest: Awaitable[None] | None = None  # a write the client did not take whole
        self.woken = False

    def readable(self) -> bool:
        """The socket is readable: relay what came; False hands the stream back."""
        try:
            piece = self.resp.read_now()
            if piece:
                self.gaps.touch(trio.current_time())
                data = self.translator.feed(piece)
                if data:
                    self.rest = self.write_now(data)
                    if self.rest is not None:
                        return self._wake()
        except Exception as e:  # a failed read, or a bug: the task's to raise
            self.failure = e
            return self._wake()
        translator = self.translator
        if translator.error is not None or translator.finished or self.resp.pump_fd() is None:
            return self._wake()  # the upstream finished or failed, or the body ended
        return True

    def _wake(self) -> bool:
        """Hand the stream back to its task, unless a cancellation already woke it
        (a write that found the client gone cancels the task's scope, and trio runs
        the abort at once, inside this call)."""
        if not self.woken:
            self.woken = True
            trio.lowlevel.reschedule(self.task)
        return False


_told = False  # the refusal was logged in this process


def _refused(error: OSError) -> None:
    """Say once per process that the watch refused a socket: the streams still run, in
    their tasks, at the cost the pump saves (the kernel's limit is worth raising)."""
    global _told
    if not _told:
        _told = True
        log.warning(
            "the readiness watch refused a stream's socket (%s); such streams are relayed "
            "by their own tasks (see fs.epoll.max_user_watches)",
            error,
        )


async def pump(
    resp: Pumped,
    translator: StreamTranslator,
    write_now: WriteNow,
    gaps: IdleDeadline,
) -> bool:
    """Relay `resp`'s body through the worker's watch until the task must take over
    again; False at once if this platform or this response cannot be pumped, or the
    watch refuses the socket (then the task reads, as without epoll). Raises
    what reading or translating raised. `gaps` is the relay's idle deadline, moved as
    chunks arrive; its scope's cancellation (a deadline, the client gone) ends the
    pumping.
    """
    watch = readiness.worker_watch()
    fd = resp.pump_fd()
    if watch is None or fd is None:
        return False
    stream = _Stream(resp, translator, write_now, gaps)

    def abort(_: object) -> trio.lowlevel.Abort:
        stream.woken = True
        watch.discard(fd)
        return trio.lowlevel.Abort.SUCCEEDED

    try:
        watch.add(fd, stream.readable)
    except OSError as e:  # epoll refused it (ENOSPC: max_user_watches, ENOMEM)
        _refused(e)
        return False  # the task reads, as where there is no epoll
    try:
        await trio.lowlevel.wait_task_rescheduled(abort)
    finally:
        watch.discard(fd)
    failure, stream.failure = stream.failure, None
    if failure is not None:
        try:
            raise failure
        finally:  # neither the state nor this frame hold it: no cycle through its traceback
            del failure
    if stream.rest is not None:
        await stream.rest
    return True
