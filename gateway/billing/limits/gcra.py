"""Exact integer GCRA: the arithmetic of the per-key RPM and TPM limits.

Rate limits (RPM, TPM; docs/reliability.md R14). Each key has, per dimension, a
theoretical arrival time (TAT) as in the Generic Cell Rate Algorithm: a request of
`n` units (1 for RPM, the estimated tokens for TPM) pushes the TAT `n * 60 s / limit`
into the future and is admitted if the TAT stays within 60 s of now. This is a token
bucket of capacity `limit` that refills continuously at `limit` per minute: a burst
of exactly `limit` is admitted at once, then `limit / 60` per second. In any span of
`t` seconds at most `limit + t * limit / 60` units pass, so there is no 2x burst at
a fixed window's edge, and the long-run rate is at most `limit` per minute. It is
the behaviour OpenAI documents ("limits replenish continuously"), not a sliding
log: a client that bursts `limit` at second 0 may send one more every `60 / limit`
seconds after that.

Exact integer arithmetic, so that the Redis Lua script (whose numbers are doubles)
and this module agree to the unit: time is whole milliseconds, and a dimension's
state is its TAT in ms plus a remainder `carry` in [0, limit), so that the exact TAT
is `tat_ms + carry / limit`. The working quantity is the *backlog*,
`(TAT - now) * limit` in ms*units: a request fits iff `backlog + n * 60000 <=
60000 * limit`. With `limit <= MAX_LIMIT` and the backlog capped at
`MAX_DEBT_WINDOWS` windows every value stays below 2**53. The Lua side reads
`WINDOW_MS` and `MAX_DEBT_WINDOWS` from here (`scripts.py`).

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "MAX_DEBT_WINDOWS",
    "WINDOW_MS",
    "RateState",
    "RateWindow",
    "backlog",
    "fits",
    "rate_window",
    "store_backlog",
    "to_ms",
    "wait_ms",
]

WINDOW_MS = 60_000  # RPM and TPM are per minute
MAX_DEBT_WINDOWS = 100  # settlement may push a backlog this many windows ahead, no more


def to_ms(now: float) -> int:
    """Whole milliseconds of a unix time (floor), the limiter's clock unit."""
    return math.floor(now * 1000)


@dataclass(slots=True)
class RateState:
    """One dimension's GCRA state: exact TAT = tat_ms + carry / limit."""

    tat_ms: int = 0
    carry: int = 0


def backlog(state: RateState, now_ms: int, limit: int) -> int:
    """(TAT - now) * limit in ms*units, never below 0 (an idle bucket is empty)."""
    return max(0, (state.tat_ms - now_ms) * limit + state.carry)


def store_backlog(state: RateState, value: int, now_ms: int, limit: int) -> None:
    """Write a backlog back as (tat_ms, carry), clamped to [0, MAX_DEBT_WINDOWS windows]."""
    value = min(max(value, 0), MAX_DEBT_WINDOWS * WINDOW_MS * limit)
    q, r = divmod(value, limit)
    state.tat_ms = now_ms + q
    state.carry = r


def fits(level: int, units: int, limit: int) -> bool:
    """Whether `units` more fit into a bucket at `level` (ms*units) right now."""
    return level + units * WINDOW_MS <= WINDOW_MS * limit


def wait_ms(level: int, units: int, limit: int) -> int:
    """Milliseconds until `units` fit into a bucket at `level` (0 if they fit now)."""
    excess = level + units * WINDOW_MS - WINDOW_MS * limit
    return max(0, -(-excess // limit))


@dataclass(frozen=True, slots=True)
class RateWindow:
    """What the x-ratelimit-* headers say for one dimension."""

    limit: int
    remaining: int  # units that would be admitted right now
    reset_ms: int  # until the bucket is back to full capacity


def rate_window(limit: int, level: int) -> RateWindow:
    """Header values for a bucket at `level` (ms*units)."""
    remaining = max(0, (WINDOW_MS * limit - level) // WINDOW_MS)
    return RateWindow(limit=limit, remaining=remaining, reset_ms=-(-level // limit))
