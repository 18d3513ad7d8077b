"""`/healthz` and `/readyz`: is the process alive, and should it get traffic now.

`/healthz` answers 200 with the version as long as the process serves HTTP at all.
`/readyz` answers 200 only when the worker has started and is not draining, its
SQLite store answers a trivial query, and Redis (when `[state] redis_url` is set)
answers a PING; otherwise 503 with the reason. PostgreSQL (`[state] postgres_url`) is
checked and shown but never makes a worker unready: every instance shares it, and
each keeps serving from its key cache and journal while it is away. The store and
Redis checks are cached for CACHE_S, and probes that arrive while one runs wait for
its answer, so a storm of probes costs one check a second; draining is seen at once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Final

import trio

from gateway import __version__
from gateway.state import Gateway
from gateway.store.records import StoreError

__all__ = ["CACHE_S", "Readiness", "health"]

CACHE_S: Final = 1.0  # how long a store and Redis check answers for
TIMEOUT_S: Final = 1.0  # longest a check waits for the store or Redis


def health() -> dict[str, Any]:
    """`/healthz`'s body."""
    return {"status": "ok", "version": __version__}


@dataclass(frozen=True, slots=True)
class _Checked:
    at: float  # trio clock
    checks: dict[str, str]  # name -> "ok" or why not
    reason: str | None  # the first failure, None when all passed


class Readiness:
    """`/readyz` for one worker: (status, body)."""

    def __init__(self, gw: Gateway, *, cache_s: float = CACHE_S) -> None:
        self._gw = gw
        self._cache_s = cache_s
        self._last: _Checked | None = None
        self._lock = trio.Lock()

    async def answer(self) -> tuple[int, dict[str, Any]]:
        gw = self._gw
        if gw.shutdown.draining:  # a load balancer stops sending before the port closes
            return 503, {"status": "draining", "reason": "the gateway is shutting down"}
        if not gw.ready:
            return 503, {"status": "starting", "reason": "the gateway is starting"}
        checked = await self._checked()
        if checked.reason is not None:
            return 503, {
                "status": "unavailable",
                "reason": checked.reason,
                "checks": checked.checks,
            }
        return 200, {"status": "ready", "checks": checked.checks}

    async def _checked(self) -> _Checked:
        async with self._lock:  # one check at a time; those waiting take its answer
            last = self._last
            if last is not None and trio.current_time() - last.at < self._cache_s:
                return last
            self._last = last = await self._check()
            return last

    async def _check(self) -> _Checked:
        gw = self._gw
        checks = {"store": await self._store()}
        if gw.config.state.redis_url:
            timeout_s = min(TIMEOUT_S, gw.config.state.redis_timeout_s)
            checks["redis"] = await gw.limiter.check(timeout_s) or "ok"
        shared = {"store"} if gw.db.shared else set()  # reported, never a reason
        reason = next(
            (f"{k}: {v}" for k, v in checks.items() if v != "ok" and k not in shared), None
        )
        return _Checked(trio.current_time(), checks, reason)

    async def _store(self) -> str:
        db = self._gw.db
        try:
            with trio.fail_after(TIMEOUT_S):
                await db.ping()
        except trio.TooSlowError:
            return f"{db.kind} did not answer within {TIMEOUT_S:g} s"
        except (StoreError, sqlite3.Error) as e:
            return f"{db.kind}: {e}"
        return "ok"
