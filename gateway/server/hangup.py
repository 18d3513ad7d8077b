"""SIGHUP, the reload signal, neither lost nor fatal while a process starts.

SIGHUP's default action ends a process, and a handler is only in place once the
process is running its event loop. So `gateway serve` blocks SIGHUP first thing
(`hold`): a SIGHUP that arrives while it starts stays pending, and worker processes,
which inherit the blocked mask, start the same way. `receive_hangups` installs the
handler and only then unblocks, so a pending SIGHUP is delivered at once, to it: a
reload asked for during the start is done right after it, on the new config.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the supervisor of `--workers N` holds SIGHUP without importing trio
    import trio

__all__ = ["held", "hold", "receive_hangups"]

_HUP = {signal.SIGHUP}


def hold() -> None:
    """Keep SIGHUP pending in this thread (and in the processes it starts) from now on."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _HUP)


def release() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HUP)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """SIGHUP pending for the duration (a child started meanwhile starts with it held)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HUP)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


async def receive_hangups(
    on_hangup: Callable[[], Awaitable[object]],
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """Call `on_hangup` for each SIGHUP, one at a time, until cancelled (those that
    arrive meanwhile count once: trio coalesces them). Main thread only; started with
    `nursery.start`."""
    import trio

    try:
        with trio.open_signal_receiver(signal.SIGHUP) as hangups:
            release()  # a SIGHUP held pending since the start arrives now
            task_status.started()
            async for _ in hangups:
                await on_hangup()
    finally:
        hold()  # stopping: a late SIGHUP must not end the process before its drain
