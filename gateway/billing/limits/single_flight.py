"""One run per name at a time: the first burst on a key seeds its budget once.

Both limit backends (`memory`, `redis`) seed a key's budget from the ledger the first
time they need it; this keeps concurrent admissions on one key from each reading it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["SingleFlight"]


class SingleFlight:
    """Runs one call per name at a time; concurrent callers wait for it instead.

    Seeding reads the ledger (SQLite, in a thread): the first burst on a key after a
    restart must cost one read, not one per request. A caller passes the `epoch` it
    read before it found the state missing; if a run for that name finished since,
    its answer may simply be stale and it retries without running again. A waiter
    does not see the leader's outcome either; it checks the state again.
    """

    _MAX_NAMES = 4096  # epochs are forgotten past this: at worst one extra run

    def __init__(self) -> None:
        self._running: dict[str, trio.Event] = {}
        self._finished: dict[str, int] = {}

    def epoch(self, name: str) -> int:
        """How many runs for `name` have finished (to pass to `run`)."""
        return self._finished.get(name, 0)

    async def run(
        self, name: str, epoch: int, fn: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Run `fn(*args)` unless a run for `name` finished after `epoch` or is running."""
        if self._finished.get(name, 0) != epoch:
            return
        running = self._running.get(name)
        if running is not None:
            await running.wait()
            return
        done = self._running[name] = trio.Event()
        try:
            await fn(*args)
        finally:
            del self._running[name]
            if len(self._finished) >= self._MAX_NAMES:
                self._finished.clear()
            self._finished[name] = epoch + 1
            done.set()
