"""Off the event loop: the O(size) steps of a big request run in a few worker threads.

A worker serves every request on one trio event loop, so a step that takes 2 s on a
15 MB body (counting its tokens, validating or translating it, the mock's answer)
delays every other request of the worker by 2 s. The steps whose cost grows with the
body run through `Offload.run`: inline for a body under `OFFLOAD_BYTES` (at most a
few milliseconds of work, less than a thread hop is worth), else in a thread, at most
`threads` at once per worker (a `trio.CapacityLimiter`), so that big requests queue
behind one another instead of taking every core. Only pure steps run there (the
parser, validator, token counter and translators touch no shared state).

A thread frees the loop where the work releases the GIL (tiktoken's encoder) or runs
Python bytecode (the interpreter hands the GIL to the loop every
`sys.getswitchinterval()`, 5 ms). A single C call that keeps the GIL (orjson parsing
or encoding a 16 MB body) holds the loop for as long as it runs, thread or not: what
bounds it is the body limit and the JSON limits (docs/reliability.md R13), and the
token counter's budget bounds the counting (gateway/tokens/count.py).

Cancelling the task that waits does not stop the thread (trio cannot); each step is
bounded, and the request ends when its step returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import trio

__all__ = ["OFFLOAD_BYTES", "Offload"]

OFFLOAD_BYTES: Final = 16 * 1024
"""Request bodies at least this large do their O(size) steps in a worker thread."""

T = TypeVar("T")


class Offload:
    """One worker's bounded pool for the O(size) steps of big requests."""

    __slots__ = ("_limiter",)

    def __init__(self, threads: int = 2) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self._limiter = trio.CapacityLimiter(threads)

    async def run(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` for a request whose body is `size` bytes: inline when small,
        else in a worker thread once one of the pool's slots is free."""
        if size < OFFLOAD_BYTES:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
