"""Requests refused before admission (401, 402, 403, 429), counted for usage reports.

An admitted request has a ledger row (gateway/billing/ledger.py); a refused one would
cost a row too, and a client hammering the gateway with a bad key or past its rate
limit would then turn every cheap refusal into a disk write. So refusals are counted
in memory per minute and (key, model, status) and added to the store's `refusals`
table about once a second, one transaction for all of them: bounded rows however
many requests are refused. `count` is a dict update; nothing on the request waits.

What is known of a refused request depends on where it was refused: a 401 has no key
and its body (its model) was never read, a 403 knows the key and the model but not
the deployment, a 402 or 429 knows all three. Counts not yet written when the process
dies are lost (they are statistics, not money: the ledger holds every admitted
request); a failed write keeps them for the next one.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from gateway.store.base import AsyncStore
from gateway.store.records import RefusalCount, StoreError

__all__ = ["MAX_GROUPS", "Refusals"]

log = logging.getLogger("gateway.billing.refusals")

MAX_GROUPS: Final = 10_000  # distinct (minute, key, model, status) held between writes
MAX_TEXT: Final = 200  # longer model ids (client-chosen) are cut
OTHER: Final = "(other)"  # the model of counts past MAX_GROUPS
DRAIN_TIMEOUT_S: Final = 5.0

_Group = tuple[int, str, str, str, str, int, str]


class Refusals:
    """Counts of refused requests, written to the store by `run_writer`."""

    def __init__(self, db: AsyncStore, *, flush_interval_s: float = 1.0) -> None:
        self._db = db
        self.flush_interval_s = flush_interval_s
        self._counts: dict[_Group, int] = {}
        self._lock = trio.Lock()
        self.flush_failures = 0

    def count(
        self,
        *,
        status: int,
        code: str,
        now: float,
        key_id: str | None = None,
        key_name: str | None = None,
        model: str | None = None,
        provider: str | None = None,
    ) -> None:
        """One refused request (None: not known)."""
        model = (model or "")[:MAX_TEXT]
        group = (
            int(now) // 60 * 60,
            key_id or "",
            key_name or "",
            model,
            provider or "",
            status,
            code,
        )
        if group not in self._counts and len(self._counts) >= MAX_GROUPS:
            group = (*group[:3], OTHER, *group[4:])
        self._counts[group] = self._counts.get(group, 0) + 1

    def pending(self) -> int:
        """Refused requests counted but not yet written."""
        return sum(self._counts.values())

    async def flush(self) -> int:
        """Add what was counted to the store; on failure it is kept for the next try.
        Returns how many refused requests were written."""
        async with self._lock:
            counts, self._counts = self._counts, {}
            if not counts:
                return 0
            try:
                await self._db.add_refusals([RefusalCount(*g, n) for g, n in counts.items()])
            except BaseException:
                for group, n in counts.items():  # back, merged with what came meanwhile
                    self._counts[group] = self._counts.get(group, 0) + n
                raise
            return sum(counts.values())

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write every `flush_interval_s` until cancelled, then once more (shielded,
        bounded). A failed write is logged and retried."""
        task_status.started()
        try:
            while True:
                await trio.sleep(self.flush_interval_s)
                await self._flush_logged()
        finally:
            with trio.move_on_after(DRAIN_TIMEOUT_S, shield=True):
                await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except StoreError as e:
            self.flush_failures += 1
            log.error("could not write the counts of refused requests, kept for later: %s", e)
