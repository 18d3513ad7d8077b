"""Admission control for one worker: shed new requests at once when it is overloaded.

Past capacity, queueing makes every request slow together; refusing the excess quickly
keeps the admitted ones fast (docs/reliability.md R7). Like Envoy's overload manager, two
signals with a threshold each decide, per worker process:
- requests in flight (`[server] max_in_flight`; unset: no cap), and
- the event loop's lag (`[server] max_loop_lag_ms`; 0: off): a probe in the lifespan's
  nursery sleeps PROBE_INTERVAL_S and measures how late it wakes; that is how long
  every runnable task waits for the loop, the latency overload adds to each request.

Past either, a new request gets 503 `overloaded` with Retry-After before anything
else is done for it (its body is not even read), so shedding costs a small fraction
of serving; requests already admitted go on. Which paths are never shed (health and
readiness checks) is the caller's choice.
"""

from __future__ import annotations

import trio

from gateway.errors import GatewayUnavailable

__all__ = ["PROBE_INTERVAL_S", "Admission"]

PROBE_INTERVAL_S = 0.05


class Admission:
    """Counts this worker's requests in flight and decides whether a new one may start."""

    __slots__ = ("in_flight", "lag_s", "lagging", "max_in_flight", "max_lag_s", "refusal", "shed")

    def __init__(self, max_in_flight: int | None, max_loop_lag_ms: float) -> None:
        self.max_in_flight = max_in_flight if max_in_flight is not None else 1 << 62
        self.max_lag_s = max_loop_lag_ms / 1000 if max_loop_lag_ms > 0 else None
        self.in_flight = 0
        self.lag_s = 0.0  # the last probe's measure
        self.lagging = False
        self.shed = 0  # requests refused so far
        self.refusal = GatewayUnavailable(
            "The gateway is overloaded; retry shortly.", code="overloaded"
        )

    def admit(self) -> bool:
        """True (and counted in flight) if a new request may start now; `done()` after it."""
        if self.lagging or self.in_flight >= self.max_in_flight:
            self.shed += 1
            return False
        self.in_flight += 1
        return True

    def done(self) -> None:
        self.in_flight -= 1

    async def probe(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure the loop's lag for ever (run in the lifespan's nursery); without a
        threshold, there is nothing to measure for."""
        task_status.started()
        if self.max_lag_s is None:
            return
        while True:
            due = trio.current_time() + PROBE_INTERVAL_S
            await trio.sleep_until(due)
            self.lag_s = trio.current_time() - due
            self.lagging = self.lag_s > self.max_lag_s
