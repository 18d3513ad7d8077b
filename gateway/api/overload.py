"""Admission control for one worker: shed new requests at once when it is overloaded.

Past capacity, queueing makes every request slow together; refusing the excess quickly
keeps the admitted ones fast (docs/reliability.md R7). Like Envoy's overload manager,
signals with a threshold each decide, per worker process:
- requests in flight, against a fixed cap (`[server] max_in_flight`; unset: none) and an
  adaptive one (`[server] max_loop_busy_percent`; 0: off). An instrument on trio's run
  loop times how long the loop sleeps waiting for I/O; every probe interval the share
  of wall time it did not sleep (its busy share) steers the adaptive cap as TCP's
  congestion window is steered: above the threshold, the cap drops to a fraction of
  the requests in flight; below it, while the cap is what refuses requests, it grows
  with the headroom left. The cap so finds the concurrency one worker carries without
  queueing, whatever a request costs: a handful of short JSON answers, thousands of
  streams that mostly wait on their upstream. A fixed cap cannot be right for both,
  and a saturated worker's excess waits in the kernel's socket buffers, out of sight
  of a count; the busy share sees it;
- the event loop's lag (`[server] max_loop_lag_ms`; 0: off): the probe sleeps
  PROBE_INTERVAL_S and measures how late it wakes; past the threshold every new
  request is shed (a request holding the loop, or a host starving the process).

A shed request gets 503 `overloaded` with Retry-After before anything else is done for
it (its body is not even read), so shedding costs a small fraction of serving; requests
already admitted go on. Which paths are never shed (health and readiness checks) is the
caller's choice.
"""

from __future__ import annotations

import time

import trio

from gateway.errors import GatewayUnavailable

__all__ = ["PROBE_INTERVAL_S", "Admission", "LoopBusy"]

PROBE_INTERVAL_S = 0.05
NO_CAP = 1 << 62
MIN_LIMIT = 2.0  # the adaptive cap never goes below this many requests in flight
DECREASE = 0.8  # busy past the threshold: the cap becomes this share of what is in flight
INCREASE = 0.5  # binding, with headroom h (0..1): the cap grows by this share times h, + 1
SMOOTHING = 0.5  # weight of the newest busy share in the smoothed one


class LoopBusy(trio.abc.Instrument):
    """Measures the share of wall time trio's run loop spends running tasks rather than
    sleeping in its I/O wait; two clock reads per loop iteration."""

    __slots__ = ("_idle", "_since", "_waiting")

    def __init__(self) -> None:
        self._since = self._waiting = time.perf_counter()
        self._idle = 0.0

    def before_io_wait(self, timeout: float) -> None:
        self._waiting = time.perf_counter()

    def after_io_wait(self, timeout: float) -> None:
        self._idle += time.perf_counter() - self._waiting

    def sample(self) -> float:
        """The busy share since the last sample (called from a task, so never while
        the loop waits), and start the next."""
        now = time.perf_counter()
        elapsed, idle = now - self._since, self._idle
        self._since, self._idle = now, 0.0
        if elapsed <= 0:
            return 0.0
        return min(1.0, max(0.0, 1.0 - idle / elapsed))


class Admission:
    """Counts this worker's requests in flight and decides whether a new one may start."""

    __slots__ = (
        "_binding",
        "busy",
        "cap",
        "in_flight",
        "lag_s",
        "lagging",
        "limit",
        "max_busy",
        "max_in_flight",
        "max_lag_s",
        "refusal",
        "shed",
    )

    def __init__(
        self, max_in_flight: int | None, max_loop_lag_ms: float, max_loop_busy_percent: float = 0
    ) -> None:
        self.max_in_flight = max_in_flight if max_in_flight is not None else NO_CAP
        self.max_lag_s = max_loop_lag_ms / 1000 if max_loop_lag_ms > 0 else None
        self.max_busy = max_loop_busy_percent / 100 if max_loop_busy_percent > 0 else None
        self.in_flight = 0
        self.lag_s = 0.0  # the last probe's measure
        self.lagging = False
        self.busy = 0.0  # the loop's busy share over the last probe interval (smoothed)
        self.limit = float(NO_CAP)  # the adaptive cap on requests in flight
        self.cap = self.max_in_flight  # the cap in force: the lower of the two
        self._binding = False  # a request was refused at the cap since the last probe
        self.shed = 0  # requests refused so far
        self.refusal = GatewayUnavailable(
            "The gateway is overloaded; retry shortly.", code="overloaded"
        )

    def admit(self) -> bool:
        """True (and counted in flight) if a new request may start now; `done()` after it."""
        if self.lagging or self.in_flight >= self.cap:
            self._binding = True
            self.shed += 1
            return False
        self.in_flight += 1
        return True

    def done(self) -> None:
        self.in_flight -= 1

    def steer(self, busy: float) -> None:
        """One probe's busy share in: the adaptive cap moves (additive increase,
        multiplicative decrease, as TCP finds a link's capacity) toward the number of
        requests in flight that keeps the loop at the threshold."""
        self.busy = busy = SMOOTHING * busy + (1 - SMOOTHING) * self.busy
        if self.max_busy is None:
            return
        limit = self.limit
        if busy > self.max_busy:
            limit = max(MIN_LIMIT, min(limit, self.in_flight) * DECREASE)
        elif limit < NO_CAP and (self._binding or self.in_flight >= limit * 0.9):
            # Growing only while it binds: an unused cap says nothing about capacity.
            headroom = 1.0 - busy / self.max_busy
            limit = limit * (1.0 + INCREASE * headroom) + 1.0
        self._binding = False
        self.limit = limit
        self.cap = min(self.max_in_flight, int(limit))

    async def probe(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure the loop's lag and busy share for ever (run in the lifespan's
        nursery); without a threshold, there is nothing to measure for."""
        task_status.started()
        if self.max_lag_s is None and self.max_busy is None:
            return
        meter = LoopBusy() if self.max_busy is not None else None  # no cost unless asked
        if meter is not None:
            trio.lowlevel.add_instrument(meter)
        try:
            while True:
                due = trio.current_time() + PROBE_INTERVAL_S
                await trio.sleep_until(due)
                self.lag_s = trio.current_time() - due
                self.lagging = self.max_lag_s is not None and self.lag_s > self.max_lag_s
                if meter is not None:
                    self.steer(meter.sample())
        finally:
            if meter is not None:
                trio.lowlevel.remove_instrument(meter)
