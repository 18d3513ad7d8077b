"""Log lines that clients can cause, throttled: a client must not be able to fill the log.

A request the server refuses (malformed, too slow, over a cap) is the client's doing,
not ours: it is worth a line at INFO so an operator can see it happen, never an ERROR
or a traceback, and at most one line per kind of event every `every_s` seconds, with
the number of those left out since.
"""

from __future__ import annotations

import logging
import time

__all__ = ["Throttled"]


class Throttled:
    """At most one log line per kind every `every_s` seconds."""

    __slots__ = ("_every_s", "_last", "_left_out", "_log")

    def __init__(self, log: logging.Logger, every_s: float = 10.0) -> None:
        self._log = log
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        """Log `message % args` unless a line of this `kind` went out within every_s."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._every_s:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += f" (and {left_out} more like it since the last such line)"
        self._log.log(level, message, *args)
