"""Held streams: many streaming requests opened at a ramp, then held idle.

`hold_streams` posts one streaming request `count` times, `ramp_per_s` a second, each
on a connection of its own, with at most `max_pending` being opened at once. A stream is
open once its 200 and its first content event have come (`StreamSink` finds it); its
connection then stays idle, nothing more looked at, until the block ends, which closes
every connection at once, as clients that go away. This is the load of many slow
generations whose clients wait: what a server holds per stream shows in its memory.

A stream refused with 503 (a server shedding load) is asked again after a second, as
the OpenAI SDK would, up to `retries` times (each counted in `HoldState.retried`).
A stream not open within `open_timeout_s` of the start fails as "timeout"; the other
failures count by reason: the load generator's kinds (`metrics.ERROR_KINDS`), with
``HTTP <status>`` for an error status, ``connect <ERRNO>`` for a failed connect whose
errno is known and ``ended`` for a stream that ended without any content.
"""

from __future__ import annotations

import errno
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h11
import trio

from bench.loadgen.client import Connection, StreamSink, Target, TransportError
from bench.loadgen.metrics import RequestRecord

__all__ = ["HoldState", "hold_stream", "hold_streams"]


@dataclass
class HoldState:
    """How the opening of `total` streams goes; `pending` bounds those being opened.
    Times are `trio.current_time()`; `all_done` is set once every stream is open or
    has failed."""

    total: int
    pending: trio.Semaphore
    start: float = 0.0
    retries: int = 0  # a 503 is asked again this many times, a second apart
    retried: int = 0  # 503s asked again
    opened: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # a detail per reason
    open_latencies: list[float] = field(default_factory=list)  # seconds, per open stream
    last_open_at: float | None = None
    finished: int = 0  # open or failed
    all_done: trio.Event = field(default_factory=trio.Event)

    @property
    def failures(self) -> int:
        """Streams that could not be opened."""
        return sum(self.failed.values())

    def open(self, latency: float, now: float) -> None:
        """One stream got its first content event `latency` s after it was started."""
        self.opened += 1
        self.open_latencies.append(latency)
        self.last_open_at = now
        self._finish()

    def fail(self, reason: str, detail: str) -> None:
        """One stream could not be opened; `reason` is a short key to count it by."""
        self.failed[reason] += 1
        self.examples.setdefault(reason, detail)
        self._finish()

    def _finish(self) -> None:
        self.pending.release()
        self.finished += 1
        if self.finished == self.total:
            self.all_done.set()


class _FirstContent(StreamSink):
    """A stream's answer until its first content event, which counts it open in `state`
    and lifts the open deadline of `scope` (unless that has struck: then it is a
    timeout), so that the connection is then held idle. What comes after is not
    looked at."""

    __slots__ = ("_scope", "_state", "opened")

    def __init__(self, state: HoldState, scope: trio.CancelScope, started: float) -> None:
        super().__init__(RequestRecord(scheduled=0.0, start=0.0), started)
        self._state = state
        self._scope = scope
        self.opened = False

    def data(self, data: bytes, now: float) -> None:
        if self.opened:
            return
        super().data(data, now)
        first = self.record.first_token  # seconds since `started`
        if first is not None and not self._scope.cancel_called:
            self.opened = True
            self._scope.deadline = math.inf
            self._state.open(first, now)


async def hold_stream(
    state: HoldState,
    target: Target,
    head: h11.Request,
    body: bytes,
    started: float,
    deadline: float,
) -> None:
    """Open one stream on a connection of its own by `deadline`; then hold it idle until
    this task is cancelled, which closes the connection abruptly."""
    for attempt in range(state.retries + 1):
        retry = attempt < state.retries
        if await _hold_one(state, target, head, body, started, deadline, retry):
            return
        state.retried += 1
        await trio.sleep(RETRY_AFTER_S)


RETRY_AFTER_S = 1.0  # the gateway's Retry-After on a 503 overloaded


async def _hold_one(
    state: HoldState,
    target: Target,
    head: h11.Request,
    body: bytes,
    started: float,
    deadline: float,
    retry: bool,
) -> bool:
    """One try of `hold_stream`; False: refused with 503 and `retry` (nothing counted)."""
    conn = Connection(target)
    reason = ""
    try:
        with trio.CancelScope(deadline=deadline) as scope:
            sink = _FirstContent(state, scope, started)
            try:
                await conn.post(head, body, sink)
            except TransportError as exc:
                sink.fail(exc.kind, exc.detail)
                if exc.errno is not None:
                    reason = f"{exc.kind} {errno.errorcode.get(exc.errno, exc.errno)}"
        if sink.opened:
            await trio.sleep_forever()
        record = sink.record
        if retry and not scope.cancelled_caught and record.status == 503:
            return False
        if scope.cancelled_caught:
            state.fail("timeout", "no first content event within the open timeout")
        elif record.error == "status":
            state.fail(f"HTTP {record.status}", sink.detail)
        else:
            state.fail(
                reason or record.error or "ended",
                sink.detail or "the stream ended before its first content event",
            )
        return True
    finally:
        conn.close()


async def _ramp(
    nursery: trio.Nursery,
    state: HoldState,
    target: Target,
    head: h11.Request,
    body: bytes,
    ramp_per_s: float,
    deadline: float,
) -> None:
    """Start the streams on schedule, each once fewer than `max_pending` are being opened."""
    for i in range(state.total):
        await trio.sleep_until(state.start + i / ramp_per_s)
        await state.pending.acquire()  # released by the stream once open or failed
        nursery.start_soon(hold_stream, state, target, head, body, trio.current_time(), deadline)


@asynccontextmanager
async def hold_streams(
    target: Target,
    head: h11.Request,
    body: bytes,
    count: int,
    *,
    ramp_per_s: float,
    max_pending: int,
    open_timeout_s: float,
    retries: int = 0,
) -> AsyncIterator[HoldState]:
    """Open `count` streams of the request `head` + `body` (a streaming one) in the
    background and yield their state at once; leaving the block closes every connection.
    A 503 is asked again up to `retries` times."""
    if count < 1 or ramp_per_s <= 0 or max_pending < 1 or retries < 0:
        raise ValueError("count >= 1, ramp_per_s > 0, max_pending >= 1 and retries >= 0")
    start = trio.current_time()
    state = HoldState(
        total=count, pending=trio.Semaphore(max_pending), start=start, retries=retries
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _ramp, nursery, state, target, head, body, ramp_per_s, start + open_timeout_s
        )
        yield state
        nursery.cancel_scope.cancel()
