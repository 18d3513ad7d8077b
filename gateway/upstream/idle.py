"""A streamed call's idle deadline, moved as its chunks arrive.

The relay bounds a call with one cancel scope (upstream/relay.py). Once the response
is open, its deadline is the sooner of the call's total deadline and `idle_s` after
the latest chunk. Setting a trio deadline costs more than translating a chunk, so it
is moved at most every `step` seconds (a gap may run over by that much). The relay's
own loop and the worker's pump (upstream/pump.py) move the same one.
"""

from __future__ import annotations

import math

import trio

__all__ = ["IdleDeadline"]


class IdleDeadline:
    """`scope`'s deadline, at most `total`, kept `idle_s` ahead of the latest chunk."""

    __slots__ = ("_idle_s", "_moved", "_scope", "_step", "_total")

    def __init__(self, scope: trio.CancelScope, total: float, idle_s: float) -> None:
        self._scope = scope
        self._total = total
        self._idle_s = idle_s
        self._step = min(1.0, idle_s / 10)
        self._moved = -math.inf

    def touch(self, now: float) -> None:
        """Something arrived at `now` (trio clock)."""
        if now - self._moved >= self._step:
            self._scope.deadline = min(self._total, now + self._idle_s)
            self._moved = now
