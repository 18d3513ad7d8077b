"""Synchronous SQLite calls from trio: one worker thread at a time, and cancellable.

A plain sqlite3 call in `trio.to_thread.run_sync` cannot be cancelled (docs/reliability.md
S1: a 7.8 s query cancelled at 0.2 s returned at 7.6 s), so `ThreadedCalls` calls
the connection's `interrupt()` when its caller is cancelled and waits for the thread
to give the connection back: the statement stops within milliseconds and its
transaction rolls back, so a cancelled write is all or nothing. Calls on one
connection are serialised (a sqlite3 connection is not for concurrent threads).
SQLite errors leave as `StoreError`.

Shared by every SQLite store of the server (keys and the ledger: sqlite.py; stored
responses: responses.py), each with its own connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

import outcome
import trio

from gateway.store.records import StoreError

P = ParamSpec("P")
T = TypeVar("T")


class Interruptible(Protocol):
    """A store on one sqlite3 connection whose running statement can be stopped."""

    path: str

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


class ThreadedCalls:
    """Runs a store's synchronous calls in worker threads, one at a time."""

    def __init__(self, store: Interruptible) -> None:
        self._store = store
        self._lock = trio.Lock()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker thread; cancellable."""
        async with self._lock:
            result: list[outcome.Outcome[T]] = []
            done = trio.Event()

            def work() -> None:
                result.append(outcome.capture(fn, *args, **kwargs))

            async def in_thread() -> None:
                with trio.CancelScope(shield=True):  # the connection must come back
                    await trio.to_thread.run_sync(work)
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_thread)
                try:
                    await done.wait()
                except trio.Cancelled:
                    self._store.interrupt()
                    raise
        try:
            return result[0].unwrap()
        except sqlite3.Error as e:
            raise StoreError(f"{self._store.path}: {e}") from e

    async def aclose(self) -> None:
        async with self._lock:
            self._store.close()
