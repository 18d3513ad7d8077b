"""The managed keys, cached in memory, so that a key look-up never waits on a database.

A key look-up must cost microseconds, not a database round trip: the cache answers
every look-up from a dict, and a refresher running in the app's lifespan nursery
reloads only the rows that changed (by a commit-ordered version number), every second
(one indexed query), and at once when woken (`wake`: PostgreSQL's notification of a
change on another machine). A key created, changed or revoked from the CLI in another
process, or from the admin API of another worker or machine, therefore takes effect
within about a second everywhere (within milliseconds when notified), within 2 s at
worst.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from gateway.auth.keys import hash_secret, parse_key, redacted
from gateway.auth.principal import Principal, principal_for
from gateway.errors import AuthenticationFailed
from gateway.store.records import KeyRecord, StoreError, Topup

log = logging.getLogger("gateway.auth.cache")


def principal_of(record: KeyRecord) -> Principal:
    """Who a managed key's holder is: its name, model scope and limits."""
    base = principal_for(record.name, record.models)
    return dataclasses.replace(base, key_id=record.key_id, limits=record.limits)


class KeySource(Protocol):
    """Where `ManagedKeyStore` reads keys and top-ups from (`gateway.store.base.AsyncStore`)."""

    async def keys_changed_since(self, version: int) -> list[KeyRecord]: ...

    async def topups_since(self, topup_id: int) -> list[Topup]: ...

    async def last_topup_id(self) -> int: ...


OnTopup = Callable[[Topup], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Entry:
    secret_hash: bytes = field(repr=False)
    record: KeyRecord
    principal: Principal


class ManagedKeyStore:
    """The managed keys, cached in memory: `lookup` is a dict hit, a SHA-256 and a
    constant-time compare. Implements `gateway.auth.principal.KeyStore`.

    `refresh()` applies the rows changed since the last one; `run_refresher()` calls
    it every `refresh_interval_s` from the app's lifespan nursery. New top-ups are
    handed to `on_topup` in id order, at least once each (the watermark moves past
    one only after the callback returned), so the limiter's credit can follow a
    top-up made from the CLI in another process. A key's initial credit is a top-up
    too. The callback must skip top-ups its limiter state already holds: those of a key
    it has not seeded yet, and those up to the id returned by the `credit_snapshot`
    it was seeded from (with a shared Redis state, the id lives beside the balance).
    """

    def __init__(
        self,
        source: KeySource,
        *,
        on_topup: OnTopup | None = None,
        refresh_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._on_topup = on_topup
        self.refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._version = 0
        self._topup_id: int | None = None  # None until the first refresh
        self._lock = trio.Lock()
        self._woken = trio.Event()
        self.loaded = False
        self.refresh_failures = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, secret: str) -> Principal | None:
        """The principal for a managed key, None for any other text (so the config
        file's keys are tried next); 401 with a clear message for a genuine key that
        is revoked or expired (only its holder can see that message)."""
        parsed = parse_key(secret)
        if parsed is None:
            return None
        entry = self._entries.get(parsed[0])
        if entry is None or not hmac.compare_digest(entry.secret_hash, hash_secret(parsed[1])):
            return None
        state = entry.record.state(self._clock())
        if state != "active":
            raise AuthenticationFailed(
                f"The API key {redacted(entry.record.key_id)} has been {state}.",
                code=f"key_{state}",
            )
        return entry.principal

    def wake(self) -> None:
        """Refresh now, not at the next interval (a change was announced)."""
        self._woken.set()

    def get(self, key_id: str) -> KeyRecord | None:
        """The cached record of a key (as of the last refresh)."""
        entry = self._entries.get(key_id)
        return None if entry is None else entry.record

    async def refresh(self) -> int:
        """Apply keys and top-ups changed since the last refresh; returns how many keys
        changed. The first call loads everything, and takes the current top-up id as
        its starting point: the credit of existing top-ups is seeded from the ledger."""
        async with self._lock:
            if self._topup_id is None:
                self._topup_id = await self._source.last_topup_id()
            changed = await self._source.keys_changed_since(self._version)
            for record in changed:
                self._version = max(self._version, record.version)
                try:
                    principal = principal_of(record)
                except ValueError as e:  # a row edited by hand past the limiter's bounds
                    log.error("managed key %s is unusable: %s", record.key_id, e)
                    self._entries.pop(record.key_id, None)
                    continue
                self._entries[record.key_id] = _Entry(record.secret_hash, record, principal)
            self.loaded = True
            for topup in await self._source.topups_since(self._topup_id):
                if self._on_topup is not None:
                    await self._on_topup(topup)
                self._topup_id = topup.topup_id
            return len(changed)

    async def run_refresher(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Refresh forever (for the lifespan nursery); the first load must succeed. Later
        failures (the store, or the top-up callback) are logged, at most once a minute,
        and retried: the cache keeps serving what it has, the gateway keeps running."""
        await self.refresh()
        task_status.started()
        last_warning = -math.inf
        while True:
            with trio.move_on_after(self.refresh_interval_s):
                await self._woken.wait()
            self._woken = trio.Event()  # a change announced from here on wakes us again
            try:
                await self.refresh()
            except Exception as e:
                self.refresh_failures += 1
                if trio.current_time() - last_warning >= 60.0:
                    last_warning = trio.current_time()
                    bug = not isinstance(e, StoreError)
                    log.warning("key refresh failed, serving cached keys: %s", e, exc_info=bug)
