"""The retry budget: retries may add at most a share of recent requests (docs/reliability.md R2).

Over a sliding window of `WINDOW_S` seconds, in one-second buckets, the retries started
may not exceed `ratio` times the requests started plus a floor of `min_per_s` retries a
second (`min_per_s * WINDOW_S` in the window), so that a quiet model can still retry
and a failing one cannot multiply its traffic: with every upstream failing, upstream
attempts stay under (1 + ratio) times the client's requests plus the floor. This is
the shape of Finagle's `RetryBudget` and Linkerd's retry budget (a 10 s window, a
ratio of 0.2 and a per-second minimum). Any attempt after a request's first counts as
a retry, whether it goes to the same deployment or to another.

One budget per configured model, per worker process. Pure module: the caller passes
`now` (seconds on any monotonic clock).
"""

from __future__ import annotations

import math

WINDOW_S = 10


class RetryBudget:
    """Counts requests and retries over the last `WINDOW_S` seconds."""

    __slots__ = ("_requests", "_retries", "_second", "min_per_s", "ratio", "requests", "retries")

    def __init__(self, ratio: float, min_per_s: float) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self._requests = [0] * WINDOW_S
        self._retries = [0] * WINDOW_S
        self._second = -math.inf  # the second of the newest bucket
        self.requests = 0  # in the window
        self.retries = 0  # in the window

    def _advance(self, now: float) -> int:
        """Move the window to `now`, dropping the buckets that fell out of it."""
        second = math.floor(now)
        if second == self._second:
            return second % WINDOW_S
        if second - self._second >= WINDOW_S:
            self._requests = [0] * WINDOW_S
            self._retries = [0] * WINDOW_S
            self.requests = self.retries = 0
        elif second > self._second:
            for s in range(int(self._second) + 1, second + 1):
                i = s % WINDOW_S
                self.requests -= self._requests[i]
                self.retries -= self._retries[i]
                self._requests[i] = self._retries[i] = 0
        else:  # a clock that went back: count in the newest bucket
            return int(self._second) % WINDOW_S
        self._second = second
        return second % WINDOW_S

    def allowance(self, now: float) -> float:
        """How many retries the window allows in all (started ones included)."""
        self._advance(now)
        return self.ratio * self.requests + self.min_per_s * WINDOW_S

    def request(self, now: float) -> None:
        """A client request started (its first attempt)."""
        i = self._advance(now)  # first: it may replace the lists
        self._requests[i] += 1
        self.requests += 1

    def try_retry(self, now: float) -> bool:
        """Spend one retry if the budget allows it; False (nothing spent) if not."""
        i = self._advance(now)
        if self.retries + 1 > self.ratio * self.requests + self.min_per_s * WINDOW_S:
            return False
        self._retries[i] += 1
        self.retries += 1
        return True
