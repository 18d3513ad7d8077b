"""The store interface: what the rest of the gateway asks of the durable state.

One interface, two implementations: SQLite (gateway/store/sqlite.py, one machine)
and PostgreSQL (gateway/store/postgres.py, several machines). `Store` is the
synchronous surface (the CLI calls it directly); `AsyncStore` runs the same calls for
trio code in worker threads (each backend decides how: SQLite one at a time with an
interrupt on cancel, PostgreSQL on a bounded pool). A new table (stored responses,
say) is a new group of methods on both, and a new test in the shared suite
(tests/store/test_store.py).

`merged_cost` and `merged_rows` are the one rule both backends use to count rows
journaled but not yet written: each request counts once, as the upsert will leave it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, Protocol, TypeVar, cast

import orjson
import trio

from gateway.store.periods import SpendPeriod
from gateway.store.records import (
    PENDING,
    BudgetView,
    IssuedKey,
    KeyRecord,
    KeyUpdate,
    NewKey,
    RefusalCount,
    Topup,
    UsageLine,
    UsageRow,
    UsageSummary,
)

P = ParamSpec("P")
T = TypeVar("T")


class Store(Protocol):
    """Keys, top-ups, the usage ledger and refusal counts, synchronously. Errors of
    the database leave as the driver's own (sqlite3.Error, psycopg.Error) or as
    `StoreError`; `AsyncStore` turns them all into `StoreError`."""

    @property
    def where(self) -> str:
        """Which database this is, for messages (no password)."""
        ...

    def close(self) -> None: ...

    def ping(self) -> None: ...

    # keys
    def create_key(self, spec: NewKey, now: float, key: IssuedKey) -> tuple[KeyRecord, str]: ...

    def get_key(self, key_id: str) -> KeyRecord | None: ...

    def list_keys(self) -> list[KeyRecord]: ...

    def keys_changed_since(self, version: int) -> list[KeyRecord]: ...

    def update_key(self, key_id: str, update: KeyUpdate) -> KeyRecord | None: ...

    def revoke_key(self, key_id: str, now: float) -> KeyRecord | None: ...

    # credit
    def add_topup(self, key_id: str, micros: int, now: float, note: str = "") -> Topup: ...

    def topups_since(self, topup_id: int) -> list[Topup]: ...

    def last_topup_id(self) -> int: ...

    def credit_snapshot(self, key_id: str, pending: Sequence[UsageRow] = ()) -> tuple[int, int]: ...

    def credit_balance(self, key_id: str, pending: Sequence[UsageRow] = ()) -> int: ...

    # usage
    def write_usage(self, rows: Sequence[UsageRow]) -> None: ...

    def cost_between(
        self,
        key_id: str,
        start: float | None,
        end: float | None,
        pending: Sequence[UsageRow] = (),
    ) -> int: ...

    def spent_in_period(
        self, key_id: str, period: SpendPeriod, now: float, pending: Sequence[UsageRow] = ()
    ) -> int: ...

    def budget_view(self, key_id: str, q: RowQuery, pending: Sequence[UsageRow] = ()) -> BudgetView:
        """The key's top-ups, costs and the rows `q` names, on one snapshot."""
        ...

    def add_refusals(self, counts: Sequence[RefusalCount]) -> None: ...

    def usage_report(
        self,
        by: str,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
    ) -> list[UsageLine]: ...

    def usage_summary(
        self, key_id: str, since: float | None = None, until: float | None = None
    ) -> UsageSummary: ...

    def recent_usage(self, key_id: str, limit: int) -> list[UsageRow]: ...


# The columns of the keys and usage tables, in the order both backends select and insert
# them (`key_record`, `usage_values`).
KEY_COLUMNS: Final = (
    "key_id, name, secret_hash, models, rpm, tpm, spend_limit_micros, spend_period, "
    "prepaid, expires_at, revoked_at, created_at, version"
)
USAGE_COLUMNS: Final = (
    "request_id, key_id, model, provider, prompt_tokens, completion_tokens, cached_tokens, "
    "cost_micros, status, latency_ms, created_at, deployment, attempts, x_request_id, key_name"
)


def key_record(row: Sequence[Any]) -> KeyRecord:
    """A keys row (`KEY_COLUMNS`) as a KeyRecord."""
    models = None if row[3] is None else tuple(orjson.loads(row[3]))
    return KeyRecord(
        key_id=row[0],
        name=row[1],
        secret_hash=bytes(row[2]),
        models=models,
        rpm=row[4],
        tpm=row[5],
        spend_limit_micros=row[6],
        spend_period=cast("SpendPeriod | None", row[7]),
        prepaid=bool(row[8]),
        expires_at=row[9],
        revoked_at=row[10],
        created_at=row[11],
        version=row[12],
    )


def usage_values(r: UsageRow) -> tuple[Any, ...]:
    """A usage row's values in `USAGE_COLUMNS` order."""
    return (
        r.request_id,
        r.key_id,
        r.model,
        r.provider,
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        r.cost_micros,
        r.status,
        r.latency_ms,
        r.created_at,
        r.deployment,
        r.attempts,
        r.x_request_id,
        r.key_name,
    )


def models_json(models: tuple[str, ...] | None) -> str | None:
    """A key's model scope as stored: a JSON list, or NULL for every model."""
    return None if models is None else orjson.dumps(list(models)).decode()


def collapse(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """One row per request, as upserting `rows` in order would leave it: a request's
    first final row, else its last pending one (so one statement can write a batch)."""
    latest: dict[str, UsageRow] = {}
    for row in rows:
        prev = latest.get(row.request_id)
        if prev is None or prev.status == PENDING:
            latest[row.request_id] = row
    return list(latest.values())


def _within(at: float, start: float | None, end: float | None) -> bool:
    return (start is None or at >= start) and (end is None or at < end)


def merged_cost(
    stored_total: int,
    stored: Mapping[str, UsageRow],
    pending: Sequence[UsageRow],
    key_id: str,
    start: float | None,
    end: float | None,
) -> int:
    """The cost of a key's rows in [start, end) once `pending` is written:
    `stored_total` is what the store holds now, `stored` the stored rows of the
    pending requests. A pending request replaces its stored row only while that row
    is itself pending (the upsert rule), so each request counts once."""
    total = stored_total
    effective = dict(stored)
    for r in effective.values():  # replaced below by what they will become
        if r.key_id == key_id and _within(r.created_at, start, end):
            total -= r.cost_micros
    for r in pending:
        current = effective.get(r.request_id)
        if current is None or current.status == PENDING:
            effective[r.request_id] = r
    for r in effective.values():
        if r.key_id == key_id and _within(r.created_at, start, end):
            total += r.cost_micros
    return total


@dataclass(frozen=True, slots=True)
class RowQuery:
    """Which of a key's rows a `BudgetView` lists, and what it sums: rows created at
    or after `since`, pending rows created at or after `pending_since`, and the rows
    of `request_ids` (`since`/`pending_since` None: none by time); the cost in
    `period` (None: none), and with `credit` the top-ups and the cost of all rows
    (False: 0, and none of the key's history is read)."""

    period: SpendPeriod | None
    now: float
    since: float | None = None
    pending_since: float | None = None
    request_ids: tuple[str, ...] = ()
    credit: bool = True

    def wants(self, row: UsageRow) -> bool:
        """Whether `row` (one of the key's, as merged) is one this query lists."""
        at = row.created_at
        if self.since is not None and at >= self.since:
            return True
        if self.pending_since is not None and row.status == PENDING and at >= self.pending_since:
            return True
        return row.request_id in self.request_ids

    def where(self, mark: str) -> tuple[str, list[Any]] | None:
        """The SQL condition (with `mark` placeholders) selecting the rows listed by
        time, after `key_id = <mark>`; None if none are (both on the key's time index)."""
        parts: list[str] = []
        args: list[Any] = []
        if self.since is not None:
            parts.append(f"created_at >= {mark}")
            args.append(self.since)
        if self.pending_since is not None:
            parts.append(f"(status = '{PENDING}' AND created_at >= {mark})")
            args.append(self.pending_since)
        return (" OR ".join(parts), args) if parts else None


def merged_rows(
    stored: Mapping[str, UsageRow], pending: Sequence[UsageRow], key_id: str, q: RowQuery
) -> tuple[UsageRow, ...]:
    """The rows `q` lists once `pending` is written over `stored` (the stored rows `q`
    names, and those of the pending requests): the upsert rule of `collapse`."""
    effective = dict(stored)
    for r in pending:
        current = effective.get(r.request_id)
        if current is None or current.status == PENDING:
            effective[r.request_id] = r
    return tuple(r for r in effective.values() if r.key_id == key_id and q.wants(r))


class AsyncStore(abc.ABC):
    """A `Store` for trio code: the same calls, awaited, off the event loop; the
    database's errors leave as `StoreError`. Each backend says how in `run`.
    Implements `gateway.auth.cache.KeySource`."""

    store: Store
    kind = "SQLite"  # for messages
    shared = False  # True: every instance uses this database (its absence is no one's fault)

    async def start(self) -> None:
        """Connect (and check the schema), off the event loop; before any other call.
        SQLite opened its file when built: nothing to do."""
        return None

    @abc.abstractmethod
    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` (a method of `store`) in a worker thread."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def watch_keys(self, wake: Callable[[], None]) -> None:
        """Call `wake()` whenever another process may have changed keys or top-ups,
        until cancelled. The default never does: the key cache polls (SQLite)."""
        await trio.sleep_forever()

    async def ping(self) -> None:
        await self.run(self.store.ping)

    async def create_key(self, spec: NewKey, now: float, key: IssuedKey) -> tuple[KeyRecord, str]:
        return await self.run(self.store.create_key, spec, now, key)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self.run(self.store.get_key, key_id)

    async def list_keys(self) -> list[KeyRecord]:
        return await self.run(self.store.list_keys)

    async def revoke_key(self, key_id: str, now: float) -> KeyRecord | None:
        return await self.run(self.store.revoke_key, key_id, now)

    async def update_key(self, key_id: str, update: KeyUpdate) -> KeyRecord | None:
        return await self.run(self.store.update_key, key_id, update)

    async def add_topup(self, key_id: str, micros: int, now: float, note: str = "") -> Topup:
        return await self.run(self.store.add_topup, key_id, micros, now, note)

    async def keys_changed_since(self, version: int) -> list[KeyRecord]:
        return await self.run(self.store.keys_changed_since, version)

    async def topups_since(self, topup_id: int) -> list[Topup]:
        return await self.run(self.store.topups_since, topup_id)

    async def last_topup_id(self) -> int:
        return await self.run(self.store.last_topup_id)

    async def credit_snapshot(
        self, key_id: str, pending: Sequence[UsageRow] = ()
    ) -> tuple[int, int]:
        return await self.run(self.store.credit_snapshot, key_id, pending)

    async def credit_balance(self, key_id: str, pending: Sequence[UsageRow] = ()) -> int:
        return await self.run(self.store.credit_balance, key_id, pending)

    async def spent_in_period(
        self, key_id: str, period: SpendPeriod, now: float, pending: Sequence[UsageRow] = ()
    ) -> int:
        return await self.run(self.store.spent_in_period, key_id, period, now, pending)

    async def cost_between(
        self,
        key_id: str,
        start: float | None,
        end: float | None,
        pending: Sequence[UsageRow] = (),
    ) -> int:
        return await self.run(self.store.cost_between, key_id, start, end, pending)

    async def usage_summary(
        self, key_id: str, since: float | None = None, until: float | None = None
    ) -> UsageSummary:
        return await self.run(self.store.usage_summary, key_id, since, until)

    async def recent_usage(self, key_id: str, limit: int) -> list[UsageRow]:
        return await self.run(self.store.recent_usage, key_id, limit)

    async def write_usage(self, rows: Sequence[UsageRow]) -> None:
        await self.run(self.store.write_usage, rows)

    async def budget_view(
        self, key_id: str, q: RowQuery, pending: Sequence[UsageRow] = ()
    ) -> BudgetView:
        return await self.run(self.store.budget_view, key_id, q, pending)

    async def add_refusals(self, counts: Sequence[RefusalCount]) -> None:
        await self.run(self.store.add_refusals, counts)

    async def usage_report(
        self,
        by: str,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
    ) -> list[UsageLine]:
        return await self.run(self.store.usage_report, by, since, until, key)
