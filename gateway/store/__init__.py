"""Durable state: managed keys, credit top-ups and the usage ledger's records.

This package holds the records every backend shares (`KeyRecord`, `NewKey`,
`Topup`, `UsageRow`, `UsageSummary`), the calendar periods spend limits count in,
and `ManagedKeyStore`: the in-memory key cache that `gateway.auth.Authenticator`
asks on every request. The SQLite backend is in `gateway.store.sqlite`.

A key lookup must cost microseconds, not a database round trip (issue 4), so the
cache answers every lookup from a dict, and a refresher running in the app's
lifespan nursery reloads only the rows that changed (by a commit-ordered version
number), every couple of seconds. A key created, changed or revoked from the CLI in
another process therefore takes effect within one refresh interval.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args

import trio

from gateway.auth import Principal, principal_for
from gateway.errors import AuthenticationFailed
from gateway.keys import hash_secret, parse_key, redacted
from gateway.limits import MAX_LIMIT, MAX_MICROS, KeyLimits, SpendPeriod, period_end, period_start

log = logging.getLogger("gateway.store")

Period = SpendPeriod
PERIODS: tuple[Period, ...] = get_args(SpendPeriod)
PENDING = "pending"  # status of a row recorded at admission, replaced by the final row
MAX_NAME_LENGTH = 200


class StoreError(Exception):
    """The durable store failed (locked, full, corrupt): the message is for operators."""


def period_bounds(period: Period, now: float) -> tuple[float, float]:
    """[start, end) in unix seconds of the calendar UTC day or month containing `now`
    (the limiter's own definition, so ledger and limiter agree on every boundary)."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    return float(period_start(period, now)), float(period_end(period, now))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class NewKey:
    """What to create: `credit_micros` set (even to 0) makes the key prepaid."""

    name: str
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    spend_limit_micros: int | None = None
    spend_period: Period | None = None
    credit_micros: int | None = None
    expires_at: float | None = None

    def check(self) -> None:
        """Raise ValueError naming the first invalid field."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("name: must be a non-empty string")
        if len(self.name) > MAX_NAME_LENGTH or not self.name.isprintable():
            raise ValueError(f"name: at most {MAX_NAME_LENGTH} printable characters")
        if self.models is not None and not all(isinstance(m, str) and m for m in self.models):
            raise ValueError("models: must be a list of non-empty model ids")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_LIMIT):
                raise ValueError(f"{name}: must be an integer from 1 to {MAX_LIMIT}")
        for name in ("spend_limit_micros", "credit_micros"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 0 <= value <= MAX_MICROS):
                raise ValueError(f"{name}: must be an integer from 0 to {MAX_MICROS}")
        if (self.spend_limit_micros is None) != (self.spend_period is None):
            raise ValueError(
                "spend_period: set it (day or month) with a spend limit, and only then"
            )
        if self.spend_period is not None and self.spend_period not in PERIODS:
            raise ValueError("spend_period: must be day or month")
        if self.expires_at is not None and (
            isinstance(self.expires_at, bool)
            or not isinstance(self.expires_at, int | float)
            or not math.isfinite(self.expires_at)
        ):
            raise ValueError("expires_at: must be unix seconds")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A managed key as stored: everything but its secret, of which only the hash."""

    key_id: str
    name: str
    secret_hash: bytes = field(repr=False)
    models: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    spend_limit_micros: int | None
    spend_period: Period | None
    prepaid: bool
    expires_at: float | None
    revoked_at: float | None
    created_at: float
    version: int  # commit order of the last change: the refresher's watermark

    @property
    def limits(self) -> KeyLimits:
        return KeyLimits(
            rpm=self.rpm,
            tpm=self.tpm,
            spend_limit_micros=self.spend_limit_micros,
            spend_period=self.spend_period,
            prepaid=self.prepaid,
        )

    def state(self, now: float) -> str:
        """ "active", "revoked" or "expired"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        base = principal_for(self.name, self.models)
        return dataclasses.replace(base, key_id=self.key_id, limits=self.limits)

    def public(self, now: float) -> dict[str, Any]:
        """The JSON shape shown by the admin API and `gateway keys --json`: no secret."""
        return {
            "id": self.key_id,
            "object": "api_key",
            "name": self.name,
            "key_hint": redacted(self.key_id),
            "models": None if self.models is None else list(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "spend_limit_micros": self.spend_limit_micros,
            "spend_period": self.spend_period,
            "prepaid": self.prepaid,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "created_at": self.created_at,
            "state": self.state(now),
        }


@dataclass(frozen=True, slots=True)
class Topup:
    """Credit added to a prepaid key; ids grow in commit order."""

    topup_id: int
    key_id: str
    micros: int
    created_at: float


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One admitted request in the ledger (R23). `status` is "ok", "pending" (written at
    admission, replaced by the final row), "client_gone", "partial" or an error code."""

    request_id: str
    key_id: str | None  # None: a key from the config file
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_micros: int
    status: str
    latency_ms: int
    created_at: float  # when the request was admitted: the period it is billed to

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageRow:
        """A row from its JSON form; ValueError if anything is missing or mistyped."""
        try:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        except KeyError as e:
            raise ValueError(f"usage row without {e.args[0]}") from None
        for name in ("request_id", "model", "provider", "status"):
            if not isinstance(values[name], str):
                raise ValueError(f"usage row {name}: expected a string")
        if values["key_id"] is not None and not isinstance(values["key_id"], str):
            raise ValueError("usage row key_id: expected a string or null")
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "cost_micros"):
            if not _is_int(values[name]) or values[name] < 0:
                raise ValueError(f"usage row {name}: expected a non-negative integer")
        if not _is_int(values["latency_ms"]):
            raise ValueError("usage row latency_ms: expected an integer")
        if isinstance(values["created_at"], bool) or not isinstance(
            values["created_at"], int | float
        ):
            raise ValueError("usage row created_at: expected a number")
        values["created_at"] = float(values["created_at"])
        return cls(**values)


@dataclass(slots=True)
class ModelUsage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_micros: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A key's usage over [since, until): totals, per model and per status."""

    key_id: str
    since: float | None
    until: float | None
    total: ModelUsage
    by_model: dict[str, ModelUsage]
    by_status: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "since": self.since,
            "until": self.until,
            **self.total.to_dict(),
            "by_model": {m: u.to_dict() for m, u in sorted(self.by_model.items())},
            "by_status": dict(sorted(self.by_status.items())),
        }


class KeySource(Protocol):
    """Where `ManagedKeyStore` reads keys and top-ups from (SQLite: `AsyncSqlite`)."""

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
    constant-time compare. Implements `gateway.auth.KeyStore`.

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
        refresh_interval_s: float = 2.0,
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
                    principal = record.principal()
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
            await trio.sleep(self.refresh_interval_s)
            try:
                await self.refresh()
            except Exception as e:
                self.refresh_failures += 1
                if trio.current_time() - last_warning >= 60.0:
                    last_warning = trio.current_time()
                    bug = not isinstance(e, StoreError)
                    log.warning("key refresh failed, serving cached keys: %s", e, exc_info=bug)
