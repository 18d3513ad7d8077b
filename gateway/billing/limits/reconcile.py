"""After a seed under traffic: bring the shared live budget to the ledger's, by request.

When Redis lost a key's budget (a restart) while requests ran, the next admission
seeds it from the ledger, and two kinds of request are miscounted by that seed: those
in flight, which it counts at their reserved worst case while their settlements
belong to the lost state (a no-op now), and those whose rows other instances had not
written yet, which it does not count at all. The seed therefore lists what it counted
for each recent or pending request (`SeedWindow`); Redis keeps that list, and logs
every charge settlements make, in the key's *window* (`lua/load.lua`,
`lua/settle.lua`). The instance that seeded runs rounds here: from `delay_s` after
the seed (every instance has written its rows by then), it reads the ledger's rows
of those requests and of every request created since (`RowReader`: the store and
this instance's journal) and sends them to `lua/reconcile.lua`, which charges each
request the difference between the ledger and what Redis counted for it, once. Rounds
repeat every `every_s` while a request that straddled the seed is still running (its
row pending, no reservation live here), and the window closes when none is left, or
after `window_s` whatever is left (docs/deployment.md has the argument).

Nothing here is on a request's path: the rounds run in the backend's own background
task; a round that cannot read the ledger or reach Redis is tried again later.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from gateway.billing.limits.budget import (
    DEFAULT_RESERVATION_TTL_S,
    RECONCILE_LOOKBACK_S,
    SeedWindow,
)
from gateway.store.records import PENDING, StoreError, UsageRow

__all__ = ["Reconciler", "RowReader", "Unreachable", "window_args"]

log = logging.getLogger("gateway.billing.limits.reconcile")

RowReader = Callable[[str, float | None, tuple[str, ...], float], Awaitable[Sequence[UsageRow]]]
"""(key_id, since, request_ids, now) -> the key's ledger rows created at or after
`since` (None: none by time) and those of `request_ids`, journaled rows merged in
(`Gateway.ledger_rows`)."""

Send = Callable[[str, Sequence[object], float], Awaitable[Any]]
"""Runs `lua/reconcile.lua` for a key with these ARGV (raises `Unreachable`)."""

DELAY_S = 2.0  # ten flush intervals: every instance has written what it journaled
EVERY_S = 2.0
WINDOW_S = DEFAULT_RESERVATION_TTL_S + RECONCILE_LOOKBACK_S  # a straddling request ended
_CHUNK = 1000  # rows per script call


class Unreachable(Exception):
    """Redis did not answer the reconcile (the breaker is open): try again later."""


def window_args(window: SeedWindow | None, window_s: float) -> list[object]:
    """The tail of `lua/load.lua`'s ARGV for `window`: its lifetime, then what the seed
    counted, by request id."""
    if window is None:
        return [""]
    out: list[object] = [max(1, round(window_s * 1000))]
    for rid, micros in window.charges:
        out += [rid, micros]
    return out


def row_args(rows: Sequence[UsageRow]) -> list[object]:
    """The rows as `lua/reconcile.lua` reads them: id, p/f, micros, created (s)."""
    out: list[object] = []
    for r in rows:
        out += [r.request_id, "p" if r.status == PENDING else "f", r.cost_micros]
        out.append(math.floor(r.created_at))
    return out


@dataclass(slots=True)
class _Window:
    key_id: str
    gen: str
    since: float | None  # None after the first round: only `older` is read
    older: tuple[str, ...]  # the request ids read whatever their time
    due: float  # trio time of the next round
    ends: float  # trio time from which the window closes whatever is left
    added: int = 0  # micros charged by its rounds so far (negative: given back)


@dataclass(slots=True)
class ReconcileStats:
    """Counters for metrics and tests."""

    rounds: int = 0
    closed: int = 0
    added_micros: int = 0  # net micros charged (negative: credit given back)
    retries: int = 0  # rounds put off: the ledger or Redis did not answer


class Reconciler:
    """The reconcile windows this instance opened, and the task that closes them."""

    def __init__(
        self,
        send: Send,
        reader: RowReader | None,
        *,
        delay_s: float = DELAY_S,
        every_s: float = EVERY_S,
        window_s: float = WINDOW_S,
    ) -> None:
        """`reader` None: no ledger to reconcile with (the seeds open no window)."""
        self._send = send
        self._reader = reader
        self.delay_s = delay_s
        self.every_s = every_s
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}
        self._wake = trio.Event()
        self.stats = ReconcileStats()

    @property
    def enabled(self) -> bool:
        return self._reader is not None

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    def opened(self, key_id: str, gen: str, window: SeedWindow) -> None:
        """A seed of ours made a fresh budget with `window`: reconcile it from `delay_s`."""
        if self._reader is None:
            return
        now = trio.current_time()
        self._windows[key_id] = _Window(
            key_id, gen, window.since, window.older, now + self.delay_s, now + self.window_s
        )
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background task: run each window's rounds when due, until cancelled. A round
        that fails in a way not foreseen is logged and tried again: this task must not
        end (it shares the backend's task group)."""
        task_status.started()
        while True:
            due = min((w.due for w in self._windows.values()), default=math.inf)
            with trio.move_on_at(due):
                await self._wake.wait()
            self._wake = trio.Event()
            for w in [w for w in self._windows.values() if w.due <= trio.current_time()]:
                try:
                    closed = await self.round(w)
                except Exception:
                    log.exception("reconcile of key %s failed; trying again", w.key_id)
                    closed = trio.current_time() >= w.ends
                if closed:
                    self._done(w)
                else:
                    w.due = trio.current_time() + self.every_s

    async def reconcile_now(self) -> int:
        """Run every open window's round now (tests); how many stay open."""
        for w in list(self._windows.values()):
            if await self.round(w):
                self._done(w)
        return len(self._windows)

    def _done(self, w: _Window) -> None:
        """Forget `w` (unless a newer seed of the same key replaced it meanwhile)."""
        if self._windows.get(w.key_id) is w:
            del self._windows[w.key_id]

    async def round(self, w: _Window) -> bool:
        """One round for `w`; True once the window is closed (or no longer ours).

        The first reads every row created since the seed's `since` and the older
        pending ones it counted; once those are reconciled only the requests left
        unresolved can still change, so later rounds read just those, by id."""
        assert self._reader is not None
        self.stats.rounds += 1
        now = time.time()
        last = trio.current_time() >= w.ends
        try:
            rows = await self._reader(w.key_id, w.since, w.older, now)
            unresolved: list[str] = []
            for i in range(0, len(rows), _CHUNK):
                args = [w.gen, math.floor(now * 1000), "r", *row_args(rows[i : i + _CHUNK])]
                reply = await self._send(w.key_id, args, now)
                if int(reply[0]) != 0:
                    return True  # Redis lost the window (or re-seeded): nothing to do
                self.stats.added_micros += int(reply[1])
                w.added += int(reply[1])
                unresolved += [str(r.decode() if isinstance(r, bytes) else r) for r in reply[2:]]
            done = last or not unresolved
            tail = ["x"] if done else ["k", *unresolved]
            if int((await self._send(w.key_id, [w.gen, 0, *tail], now))[0]) != 0:
                return True
        except (StoreError, Unreachable) as e:
            self.stats.retries += 1
            log.info("reconcile of key %s put off: %s", w.key_id, e)
            return last
        if done:
            self.stats.closed += 1
            log.info(
                "budget of key %s reconciled with the ledger: %+d micros charged%s",
                w.key_id,
                w.added,
                f", {len(unresolved)} requests left unreconciled" if unresolved else "",
            )
            return True
        w.since, w.older = None, tuple(unresolved)
        return False
