"""Passive health of deployments: outlier ejection, per worker process (docs/reliability.md R2).

Nothing is probed in the background: the outcomes of real requests decide, as in
Envoy's outlier detection. A deployment is ejected (left out of the plans) for its
cooldown when

- `eject_consecutive_failures` attempts in a row failed (5 by default), or
- at least `eject_min_requests` attempts of the last `WINDOW_S` seconds were seen
  and `eject_failure_rate` of them failed, or
- it answered 429 with a Retry-After: ejected for that long (at most `cooldown_max_s`).

The cooldown is `cooldown_s`, doubling with each ejection up to `cooldown_max_s`; the
doubling starts over once a deployment stayed in for `cooldown_max_s`. When the
cooldown ends the deployment is half-open: one request is let through as a probe
(`start` claims it); its success puts the deployment back, its failure ejects it again
for twice as long. A probe that ends with no verdict (the client left) frees the slot.

What counts as a failure is the caller's to say (gateway/upstream/retry.py: refused
and broken connections, timeouts, 429 and 5xx). Entries exist only for deployments
that failed lately, so a healthy worker keeps none and asks nothing of a dict but a
miss. The state is per worker process: each worker learns on its own.

Pure module: every method takes `now` (seconds, monotonic) from the caller.
"""

from __future__ import annotations

import math

from gateway.config import RoutingConfig

WINDOW_S = 10
MAX_ENTRIES = 4096  # deployments tracked at once (PROVIDER/MODEL ids are open-ended)
HEALTHY = -math.inf


class _Entry:
    """What one deployment's recent outcomes say about it."""

    __slots__ = (
        "consecutive",
        "ejected_at",
        "ejections",
        "fails",
        "fails_total",
        "last_until",
        "oks",
        "oks_total",
        "probing",
        "second",
        "until",
    )

    def __init__(self) -> None:
        self.consecutive = 0  # failures in a row
        self.oks = [0] * WINDOW_S  # outcomes per second of the window
        self.fails = [0] * WINDOW_S
        self.oks_total = 0
        self.fails_total = 0
        self.second = -math.inf  # the newest bucket's second
        self.until = HEALTHY  # ejected until then; HEALTHY: in rotation
        self.ejected_at = HEALTHY  # when it was last ejected
        self.last_until = HEALTHY  # when its last cooldown ended (or ends)
        self.ejections = 0  # in a row, for the doubling
        self.probing = False  # the half-open probe is out

    def advance(self, now: float) -> int:
        second = math.floor(now)
        if second <= self.second:
            return int(self.second) % WINDOW_S
        if second - self.second >= WINDOW_S:
            self.clear_window()
        else:
            for s in range(int(self.second) + 1, second + 1):
                i = s % WINDOW_S
                self.oks_total -= self.oks[i]
                self.fails_total -= self.fails[i]
                self.oks[i] = self.fails[i] = 0
        self.second = second
        return second % WINDOW_S

    def clear_window(self) -> None:
        self.oks = [0] * WINDOW_S
        self.fails = [0] * WINDOW_S
        self.oks_total = self.fails_total = 0


class Health:
    """Ejection state of every deployment one worker has seen fail lately."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def available(self, key: str, now: float) -> bool:
        """Whether a plan may include `key` now: in rotation, or half-open with its
        probe slot free."""
        entry = self._entries.get(key)
        return entry is None or (entry.until <= now and not entry.probing)

    def ejected(self, key: str, now: float) -> bool:
        """Whether `key` is out of rotation now (cooling down)."""
        entry = self._entries.get(key)
        return entry is not None and entry.until > now

    def ejected_at(self, key: str) -> float:
        """When `key` was last ejected (-inf if never): the least recently ejected
        deployment is the one tried when a whole plan is out."""
        entry = self._entries.get(key)
        return HEALTHY if entry is None else entry.ejected_at

    def start(self, key: str, now: float) -> bool:
        """An attempt is about to go to `key`; False if it may not now. After a
        cooldown this claims the one probe of the half-open state."""
        entry = self._entries.get(key)
        if entry is None or entry.until == HEALTHY:
            return True
        if entry.until > now or entry.probing:
            return False
        entry.probing = True
        return True

    def success(self, key: str, now: float) -> None:
        """`key` answered: an ejected or half-open deployment is back in rotation, and
        one with nothing against it (no failure in the window, never ejected) is
        forgotten."""
        entry = self._entries.get(key)
        if entry is None:
            return
        i = entry.advance(now)  # first: it may replace the lists
        entry.oks[i] += 1
        entry.oks_total += 1
        entry.consecutive = 0
        entry.until = HEALTHY
        entry.probing = False
        if entry.fails_total == 0 and entry.ejections == 0:
            del self._entries[key]

    def release(self, key: str) -> None:
        """An attempt to `key` ended with no verdict (cancelled): free its probe slot."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.probing = False

    def failure(
        self, key: str, now: float, policy: RoutingConfig, retry_after_s: float | None = None
    ) -> bool:
        """`key` failed; True if that ejected it. `retry_after_s`: a 429's Retry-After,
        which ejects it for that long."""
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= MAX_ENTRIES:
                self._forget_one(now)
            entry = self._entries[key] = _Entry()
        i = entry.advance(now)
        entry.fails[i] += 1
        entry.fails_total += 1
        entry.consecutive += 1
        if entry.until > now:
            return False  # already out (a request that started before the ejection)
        if retry_after_s is not None and retry_after_s > 0:
            self._eject(entry, now, policy, min(retry_after_s, policy.cooldown_max_s))
            return True
        seen = entry.oks_total + entry.fails_total
        if (
            entry.probing
            or entry.consecutive >= policy.eject_consecutive_failures
            or (
                seen >= policy.eject_min_requests
                and entry.fails_total >= policy.eject_failure_rate * seen
            )
        ):
            self._eject(entry, now, policy, None)
            return True
        return False

    @staticmethod
    def _eject(entry: _Entry, now: float, policy: RoutingConfig, for_s: float | None) -> None:
        if now - entry.last_until > policy.cooldown_max_s:
            entry.ejections = 0  # it stayed in long enough: the doubling starts over
        if for_s is None:
            for_s = min(policy.cooldown_s * 2.0 ** min(entry.ejections, 62), policy.cooldown_max_s)
        entry.ejections += 1
        entry.until = entry.last_until = now + for_s
        entry.ejected_at = now
        entry.probing = False
        entry.consecutive = 0
        entry.clear_window()

    def _forget_one(self, now: float) -> None:
        """Make room: drop an entry that is in rotation (the oldest such), else any."""
        for key, entry in self._entries.items():
            if entry.until <= now and not entry.probing:
                del self._entries[key]
                return
        del self._entries[next(iter(self._entries))]
