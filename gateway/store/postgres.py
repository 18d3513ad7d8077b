"""PostgreSQL store: managed keys, credit top-ups and the usage ledger shared by every
gateway machine. The same interface as SQLite (gateway/store/base.py), the same rules.

`PostgresStore` is synchronous, on a psycopg 3 connection pool (psycopg_pool): the
`gateway keys` CLI uses it directly; the server uses it through `AsyncPostgres`, which
runs each call in a trio worker thread, at most `pool_size` at once (psycopg's async
API is asyncio-only). Nothing on the chat hot path waits on it: key look-ups are
answered by the in-memory cache, usage rows are journaled locally first and written
here in batches (gateway/billing/ledger.py).

Ordering across machines. The key cache follows keys by a `version` and top-ups by
their id, each read as a watermark ("everything after N"), so both must grow in
commit order, which a sequence does not (a transaction that took id 5 may commit
after one that took 6 was read). So every transaction that writes a key or a top-up
first takes one advisory lock, then assigns MAX+1: such writes are serialised (they
are rare), and a reader that has seen N has seen everything up to N. The same
transaction sends `NOTIFY gateway_keys`, delivered at commit: every instance's
listener (`AsyncPostgres.watch_keys`) wakes its key cache at once; the cache also polls
every second, which covers a lost notification or a listener reconnecting.

Usage rows are upserted by `request_id`, a final row never replaced (replaying a
journal twice changes nothing), in one transaction per batch. Reads that must be one
snapshot (credit: top-ups minus usage) run in a REPEATABLE READ transaction.

Every call is bounded: `timeout_s` for a connection from the pool (a new one
included) and for each statement (`statement_timeout`). While the server is
unreachable every call fails with `StoreError` within that time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any, Final, LiteralString, ParamSpec, TypeVar

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from gateway.store import pg_schema
from gateway.store.base import (
    KEY_COLUMNS,
    USAGE_COLUMNS,
    AsyncStore,
    RowQuery,
    collapse,
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
from gateway.store.reports import POSTGRES, usage_report

log = logging.getLogger("gateway.store.postgres")

P = ParamSpec("P")
T = TypeVar("T")

CHANNEL: Final = "gateway_keys"  # NOTIFY channel: a key or a top-up changed
_KEYS_LOCK: Final = 7_236_112_001  # pg_advisory_xact_lock id: key and top-up writes
_IN_CHUNK: Final = 500
_BATCH: Final = 10_000  # usage rows per statement
LISTEN_POLL_S: Final = 0.5  # how often the listener thread looks at its stop flag
RECONNECT_S: Final = 1.0  # the listener's wait before connecting again

# One statement, one round trip, for a whole batch (one row per request: `collapse`),
# its columns sent as arrays; no slower than one INSERT per row pipelined (measured in
# docs/performance.md), and fewer round trips to a distant server.
_UPSERT_USAGE: Final = f"""
INSERT INTO usage ({USAGE_COLUMNS})
SELECT * FROM unnest(
    %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[],
    %s::bigint[], %s::text[], %s::bigint[], %s::float8[], %s::text[], %s::int[], %s::text[],
    %s::text[]
)
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
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (minute, key_id, key_name, model, provider, status, code) DO UPDATE SET
    count = refusals.count + excluded.count
"""

Conn = psycopg.Connection[tuple[Any, ...]]


def where_of(url: str) -> str:
    """A PostgreSQL URL without its password, for messages and logs."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    host = info.get("host") or "localhost"
    port = info.get("port") or 5432
    return f"postgresql://{host}:{port}/{info.get('dbname') or ''}"


def _connect_kwargs(timeout_s: float) -> dict[str, Any]:
    return {
        "autocommit": True,  # transactions are explicit (conn.transaction())
        "connect_timeout": max(1, round(timeout_s)),
    }


def _statement_timeout(timeout_s: float) -> Callable[[Conn], None]:
    """A pool's `configure`: bound every statement of a new connection. A SET rather
    than a startup `options` parameter, which poolers such as PgBouncer refuse."""
    ms = round(timeout_s * 1000)

    def configure(conn: Conn) -> None:
        conn.execute(f"SET statement_timeout = {ms:d}".encode())

    return configure


class PostgresStore:
    """Keys, top-ups and usage in a PostgreSQL database. Synchronous and thread-safe
    (each call takes a connection from the pool). Built without I/O; `open` connects
    and checks that the schema is the one this gateway knows (`gateway db migrate`
    makes it so). `connect` does both."""

    def __init__(self, url: str, *, pool_size: int = 4, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._where = where_of(url)
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout_s,
            kwargs=_connect_kwargs(timeout_s),
            configure=_statement_timeout(timeout_s),
            check=ConnectionPool.check_connection,  # a broken connection is not handed out
            open=False,
            name="gateway",
        )

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 4, timeout_s: float = 5.0) -> PostgresStore:
        """A store on `url`, opened."""
        store = cls(url, pool_size=pool_size, timeout_s=timeout_s)
        store.open()
        return store

    def open(self) -> None:
        """Connect (StoreError within `timeout_s` if the server does not answer) and
        check the schema (StoreError saying what to do if it is not this gateway's)."""
        try:
            self._pool.open(wait=True, timeout=self.timeout_s)
            with self._conn() as c:
                pg_schema.check(c, self._where)
        except BaseException as e:
            self._pool.close()
            if isinstance(e, psycopg.Error):
                raise StoreError(f"{self._where}: {e}") from e
            raise

    @classmethod
    def migrate_url(cls, url: str, timeout_s: float = 30.0) -> list[int]:
        """Apply the missing migrations to the database at `url`; the versions applied."""
        where = where_of(url)
        try:
            with psycopg.connect(url, **_connect_kwargs(timeout_s)) as conn:
                return pg_schema.migrate(conn, where)
        except psycopg.Error as e:
            raise StoreError(f"{where}: {e}") from e

    @property
    def where(self) -> str:
        return self._where

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        try:
            with self._pool.connection() as c:
                yield c
        except psycopg.Error as e:
            raise StoreError(f"{self._where}: {e}") from e

    def connection(self) -> AbstractContextManager[Conn]:
        """A pooled connection (autocommit; psycopg errors raised as StoreError), for
        other tables in this database (gateway/store/pg_responses.py)."""
        return self._conn()

    @contextmanager
    def _tx(self, *, keys: bool = False) -> Iterator[Conn]:
        """A write transaction: all or nothing. `keys`: one that writes keys or top-ups,
        serialised by the advisory lock and announced to every listener at commit."""
        with self._conn() as c, c.transaction():
            if keys:
                c.execute("SELECT pg_advisory_xact_lock(%s)", (_KEYS_LOCK,))
                c.execute(f"NOTIFY {CHANNEL}")
            yield c

    @contextmanager
    def _read(self) -> Iterator[Conn]:
        """A read transaction on one snapshot, for several queries."""
        with self._conn() as c, c.transaction():
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield c

    def ping(self) -> None:
        with self._conn() as c:
            c.execute("SELECT 1").fetchone()

    def _one(self, c: Conn, sql: LiteralString, args: Sequence[Any] = ()) -> Any:
        row = c.execute(sql, args).fetchone()
        assert row is not None
        return row[0]

    # ------------------------------------------------------------------ keys

    def create_key(self, spec: NewKey, now: float, key: IssuedKey) -> tuple[KeyRecord, str]:
        """Store a new key; its record and the full key, the only time it exists."""
        spec.check()
        with self._tx(keys=True) as c:
            version = self._one(c, "SELECT COALESCE(MAX(version), 0) + 1 FROM keys")
            c.execute(
                f"INSERT INTO keys ({KEY_COLUMNS}) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    key.key_id,
                    spec.name,
                    key.secret_hash,
                    models_json(spec.models),
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
                self._insert_topup(c, key.key_id, spec.credit_micros, "initial credit", now)
        record = self.get_key(key.key_id)
        assert record is not None
        return record, key.full_key

    def get_key(self, key_id: str) -> KeyRecord | None:
        with self._conn() as c:
            row = c.execute(
                f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id = %s", (key_id,)
            ).fetchone()
        return None if row is None else key_record(row)

    def list_keys(self) -> list[KeyRecord]:
        with self._conn() as c:
            rows = c.execute(
                f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, key_id"
            ).fetchall()
        return [key_record(r) for r in rows]

    def keys_changed_since(self, version: int) -> list[KeyRecord]:
        """Keys created or changed after `version`, in commit order."""
        with self._conn() as c:
            rows = c.execute(
                f"SELECT {KEY_COLUMNS} FROM keys WHERE version > %s ORDER BY version",
                (version,),
            ).fetchall()
        return [key_record(r) for r in rows]

    def update_key(self, key_id: str, update: KeyUpdate) -> KeyRecord | None:
        """Apply `update` in one transaction (ValueError naming an invalid field,
        nothing written); None if there is no such key."""
        with self._tx(keys=True) as c:
            found = c.execute(
                f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id = %s FOR UPDATE", (key_id,)
            ).fetchone()
            if found is None:
                return None
            new = update.applied_to(key_record(found))
            version = self._one(c, "SELECT COALESCE(MAX(version), 0) + 1 FROM keys")
            c.execute(
                "UPDATE keys SET name = %s, models = %s, rpm = %s, tpm = %s,"
                " spend_limit_micros = %s, spend_period = %s, expires_at = %s, version = %s"
                " WHERE key_id = %s",
                (
                    new.name,
                    models_json(new.models),
                    new.rpm,
                    new.tpm,
                    new.spend_limit_micros,
                    new.spend_period,
                    new.expires_at,
                    version,
                    key_id,
                ),
            )
        return self.get_key(key_id)

    def revoke_key(self, key_id: str, now: float) -> KeyRecord | None:
        """Revoke a key (again is a no-op); None if there is no such key."""
        with self._tx(keys=True) as c:
            row = c.execute(
                "SELECT revoked_at FROM keys WHERE key_id = %s FOR UPDATE", (key_id,)
            ).fetchone()
            if row is None:
                return None
            if row[0] is None:
                version = self._one(c, "SELECT COALESCE(MAX(version), 0) + 1 FROM keys")
                c.execute(
                    "UPDATE keys SET revoked_at = %s, version = %s WHERE key_id = %s",
                    (now, version, key_id),
                )
        return self.get_key(key_id)

    # ---------------------------------------------------------------- credit

    def _insert_topup(self, c: Conn, key_id: str, micros: int, note: str, now: float) -> int:
        topup_id = int(self._one(c, "SELECT COALESCE(MAX(topup_id), 0) + 1 FROM topups"))
        c.execute(
            "INSERT INTO topups (topup_id, key_id, micros, note, created_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (topup_id, key_id, micros, note, now),
        )
        return topup_id

    def add_topup(self, key_id: str, micros: int, now: float, note: str = "") -> Topup:
        """Add credit to a prepaid key. KeyError: no such key; ValueError: not prepaid,
        or an amount that is not a positive integer."""
        if isinstance(micros, bool) or not isinstance(micros, int) or not 0 < micros <= MAX_MICROS:
            raise ValueError(f"a top-up must be from 1 to {MAX_MICROS} micro-dollars")
        with self._tx(keys=True) as c:
            row = c.execute("SELECT prepaid FROM keys WHERE key_id = %s", (key_id,)).fetchone()
            if row is None:
                raise KeyError(key_id)
            if not row[0]:
                raise ValueError(f"key {key_id} is not prepaid: it has no credit to top up")
            topup_id = self._insert_topup(c, key_id, micros, note, now)
        return Topup(topup_id, key_id, micros, now)

    def topups_since(self, topup_id: int) -> list[Topup]:
        with self._conn() as c:
            rows = c.execute(
                "SELECT topup_id, key_id, micros, created_at FROM topups WHERE topup_id > %s"
                " ORDER BY topup_id",
                (topup_id,),
            ).fetchall()
        return [Topup(*r) for r in rows]

    def last_topup_id(self) -> int:
        with self._conn() as c:
            return int(self._one(c, "SELECT COALESCE(MAX(topup_id), 0) FROM topups"))

    def credit_snapshot(self, key_id: str, pending: Sequence[UsageRow] = ()) -> tuple[int, int]:
        """(credit balance, id of the last top-up it includes), on one snapshot: top-ups
        minus the cost of all the key's usage rows, `pending` merged in."""
        with self._read() as c:
            row = c.execute(
                "SELECT COALESCE(SUM(micros), 0), COALESCE(MAX(topup_id), 0) FROM topups"
                " WHERE key_id = %s",
                (key_id,),
            ).fetchone()
            assert row is not None
            used = self._cost(c, key_id, None, None, pending)
        return int(row[0]) - used, int(row[1])

    def credit_balance(self, key_id: str, pending: Sequence[UsageRow] = ()) -> int:
        return self.credit_snapshot(key_id, pending)[0]

    # ----------------------------------------------------------------- usage

    def write_usage(self, rows: Sequence[UsageRow]) -> None:
        """Upsert rows in one transaction (a final row replaces a pending one)."""
        if not rows:
            return
        unique = collapse(rows)
        with self._tx() as c:
            for i in range(0, len(unique), _BATCH):
                columns = zip(*(usage_values(r) for r in unique[i : i + _BATCH]), strict=True)
                c.execute(_UPSERT_USAGE, [list(column) for column in columns])

    def _cost(
        self,
        c: Conn,
        key_id: str,
        start: float | None,
        end: float | None,
        pending: Sequence[UsageRow],
    ) -> int:
        total = int(
            self._one(
                c,
                "SELECT COALESCE(SUM(cost_micros), 0) FROM usage WHERE key_id = %s"
                " AND (%s::float8 IS NULL OR created_at >= %s::float8)"
                " AND (%s::float8 IS NULL OR created_at < %s::float8)",
                (key_id, start, start, end, end),
            )
        )
        if not pending:
            return total
        ids = list(dict.fromkeys(r.request_id for r in pending))
        stored: dict[str, UsageRow] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            for r in c.execute(
                f"SELECT {USAGE_COLUMNS} FROM usage WHERE request_id = ANY(%s)",
                (ids[i : i + _IN_CHUNK],),
            ).fetchall():
                stored[r[0]] = UsageRow(*r)
        return merged_cost(total, stored, pending, key_id, start, end)

    def cost_between(
        self,
        key_id: str,
        start: float | None,
        end: float | None,
        pending: Sequence[UsageRow] = (),
    ) -> int:
        with self._read() as c:
            return self._cost(c, key_id, start, end, pending)

    def spent_in_period(
        self, key_id: str, period: SpendPeriod, now: float, pending: Sequence[UsageRow] = ()
    ) -> int:
        start, end = period_bounds(period, now)
        return self.cost_between(key_id, start, end, pending)

    def budget_view(self, key_id: str, q: RowQuery, pending: Sequence[UsageRow] = ()) -> BudgetView:
        """The key's top-ups, costs and the rows `q` lists, on one snapshot, `pending`
        merged in as `write_usage` would."""
        mine = [r for r in pending if r.key_id == key_id]
        with self._read() as c:
            topups = last_id = cost = period = 0
            if q.credit:
                row = c.execute(
                    "SELECT COALESCE(SUM(micros), 0), COALESCE(MAX(topup_id), 0) FROM topups"
                    " WHERE key_id = %s",
                    (key_id,),
                ).fetchone()
                assert row is not None
                topups, last_id = int(row[0]), int(row[1])
                cost = self._cost(c, key_id, None, None, mine)
            if q.period is not None:
                period = self._cost(c, key_id, *period_bounds(q.period, q.now), mine)
            stored: dict[str, UsageRow] = {}
            where = q.where("%s")
            if where is not None:
                sql = f"SELECT {USAGE_COLUMNS} FROM usage WHERE key_id = %s AND ({where[0]})"
                for r in c.execute(sql, [key_id, *where[1]]).fetchall():
                    stored[r[0]] = UsageRow(*r)
            ids = list(dict.fromkeys([*q.request_ids, *(r.request_id for r in mine)]))
            for i in range(0, len(ids), _IN_CHUNK):
                for r in c.execute(
                    f"SELECT {USAGE_COLUMNS} FROM usage WHERE request_id = ANY(%s)",
                    (ids[i : i + _IN_CHUNK],),
                ).fetchall():
                    stored[r[0]] = UsageRow(*r)
        rows = merged_rows(stored, mine, key_id, q)
        return BudgetView(topups, last_id, cost, period, rows)

    def add_refusals(self, counts: Sequence[RefusalCount]) -> None:
        if not counts:
            return
        with self._tx() as c, c.cursor() as cur:
            cur.executemany(
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
        with self._read() as c:
            return usage_report(c, by, since, until, key, POSTGRES)

    def recent_usage(self, key_id: str, limit: int) -> list[UsageRow]:
        """A key's newest `limit` ledger rows, newest first."""
        with self._read() as c:
            rows = c.execute(
                f"SELECT {USAGE_COLUMNS} FROM usage WHERE key_id = %s"
                " ORDER BY created_at DESC LIMIT %s",
                (key_id, limit),
            ).fetchall()
        return [UsageRow(*r) for r in rows]

    def usage_summary(
        self, key_id: str, since: float | None = None, until: float | None = None
    ) -> UsageSummary:
        """Requests, tokens and cost of a key over [since, until), per model and status."""
        where = (
            "key_id = %s AND (%s::float8 IS NULL OR created_at >= %s::float8)"
            " AND (%s::float8 IS NULL OR created_at < %s::float8)"
        )
        args = (key_id, since, since, until, until)
        total = ModelUsage()
        by_model: dict[str, ModelUsage] = {}
        by_status: dict[str, int] = {}
        with self._read() as c:
            for model, *sums in c.execute(
                "SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),"
                f" SUM(cached_tokens), SUM(cost_micros) FROM usage WHERE {where}"
                " GROUP BY model",
                args,
            ).fetchall():
                n, prompt, completion, cached, cost = (int(v) for v in sums)
                by_model[model] = ModelUsage(n, prompt, completion, cached, cost)
                total.requests += n
                total.prompt_tokens += prompt
                total.completion_tokens += completion
                total.cached_tokens += cached
                total.cost_micros += cost
            for status, n in c.execute(
                f"SELECT status, COUNT(*) FROM usage WHERE {where} GROUP BY status", args
            ).fetchall():
                by_status[status] = int(n)
        return UsageSummary(key_id, since, until, total, by_model, by_status)


class AsyncPostgres(AsyncStore):
    """A `PostgresStore` for trio code: each call in a worker thread, at most
    `pool_size` at once. A cancelled call returns at once; its thread finishes on its
    own (bounded by the statement timeout) and gives its connection back."""

    store: PostgresStore
    kind = "PostgreSQL"
    shared = True

    def __init__(self, store: PostgresStore, *, concurrency: int = 4) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(concurrency)

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 4, timeout_s: float = 5.0) -> AsyncPostgres:
        """A started store on `url`."""
        db = cls(
            PostgresStore(url, pool_size=pool_size, timeout_s=timeout_s), concurrency=pool_size
        )
        await db.start()
        return db

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.store.open)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await trio.to_thread.run_sync(
                partial(fn, *args, **kwargs), limiter=self._limiter, abandon_on_cancel=True
            )
        except psycopg.Error as e:  # raised outside the store's own wrapping
            raise StoreError(f"{self.store.where}: {e}") from e

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.store.close)

    async def watch_keys(self, wake: Callable[[], None]) -> None:
        """LISTEN on the keys channel in a thread of its own and call `wake()` (on the
        trio loop) for every notification, and after each (re)connection: changes made
        while it was not listening are caught up by the refresh that follows."""
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()

        def notify() -> None:
            try:
                token.run_sync_soon(wake)
            except trio.RunFinishedError:
                stop.set()

        try:
            await trio.to_thread.run_sync(
                self._listen, notify, stop, limiter=trio.CapacityLimiter(1), abandon_on_cancel=True
            )
        finally:
            stop.set()  # the thread sees it within LISTEN_POLL_S

    def _listen(self, notify: Callable[[], None], stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                with psycopg.connect(self.store.url, **_connect_kwargs(self.store.timeout_s)) as c:
                    c.execute(f"LISTEN {CHANNEL}")
                    failures = 0
                    notify()
                    while not stop.is_set():
                        for _ in c.notifies(timeout=LISTEN_POLL_S):
                            notify()
            except psycopg.Error as e:
                failures += 1
                if failures == 1:
                    log.warning("key change listener lost %s: %s; polling", self.store.where, e)
                stop.wait(RECONNECT_S)
