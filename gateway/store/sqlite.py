"""SQLite (WAL) store: managed keys, credit top-ups and the usage ledger.

`SqliteStore` is synchronous (the `gateway keys` CLI uses it directly); the server
uses it through `AsyncSqlite`, which runs each call in a worker thread, one at a
time per connection. A plain sqlite3 call in `trio.to_thread.run_sync` cannot be
cancelled (docs/reliability.md S1: a 7.8 s query cancelled at 0.2 s returned at 7.6 s), so
`AsyncSqlite` calls `Connection.interrupt()` when its caller is cancelled and waits
for the thread to give the connection back: the statement stops within
milliseconds and its transaction rolls back, so a cancelled write is all or
nothing. This costs no dependency (sqlite-anyio 0.3.2 does the same) and keeps one
synchronous code path for the CLI and the server.

Durability: WAL with `synchronous=NORMAL` survives a process crash; only a power
loss can drop the last commits (`FULL` would fsync each, docs/reliability.md R23). Keys
carry a `version` assigned as MAX(version)+1 inside the writing transaction, so
versions follow commit order across processes, and a cache that has seen version
N has seen every change up to N (a wall-clock `updated_at` would not: a slower
writer can commit an older timestamp after a reader has moved past it).

Usage rows are upserted by `request_id`: a "pending" row (written at admission)
is replaced by the request's final row; a final row is never replaced, so replaying
a journal twice changes nothing. Requests refused before admission are counted per
minute in `refusals` (one row per minute, key, model and status, its count added to).

Schema versions (`PRAGMA user_version`): 1, the first; 2 adds the usage columns
`deployment` and `attempts` (docs/routing.md); 3 adds `usage.x_request_id` (the request
id of docs/operations.md), `usage.key_name` and the `refusals` table. Opening an older
file adds what it lacks in place (`ALTER TABLE ... ADD COLUMN`: defaults '' and 1, and
NULL, for the rows already there); a file newer than this gateway is refused. Indexes
added later (one key's usage report: `usage_config_key_time`, `refusals_key`) are made
when a file is opened, without a new version: an older gateway can still open it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import trio

from gateway.store.base import (
    KEY_COLUMNS,
    USAGE_COLUMNS,
    AsyncStore,
    RowQuery,
    key_record,
    merged_cost,
    merged_rows,
    models_json,
    usage_values,
)
from gateway.store.periods import SpendPeriod, period_bounds
from gateway.store.records import (
    MAX_MICROS,
    PENDING,
    BudgetView,
    IssuedKey,
    KeyRecord,
    KeyUpdate,
    ModelUsage,
    NewKey,
    RefusalCount,
    StoreError,
    Topup,
    UsageLine,
    UsageRow,
    UsageSummary,
)
from gateway.store.reports import usage_report
from gateway.store.threaded import ThreadedCalls

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION: Final = 3
BUSY_TIMEOUT_MS: Final = 5000  # wait this long for another process's write lock
_IN_CHUNK: Final = 500  # bound the parameters of one `IN (...)` list

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    models TEXT,
    rpm INTEGER,
    tpm INTEGER,
    spend_limit_micros INTEGER,
    spend_period TEXT CHECK (spend_period IN ('day', 'month')),
    prepaid INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    revoked_at REAL,
    created_at REAL NOT NULL,
    version INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS keys_version ON keys (version);
CREATE TABLE IF NOT EXISTS topups (
    topup_id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT NOT NULL REFERENCES keys (key_id),
    micros INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS topups_key ON topups (key_id);
CREATE TABLE IF NOT EXISTS usage (
    request_id TEXT PRIMARY KEY,
    key_id TEXT,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    status TEXT NOT NULL,
    latency_ms INTEGER NOT NULL,
    created_at REAL NOT NULL,
    deployment TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 1,
    x_request_id TEXT,
    key_name TEXT
);
CREATE INDEX IF NOT EXISTS usage_key_time ON usage (key_id, created_at);
CREATE INDEX IF NOT EXISTS usage_time ON usage (created_at);
CREATE INDEX IF NOT EXISTS usage_x_request_id ON usage (x_request_id);
CREATE INDEX IF NOT EXISTS usage_config_key_time ON usage (key_name, created_at)
    WHERE key_id IS NULL;
CREATE TABLE IF NOT EXISTS refusals (
    minute INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (minute, key_id, key_name, model, provider, status, code)
);
CREATE INDEX IF NOT EXISTS refusals_key ON refusals (key_id, key_name, minute);
"""

# Columns added after version 1: (table, column, declaration). A file made by an older
# gateway gets them when opened (`_migrate`): the defaults, or NULL, in its old rows.
_ADDED_COLUMNS: Final = (
    ("usage", "deployment", "TEXT NOT NULL DEFAULT ''"),  # schema 2
    ("usage", "attempts", "INTEGER NOT NULL DEFAULT 1"),  # schema 2
    ("usage", "x_request_id", "TEXT"),  # schema 3: the x-request-id of the row's request
    ("usage", "key_name", "TEXT"),  # schema 3: the key's name when the request was made
)


_UPSERT_USAGE: Final = f"""
INSERT INTO usage ({USAGE_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (request_id) DO UPDATE SET
    key_id = excluded.key_id, model = excluded.model, provider = excluded.provider,
    prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
    cached_tokens = excluded.cached_tokens, cost_micros = excluded.cost_micros,
    status = excluded.status, latency_ms = excluded.latency_ms,
    created_at = excluded.created_at, deployment = excluded.deployment,
    attempts = excluded.attempts, x_request_id = excluded.x_request_id,
    key_name = excluded.key_name
WHERE usage.status = '{PENDING}'
"""

_ADD_REFUSALS: Final = """
INSERT INTO refusals (minute, key_id, key_name, model, provider, status, code, count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (minute, key_id, key_name, model, provider, status, code) DO UPDATE SET
    count = count + excluded.count
"""


class SqliteStore:
    """Keys, top-ups and usage in one SQLite file. Synchronous; one connection; not
    for concurrent use from several threads at once (AsyncSqlite serialises calls)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # autocommit; transactions are explicit (BEGIN IMMEDIATE)
            check_same_thread=False,  # AsyncSqlite hands it between worker threads, serially
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _migrate(self) -> None:
        with self._tx():
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this gateway's "
                    f"({SCHEMA_VERSION}); upgrade the gateway"
                )
            for table, column, declaration in _ADDED_COLUMNS:  # before the indexes on them
                have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
                if have and column not in have:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several queries."""
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front: all or nothing."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:  # an interrupt may already have rolled it back
                self._conn.rollback()
            raise
        self._conn.execute("COMMIT")

    def interrupt(self) -> None:
        """Stop the running statement (from any thread); it fails with 'interrupted'."""
        self._conn.interrupt()

    def close(self) -> None:
        self._conn.close()

    @property
    def where(self) -> str:
        return self.path

    def dump(self, table: str, columns: str, batch: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """Every row of `table` (these `columns`), in batches, on one snapshot: for
        `gateway db copy`."""
        with self._read() as c:
            cur = c.execute(f"SELECT {columns} FROM {table}")
            while rows := cur.fetchmany(batch):
                yield rows

    def ping(self) -> None:
        """A trivial query: raises sqlite3.Error if the connection is closed or broken."""
        self._conn.execute("SELECT 1").fetchone()

    # ------------------------------------------------------------------ keys

    def create_key(self, spec: NewKey, now: float, key: IssuedKey) -> tuple[KeyRecord, str]:
        """Store a new key (made by `auth.keys.new_key`); returns its record and the full
        key, the only time it exists."""
        spec.check()
        models = models_json(spec.models)
        with self._tx() as c:
            version = self._next_version(c)
            c.execute(
                f"INSERT INTO keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    spec.name,
                    key.secret_hash,
                    models,
                    spec.rpm,
                    spec.tpm,
                    spec.spend_limit_micros,
                    spec.spend_period,
                    spec.credit_micros is not None,
                    spec.expires_at,
                    None,
                    now,
                    version,
                ),
            )
            if spec.credit_micros:
                c.execute(
                    "INSERT INTO topups (key_id, micros, note, created_at) VALUES (?, ?, ?, ?)",
                    (key.key_id, spec.credit_micros, "initial credit", now),
                )
        record = self.get_key(key.key_id)
        assert record is not None
        return record, key.full_key

    @staticmethod
    def _next_version(c: sqlite3.Connection) -> int:
        (version,) = c.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM keys").fetchone()
        return int(version)

    def get_key(self, key_id: str) -> KeyRecord | None:
        row = self._conn.execute(
            f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else key_record(row)

    def list_keys(self) -> list[KeyRecord]:
        rows = self._conn.execute(
            f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, key_id"
        ).fetchall()
        return [key_record(r) for r in rows]

    def keys_changed_since(self, version: int) -> list[KeyRecord]:
        """Keys created or changed after `version`, in commit order."""
        rows = self._conn.execute(
            f"SELECT {KEY_COLUMNS} FROM keys WHERE version > ? ORDER BY version", (version,)
        ).fetchall()
        return [key_record(r) for r in rows]

    def update_key(self, key_id: str, update: KeyUpdate) -> KeyRecord | None:
        """Apply `update` to a key in one transaction (ValueError naming an invalid
        field, nothing written); None if there is no such key. Its new version makes
        every process's key cache take the change at its next refresh."""
        with self._tx() as c:
            row = c.execute(f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?", (key_id,))
            found = row.fetchone()
            if found is None:
                return None
            new = update.applied_to(key_record(found))
            models = models_json(new.models)
            c.execute(
                "UPDATE keys SET name = ?, models = ?, rpm = ?, tpm = ?, spend_limit_micros = ?,"
                " spend_period = ?, expires_at = ?, version = ? WHERE key_id = ?",
                (
                    new.name,
                    models,
                    new.rpm,
                    new.tpm,
                    new.spend_limit_micros,
                    new.spend_period,
                    new.expires_at,
                    self._next_version(c),
                    key_id,
                ),
            )
        return self.get_key(key_id)

    def revoke_key(self, key_id: str, now: float) -> KeyRecord | None:
        """Revoke a key (again is a no-op); None if there is no such key."""
        with self._tx() as c:
            row = c.execute("SELECT revoked_at FROM keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                return None
            if row[0] is None:
                c.execute(
                    "UPDATE keys SET revoked_at = ?, version = ? WHERE key_id = ?",
                    (now, self._next_version(c), key_id),
                )
        return self.get_key(key_id)

    # ---------------------------------------------------------------- credit

    def add_topup(self, key_id: str, micros: int, now: float, note: str = "") -> Topup:
        """Add credit to a prepaid key. KeyError: no such key; ValueError: not prepaid,
        or an amount that is not a positive integer."""
        if isinstance(micros, bool) or not isinstance(micros, int) or not 0 < micros <= MAX_MICROS:
            raise ValueError(f"a top-up must be from 1 to {MAX_MICROS} micro-dollars")
        with self._tx() as c:
            row = c.execute("SELECT prepaid FROM keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                raise KeyError(key_id)
            if not row[0]:
                raise ValueError(f"key {key_id} is not prepaid: it has no credit to top up")
            cur = c.execute(
                "INSERT INTO topups (key_id, micros, note, created_at) VALUES (?, ?, ?, ?)",
                (key_id, micros, note, now),
            )
            topup_id = cur.lastrowid
        assert topup_id is not None
        return Topup(topup_id, key_id, micros, now)

    def topups_since(self, topup_id: int) -> list[Topup]:
        rows = self._conn.execute(
            "SELECT topup_id, key_id, micros, created_at FROM topups WHERE topup_id > ? "
            "ORDER BY topup_id",
            (topup_id,),
        ).fetchall()
        return [Topup(*r) for r in rows]

    def last_topup_id(self) -> int:
        (value,) = self._conn.execute("SELECT COALESCE(MAX(topup_id), 0) FROM topups").fetchone()
        return int(value)

    def credit_snapshot(self, key_id: str, pending: Sequence[UsageRow] = ()) -> tuple[int, int]:
        """(credit balance, id of the last top-up it includes) of a key, read in one
        transaction: its top-ups minus the cost of all its usage rows, with `pending`
        (rows not yet written) merged in as `write_usage` would."""
        with self._read() as c:
            (topups, last_id) = c.execute(
                "SELECT COALESCE(SUM(micros), 0), COALESCE(MAX(topup_id), 0) FROM topups "
                "WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            used = self._cost(key_id, None, None, pending)
        return int(topups) - used, int(last_id)

    def credit_balance(self, key_id: str, pending: Sequence[UsageRow] = ()) -> int:
        """Top-ups minus the cost of every ledger row of the key (prepaid keys)."""
        return self.credit_snapshot(key_id, pending)[0]

    # ----------------------------------------------------------------- usage

    def write_usage(self, rows: Sequence[UsageRow]) -> None:
        """Upsert rows in one transaction (a final row replaces a pending one)."""
        if not rows:
            return
        with self._tx() as c:
            c.executemany(_UPSERT_USAGE, [usage_values(r) for r in rows])

    def _stored_rows(self, request_ids: Sequence[str]) -> dict[str, UsageRow]:
        out: dict[str, UsageRow] = {}
        for i in range(0, len(request_ids), _IN_CHUNK):
            chunk = request_ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for r in self._conn.execute(
                f"SELECT {USAGE_COLUMNS} FROM usage WHERE request_id IN ({marks})", chunk
            ).fetchall():
                out[r[0]] = UsageRow(*r)
        return out

    def _cost(
        self, key_id: str, start: float | None, end: float | None, pending: Sequence[UsageRow]
    ) -> int:
        """Cost of a key's rows created in [start, end) (None: unbounded), as it will be
        once `pending` is written: each pending request counts once, by the upsert rule."""
        where = "key_id = ?"
        args: list[Any] = [key_id]
        if start is not None:
            where += " AND created_at >= ?"
            args.append(start)
        if end is not None:
            where += " AND created_at < ?"
            args.append(end)
        (total,) = self._conn.execute(
            f"SELECT COALESCE(SUM(cost_micros), 0) FROM usage WHERE {where}", args
        ).fetchone()
        if not pending:
            return int(total)
        stored = self._stored_rows(list(dict.fromkeys(r.request_id for r in pending)))
        return merged_cost(int(total), stored, pending, key_id, start, end)

    def cost_between(
        self,
        key_id: str,
        start: float | None,
        end: float | None,
        pending: Sequence[UsageRow] = (),
    ) -> int:
        """Cost of a key's usage created in [start, end), `pending` rows merged in."""
        with self._read():
            return self._cost(key_id, start, end, pending)

    def spent_in_period(
        self, key_id: str, period: SpendPeriod, now: float, pending: Sequence[UsageRow] = ()
    ) -> int:
        """What a key spent in the calendar UTC day or month containing `now`."""
        start, end = period_bounds(period, now)
        return self.cost_between(key_id, start, end, pending)

    def budget_view(self, key_id: str, q: RowQuery, pending: Sequence[UsageRow] = ()) -> BudgetView:
        """The key's top-ups, costs and the rows `q` lists, in one read transaction,
        `pending` merged in as `write_usage` would."""
        mine = [r for r in pending if r.key_id == key_id]
        with self._read() as c:
            topups = last_id = cost = period = 0
            if q.credit:
                (topups, last_id) = c.execute(
                    "SELECT COALESCE(SUM(micros), 0), COALESCE(MAX(topup_id), 0) FROM topups "
                    "WHERE key_id = ?",
                    (key_id,),
                ).fetchone()
                cost = self._cost(key_id, None, None, mine)
            if q.period is not None:
                period = self._cost(key_id, *period_bounds(q.period, q.now), mine)
            stored: dict[str, UsageRow] = {}
            where = q.where("?")
            if where is not None:
                for r in c.execute(
                    f"SELECT {USAGE_COLUMNS} FROM usage WHERE key_id = ? AND ({where[0]})",
                    [key_id, *where[1]],
                ).fetchall():
                    stored[r[0]] = UsageRow(*r)
            ids = [*q.request_ids, *(r.request_id for r in mine)]
            stored.update(self._stored_rows(list(dict.fromkeys(ids))))
        rows = merged_rows(stored, mine, key_id, q)
        return BudgetView(int(topups), int(last_id), cost, period, rows)

    def add_refusals(self, counts: Sequence[RefusalCount]) -> None:
        """Add refused requests to their minutes' counts, in one transaction."""
        if not counts:
            return
        with self._tx() as c:
            c.executemany(
                _ADD_REFUSALS,
                [
                    (r.minute, r.key_id, r.key_name, r.model, r.provider, r.status, r.code, r.count)
                    for r in counts
                ],
            )

    def usage_report(
        self,
        by: str,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
    ) -> list[UsageLine]:
        """Requests, refusals, errors, tokens and cost over [since, until), grouped `by`
        one of USAGE_GROUPS, of every key or of `key` (a managed key's id or a config
        key's name). Refusals count by their minute. Biggest cost first (by day: in
        date order)."""
        with self._read() as c:
            return usage_report(c, by, since, until, key)

    def recent_usage(self, key_id: str, limit: int) -> list[UsageRow]:
        """A key's newest `limit` ledger rows, newest first (a read; no schema change)."""
        with self._read() as c:
            rows = c.execute(
                f"SELECT {USAGE_COLUMNS} FROM usage WHERE key_id = ?"
                " ORDER BY created_at DESC LIMIT ?",
                (key_id, limit),
            ).fetchall()
        return [UsageRow(*r) for r in rows]

    def usage_summary(
        self, key_id: str, since: float | None = None, until: float | None = None
    ) -> UsageSummary:
        """Requests, tokens and cost of a key over [since, until), per model and status."""
        where = "key_id = ?"
        args: list[Any] = [key_id]
        if since is not None:
            where += " AND created_at >= ?"
            args.append(since)
        if until is not None:
            where += " AND created_at < ?"
            args.append(until)
        total = ModelUsage()
        by_model: dict[str, ModelUsage] = {}
        by_status: dict[str, int] = {}
        with self._read() as c:
            for model, n, prompt, completion, cached, cost in c.execute(
                "SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),"
                f" SUM(cached_tokens), SUM(cost_micros) FROM usage WHERE {where}"
                " GROUP BY model",
                args,
            ).fetchall():
                by_model[model] = ModelUsage(n, prompt, completion, cached, cost)
                total.requests += n
                total.prompt_tokens += prompt
                total.completion_tokens += completion
                total.cached_tokens += cached
                total.cost_micros += cost
            for status, n in c.execute(
                f"SELECT status, COUNT(*) FROM usage WHERE {where} GROUP BY status", args
            ).fetchall():
                by_status[status] = n
        return UsageSummary(key_id, since, until, total, by_model, by_status)


class AsyncSqlite(AsyncStore):
    """A `SqliteStore` for trio code: each call runs in a worker thread, one at a time,
    and a cancelled call interrupts its statement (see the module docstring and
    store/threaded.py). SQLite errors leave as `StoreError`."""

    store: SqliteStore

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._calls = ThreadedCalls(store)

    @classmethod
    async def open(cls, path: str | Path) -> AsyncSqlite:
        """Open (and create or migrate) the database at `path`, off the event loop."""
        store = await trio.to_thread.run_sync(SqliteStore, path)
        return cls(store)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker thread; cancellable."""
        return await self._calls.run(fn, *args, **kwargs)

    async def aclose(self) -> None:
        await self._calls.aclose()
