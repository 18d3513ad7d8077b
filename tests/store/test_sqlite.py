"""The SQLite store, its trio wrapper and the managed-key cache."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from gateway.auth.cache import ManagedKeyStore, principal_of
from gateway.auth.keys import format_key, new_key, parse_key
from gateway.auth.manage import key_json
from gateway.auth.principal import Authenticator, StaticKeyStore
from gateway.config import KeyConfig
from gateway.errors import AuthenticationFailed
from gateway.store.periods import period_bounds
from gateway.store.records import (
    MAX_LIMIT,
    MAX_MICROS,
    KeyRecord,
    NewKey,
    RefusalCount,
    StoreError,
    Topup,
    UsageRow,
)
from gateway.store.sqlite import SCHEMA_VERSION, AsyncSqlite, SqliteStore

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC).timestamp()


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def row(
    request_id: str, key_id: str | None, cost: int, *, status: str = "ok", **kw: object
) -> UsageRow:
    values: dict[str, object] = {
        "request_id": request_id,
        "key_id": key_id,
        "model": "gpt-test",
        "provider": "fake",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "cost_micros": cost,
        "status": status,
        "latency_ms": 12,
        "created_at": NOW,
    }
    values.update(kw)
    return UsageRow(**values)  # type: ignore[arg-type]


async def wait_for(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Poll until `predicate()` holds: a change made elsewhere sends no event."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("not reached in time")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "gateway.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db_path)
    yield s
    s.close()


@pytest.fixture
async def adb(db_path: Path) -> AsyncIterator[AsyncSqlite]:
    db = await AsyncSqlite.open(db_path)
    yield db
    await db.aclose()


# ------------------------------------------------------------------- periods


def test_period_bounds_are_calendar_utc() -> None:
    assert period_bounds("day", ts(2026, 3, 15, 23, 59, 59)) == (ts(2026, 3, 15), ts(2026, 3, 16))
    assert period_bounds("day", ts(2026, 3, 16)) == (ts(2026, 3, 16), ts(2026, 3, 17))
    assert period_bounds("month", ts(2026, 2, 28, 23)) == (ts(2026, 2, 1), ts(2026, 3, 1))
    assert period_bounds("month", ts(2026, 12, 31, 23)) == (ts(2026, 12, 1), ts(2027, 1, 1))
    with pytest.raises(ValueError):
        period_bounds("week", NOW)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- keys


def test_database_is_wal_and_versioned(store: SqliteStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(db_path)


# The usage table as the first release (schema version 1) created it.
V1_USAGE = """
CREATE TABLE usage (
    request_id TEXT PRIMARY KEY, key_id TEXT, model TEXT NOT NULL, provider TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL, status TEXT NOT NULL,
    latency_ms INTEGER NOT NULL, created_at REAL NOT NULL
)
"""


def test_a_version_1_file_gains_the_routing_columns_and_keeps_its_rows(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute(V1_USAGE)
    conn.execute("INSERT INTO usage VALUES ('old', 'k', 'm', 'p', 1, 2, 0, 30, 'ok', 5, ?)", (NOW,))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteStore(db_path)
    try:
        store.write_usage([row("new", "k", 70, deployment="openai/gpt-4o", attempts=2)])
        stored = store._stored_rows(["old", "new"])
        assert (stored["old"].deployment, stored["old"].attempts) == ("", 1)
        assert (stored["new"].deployment, stored["new"].attempts) == ("openai/gpt-4o", 2)
        assert store.cost_between("k", None, None) == 100
    finally:
        store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()
    SqliteStore(db_path).close()  # opening it again changes nothing


def test_a_journal_row_written_before_routing_still_reads() -> None:
    old = {f: getattr(row("r", None, 1), f) for f in ("request_id", "key_id", "model")}
    old.update(
        provider="p",
        prompt_tokens=1,
        completion_tokens=1,
        cached_tokens=0,
        cost_micros=1,
        status="ok",
        latency_ms=1,
        created_at=NOW,
    )
    parsed = UsageRow.from_dict(old)
    assert (parsed.deployment, parsed.attempts) == ("", 1)
    with pytest.raises(ValueError, match="attempts"):
        UsageRow.from_dict({**old, "attempts": 0})


def test_a_schema_1_file_gains_the_request_id_column(db_path: Path) -> None:
    """A ledger written before x_request_id was kept opens, keeps its rows, and takes
    rows with the request id from then on."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(
        """
        CREATE TABLE usage (request_id TEXT PRIMARY KEY, key_id TEXT, model TEXT NOT NULL,
            provider TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
            cost_micros INTEGER NOT NULL, status TEXT NOT NULL, latency_ms INTEGER NOT NULL,
            created_at REAL NOT NULL);
        INSERT INTO usage VALUES ('chatcmpl-old', 'k', 'm', 'p', 1, 2, 0, 30, 'ok', 5, 1.0);
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    store = SqliteStore(db_path)
    new = UsageRow("chatcmpl-new", "k", "m", "p", 1, 2, 0, 30, "ok", 5, 2.0, x_request_id="r-1")
    store.write_usage([new])
    assert store.cost_between("k", None, None) == 60
    store.close()
    conn = sqlite3.connect(db_path)
    rows = conn.execute("SELECT request_id, x_request_id FROM usage ORDER BY created_at").fetchall()
    assert rows == [("chatcmpl-old", None), ("chatcmpl-new", "r-1")]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()
    SqliteStore(db_path).close()  # opening again changes nothing


def test_a_journal_row_without_the_request_id_still_reads() -> None:
    from gateway.billing.ledger import read_journal

    old = (
        b'{"request_id":"chatcmpl-1","key_id":null,"model":"m","provider":"p",'
        b'"prompt_tokens":1,"completion_tokens":2,"cached_tokens":0,"cost_micros":3,'
        b'"status":"ok","latency_ms":4,"created_at":5.0}\n'
    )
    (row,) = read_journal(old)
    assert row.x_request_id is None and row.cost_micros == 3


def test_create_stores_only_the_hash(store: SqliteStore, db_path: Path) -> None:
    spec = NewKey(
        "alice",
        models=("gpt-test", "openai/*"),
        rpm=60,
        tpm=1000,
        spend_limit_micros=5_000_000,
        spend_period="day",
        credit_micros=2_000_000,
        expires_at=NOW + 86400,
    )
    record, full_key = store.create_key(spec, NOW, new_key())
    parsed = parse_key(full_key)
    assert parsed is not None and parsed[0] == record.key_id
    assert record.models == ("gpt-test", "openai/*")
    assert (record.rpm, record.tpm) == (60, 1000)
    assert (record.spend_limit_micros, record.spend_period, record.prepaid) == (
        5_000_000,
        "day",
        True,
    )
    assert store.get_key(record.key_id) == record
    store.close()
    raw = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    assert full_key.encode() not in raw
    assert parsed[1].encode() not in raw
    assert full_key not in repr(record)
    assert "secret" not in str(key_json(record, NOW))
    assert full_key not in str(key_json(record, NOW))


def test_key_principal_carries_scope_and_limits(store: SqliteStore) -> None:
    spec = NewKey(
        "team", models=("fast", "openai/*"), rpm=5, spend_limit_micros=9, spend_period="month"
    )
    record, _ = store.create_key(spec, NOW, new_key())
    p = principal_of(record)
    assert p.name == "team" and p.key_id == record.key_id
    assert p.may_use("fast") and p.may_use("openai/gpt-4o") and not p.may_use("slow")
    assert p.limits is not None
    assert (p.limits.rpm, p.limits.tpm, p.limits.spend_limit_micros) == (5, None, 9)
    assert (p.limits.spend_period, p.limits.prepaid) == ("month", False)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (NewKey(""), "name"),
        (NewKey("a\nb"), "name"),
        (NewKey("x" * 201), "name"),
        (NewKey("a", models=("",)), "models"),
        (NewKey("a", rpm=0), "rpm"),
        (NewKey("a", rpm=MAX_LIMIT + 1), "rpm"),
        (NewKey("a", credit_micros=MAX_MICROS + 1), "credit_micros"),
        (NewKey("a", tpm=True), "tpm"),
        (NewKey("a", spend_limit_micros=-1, spend_period="day"), "spend_limit_micros"),
        (NewKey("a", spend_limit_micros=10), "spend_period"),
        (NewKey("a", spend_period="day"), "spend_period"),
        (NewKey("a", spend_limit_micros=1, spend_period="week"), "spend_period"),  # type: ignore[arg-type]
        (NewKey("a", credit_micros=1.5), "credit_micros"),  # type: ignore[arg-type]
        (NewKey("a", expires_at="soon"), "expires_at"),  # type: ignore[arg-type]
        (NewKey("a", expires_at=float("inf")), "expires_at"),
    ],
)
def test_invalid_specs_name_the_field(store: SqliteStore, spec: NewKey, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        store.create_key(spec, NOW, new_key())
    assert store.list_keys() == []


def test_versions_follow_commit_order_across_connections(store: SqliteStore, db_path: Path) -> None:
    other = SqliteStore(db_path)  # the CLI, in another process
    a, _ = store.create_key(NewKey("a"), NOW, new_key())
    b, _ = other.create_key(NewKey("b"), NOW - 100, new_key())  # an older clock does not matter
    assert b.version > a.version
    revoked = other.revoke_key(a.key_id, NOW + 1)
    assert revoked is not None and revoked.version > b.version
    assert [r.name for r in store.keys_changed_since(a.version)] == ["b", "a"]
    assert store.keys_changed_since(revoked.version) == []
    other.close()


def test_revoke_is_idempotent_and_unknown_is_none(store: SqliteStore) -> None:
    record, _ = store.create_key(NewKey("a"), NOW, new_key())
    first = store.revoke_key(record.key_id, NOW + 1)
    again = store.revoke_key(record.key_id, NOW + 2)
    assert first is not None and again is not None
    assert first.revoked_at == again.revoked_at == NOW + 1
    assert first.version == again.version
    assert store.revoke_key("nosuchkey000", NOW) is None


# -------------------------------------------------------------------- credit


def test_topups_and_credit_balance(store: SqliteStore) -> None:
    prepaid, _ = store.create_key(NewKey("p", credit_micros=1_000), NOW, new_key())
    postpaid, _ = store.create_key(NewKey("q"), NOW, new_key())
    assert store.credit_balance(prepaid.key_id) == 1_000
    t = store.add_topup(prepaid.key_id, 500, NOW, "more")
    store.write_usage([row("r1", prepaid.key_id, 300), row("r2", postpaid.key_id, 7)])
    assert store.credit_balance(prepaid.key_id) == 1_200
    assert store.credit_snapshot(prepaid.key_id) == (1_200, t.topup_id)
    with pytest.raises(ValueError, match="not prepaid"):
        store.add_topup(postpaid.key_id, 5, NOW)
    with pytest.raises(KeyError):
        store.add_topup("nosuchkey000", 5, NOW)
    for bad in (0, -5, True):
        with pytest.raises(ValueError):
            store.add_topup(prepaid.key_id, bad, NOW)
    assert [x.micros for x in store.topups_since(0)] == [1_000, 500]
    assert store.topups_since(t.topup_id) == []
    assert store.last_topup_id() == t.topup_id


def test_a_prepaid_key_with_zero_credit_has_no_initial_topup(store: SqliteStore) -> None:
    record, _ = store.create_key(NewKey("z", credit_micros=0), NOW, new_key())
    assert record.prepaid
    assert store.topups_since(0) == []
    assert store.credit_balance(record.key_id) == 0


# --------------------------------------------------------------------- usage


def test_final_rows_replace_pending_rows_and_are_never_replaced(store: SqliteStore) -> None:
    store.write_usage([row("r1", "k", 900, status="pending")])
    assert store.cost_between("k", None, None) == 900
    store.write_usage([row("r1", "k", 250, status="ok", completion_tokens=40)])
    assert store.cost_between("k", None, None) == 250
    # A replayed journal (pending then final again) changes nothing.
    store.write_usage([row("r1", "k", 900, status="pending"), row("r1", "k", 1, status="ok")])
    assert store.cost_between("k", None, None) == 250
    summary = store.usage_summary("k")
    assert summary.total.requests == 1
    assert summary.total.completion_tokens == 40


def test_spend_counts_the_calendar_period(store: SqliteStore) -> None:
    store.write_usage(
        [
            row("a", "k", 1, created_at=ts(2026, 2, 28, 23, 59, 59)),
            row("b", "k", 10, created_at=ts(2026, 3, 1)),
            row("c", "k", 100, created_at=ts(2026, 3, 15, 23, 59, 59)),
            row("d", "k", 1000, created_at=ts(2026, 3, 16)),
            row("e", "other", 10000, created_at=ts(2026, 3, 16)),
            row("f", None, 100000, created_at=ts(2026, 3, 16)),
        ]
    )
    assert store.spent_in_period("k", "day", ts(2026, 3, 15, 8)) == 100
    assert store.spent_in_period("k", "day", ts(2026, 3, 16, 8)) == 1000
    assert store.spent_in_period("k", "month", ts(2026, 3, 20)) == 1110
    assert store.spent_in_period("k", "month", ts(2026, 2, 2)) == 1
    assert store.spent_in_period("k", "month", ts(2026, 4, 1)) == 0


def test_pending_rows_merge_exactly_like_the_upsert(store: SqliteStore) -> None:
    store.write_usage([row("r1", "k", 900, status="pending"), row("r2", "k", 50)])
    pending = [
        row("r1", "k", 200),  # will replace the stored pending row
        row("r2", "k", 999),  # r2 is final already: ignored
        row("r3", "k", 30, status="pending"),
        row("r3", "k", 7),  # final after pending, both journaled
        row("r4", "k", 5, created_at=ts(2026, 2, 1)),  # outside the day
    ]
    expected_day = 200 + 50 + 7
    assert store.spent_in_period("k", "day", NOW, pending) == expected_day
    assert store.cost_between("k", None, None, pending) == expected_day + 5
    store.write_usage(pending)
    assert store.spent_in_period("k", "day", NOW) == expected_day
    assert store.cost_between("k", None, None) == expected_day + 5


def test_usage_summary_by_model_and_status(store: SqliteStore) -> None:
    store.write_usage(
        [
            row("1", "k", 10, model="a", prompt_tokens=100, cached_tokens=40),
            row("2", "k", 20, model="a", status="client_gone"),
            row("3", "k", 30, model="b", status="upstream_error"),
            row("4", "k", 40, model="b", created_at=NOW - 86400 * 40),
            row("5", "other", 50, model="b"),
        ]
    )
    summary = store.usage_summary("k", *period_bounds("month", NOW))
    assert summary.total.requests == 3
    assert summary.total.cost_micros == 60
    assert summary.total.prompt_tokens == 120
    assert summary.total.cached_tokens == 40
    assert summary.by_model["a"].requests == 2 and summary.by_model["b"].cost_micros == 30
    assert summary.by_status == {"client_gone": 1, "ok": 1, "upstream_error": 1}
    everything = store.usage_summary("k").to_dict()
    assert everything["requests"] == 4 and everything["cost_micros"] == 100
    assert list(everything["by_model"]) == ["a", "b"]


def test_usage_row_from_dict_checks_every_field() -> None:
    good = row("r", "k", 1)
    data = {f: getattr(good, f) for f in good.__dataclass_fields__}
    assert UsageRow.from_dict(data) == good
    for field, bad in [
        ("request_id", 5),
        ("key_id", 5),
        ("cost_micros", -1),
        ("prompt_tokens", 1.5),
        ("latency_ms", "x"),
        ("created_at", True),
    ]:
        with pytest.raises(ValueError, match=field):
            UsageRow.from_dict({**data, field: bad})
    with pytest.raises(ValueError, match="status"):
        UsageRow.from_dict({k: v for k, v in data.items() if k != "status"})
    with pytest.raises(ValueError, match="key_name"):
        UsageRow.from_dict({**data, "key_name": 5})
    # A journal written before key_name existed still replays.
    old = {k: v for k, v in data.items() if k != "key_name"}
    assert UsageRow.from_dict(old) == good


VERSION_1 = """
CREATE TABLE keys (
    key_id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash BLOB NOT NULL, models TEXT,
    rpm INTEGER, tpm INTEGER, spend_limit_micros INTEGER,
    spend_period TEXT CHECK (spend_period IN ('day', 'month')),
    prepaid INTEGER NOT NULL DEFAULT 0, expires_at REAL, revoked_at REAL,
    created_at REAL NOT NULL, version INTEGER NOT NULL
);
CREATE UNIQUE INDEX keys_version ON keys (version);
CREATE TABLE topups (
    topup_id INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL REFERENCES keys (key_id),
    micros INTEGER NOT NULL, note TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL
);
CREATE TABLE usage (
    request_id TEXT PRIMARY KEY, key_id TEXT, model TEXT NOT NULL, provider TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL, status TEXT NOT NULL,
    latency_ms INTEGER NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX usage_key_time ON usage (key_id, created_at);
PRAGMA user_version = 1;
INSERT INTO usage VALUES ('old', NULL, 'a', 'p', 10, 5, 0, 7, 'ok', 3, 1774000000.0);
"""


def test_a_version_1_file_gains_key_names_and_refusals_in_place(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(VERSION_1)
    conn.close()
    store = SqliteStore(db_path)
    assert store.usage_summary("x").total.requests == 0
    store.write_usage([row("new", None, 3, key_name="ops", model="a")])
    [line] = store.usage_report("model")
    assert (line.group, line.totals.requests, line.totals.cost_micros) == ("a", 2, 10)
    by_key = {(line.group, line.name): line.totals.requests for line in store.usage_report("key")}
    assert by_key == {(None, None): 1, (None, "ops"): 1}  # the old row has no name
    store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()
    SqliteStore(db_path).close()  # opening it again changes nothing


def test_refusals_add_up_per_minute_and_join_the_report(store: SqliteStore) -> None:
    minute = int(NOW) // 60 * 60
    refused = [
        RefusalCount(minute, "", "", "", "", 401, "invalid_api_key", 3),
        RefusalCount(minute, "k1", "alice", "a", "p", 429, "rate_limit_exceeded", 2),
    ]
    store.add_refusals(refused)
    store.add_refusals(refused[1:])  # the same minute again: counts add up
    store.write_usage([row("r1", "k1", 5, model="a"), row("r2", None, 1, status="upstream_error")])
    report = {line.group: line.totals for line in store.usage_report("status")}
    assert report["rate_limit_exceeded"].refused == 4
    assert report["invalid_api_key"].requests == 3
    assert report["upstream_error"].errors == 1 and report["ok"].errors == 0
    days = store.usage_report("day", key="k1")
    assert [(d.group, d.totals.requests, d.totals.refused) for d in days] == [("2026-03-15", 5, 4)]
    assert store.usage_report("model", since=NOW + 60) == []


# ------------------------------------------------------------ async wrapper


async def test_async_calls_run_and_errors_become_store_errors(adb: AsyncSqlite) -> None:
    record, _ = await adb.create_key(NewKey("a"), NOW, new_key())
    assert [r.key_id for r in await adb.list_keys()] == [record.key_id]
    with pytest.raises(StoreError):
        await adb.run(adb.store._conn.execute, "SELECT * FROM no_such_table")
    assert await adb.get_key(record.key_id) == record  # still usable


SLOW_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000)"
    " SELECT COUNT(*) FROM c"
)


async def test_cancelling_a_call_interrupts_its_statement(adb: AsyncSqlite) -> None:
    """Plain sqlite3 in a thread cannot be cancelled; ours interrupts the statement."""
    started = time.monotonic()
    with trio.move_on_after(0.2) as scope:
        await adb.run(lambda: adb.store._conn.execute(SLOW_QUERY).fetchall())
    elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    assert elapsed < 1.5, elapsed  # the query alone runs for tens of seconds
    record, _ = await adb.create_key(NewKey("after"), NOW, new_key())  # the connection still works
    assert await adb.get_key(record.key_id) == record


async def test_a_cancelled_write_is_all_or_nothing(adb: AsyncSqlite) -> None:
    def slow_write() -> None:
        with adb.store._tx() as c:
            c.execute(
                "INSERT INTO usage (request_id, key_id, model, provider, prompt_tokens,"
                " completion_tokens, cached_tokens, cost_micros, status, latency_ms, created_at)"
                " VALUES ('x', 'k', 'm', 'p', 1, 1, 0, 5, 'ok', 1, 0)"
            )
            c.execute(SLOW_QUERY).fetchall()

    with trio.move_on_after(0.2):
        await adb.run(slow_write)
    assert await adb.run(adb.store.cost_between, "k", None, None) == 0
    assert not adb.store._conn.in_transaction
    await adb.write_usage([row("y", "k", 3)])
    assert await adb.run(adb.store.cost_between, "k", None, None) == 3


# ----------------------------------------------------------------- key cache


async def test_lookup_finds_active_keys_only(adb: AsyncSqlite) -> None:
    clock = [NOW]
    cache = ManagedKeyStore(adb, clock=lambda: clock[0])
    rec, full_key = await adb.create_key(
        NewKey("alice", rpm=3, expires_at=NOW + 60), NOW, new_key()
    )
    assert cache.lookup(full_key) is None  # not loaded yet
    assert await cache.refresh() == 1
    principal = cache.lookup(full_key)
    assert principal is not None and principal.key_id == rec.key_id and principal.name == "alice"
    key_id, _ = parse_key(full_key)  # type: ignore[misc]
    assert cache.lookup(format_key(key_id, new_key().full_key[19:62])) is None  # wrong secret
    assert cache.lookup(new_key().full_key) is None  # unknown id
    assert cache.lookup("sk-test-all-0123456789") is None  # not ours: the next store decides
    assert cache.lookup(full_key[:-1] + ("a" if full_key[-1] != "a" else "b")) is None

    clock[0] = NOW + 60
    with pytest.raises(AuthenticationFailed, match="expired") as info:
        cache.lookup(full_key)
    assert info.value.http_status == 401
    clock[0] = NOW
    await adb.revoke_key(rec.key_id, NOW)
    await cache.refresh()
    with pytest.raises(AuthenticationFailed, match="revoked") as info:
        cache.lookup(full_key)
    assert full_key not in info.value.message


async def test_a_row_the_limiter_cannot_take_disables_only_that_key(
    adb: AsyncSqlite, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ManagedKeyStore(adb)
    bad, bad_key = await adb.create_key(NewKey("bad"), NOW, new_key())
    _, good_key = await adb.create_key(NewKey("good"), NOW, new_key())
    await cache.refresh()
    assert cache.lookup(bad_key) is not None
    await adb.run(  # edited by hand, past the limiter's bounds
        adb.store._conn.execute,
        "UPDATE keys SET rpm = 0, version = 99 WHERE key_id = ?",
        (bad.key_id,),
    )
    await cache.refresh()
    assert cache.lookup(bad_key) is None
    assert cache.lookup(good_key) is not None
    assert any("unusable" in r.message for r in caplog.records)


async def test_authenticator_tries_managed_then_config_keys(adb: AsyncSqlite) -> None:
    cache = ManagedKeyStore(adb)
    _, full_key = await adb.create_key(NewKey("managed"), NOW, new_key())
    await cache.refresh()
    auth = Authenticator([cache, StaticKeyStore([KeyConfig(name="cfg", key="sk-cfg-123")])])
    assert auth.authenticate(b"Bearer " + full_key.encode()).name == "managed"
    assert auth.authenticate(b"Bearer sk-cfg-123").name == "cfg"
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(b"Bearer " + new_key().full_key.encode())


async def test_refresher_sees_another_process_within_an_interval(
    adb: AsyncSqlite, db_path: Path
) -> None:
    seen: list[Topup] = []

    async def on_topup(t: Topup) -> None:
        seen.append(t)

    before, _ = await adb.create_key(NewKey("old", credit_micros=100), NOW, new_key())
    cache = ManagedKeyStore(adb, on_topup=on_topup, refresh_interval_s=0.05)
    cli = SqliteStore(db_path)  # another process's connection
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run_refresher)
            assert cache.get(before.key_id) is not None
            assert seen == []  # existing credit is seeded from the ledger, not replayed
            rec, full_key = await trio.to_thread.run_sync(
                cli.create_key, NewKey("cli"), NOW, new_key()
            )
            await wait_for(lambda: cache.lookup(full_key) is not None)
            await trio.to_thread.run_sync(cli.add_topup, before.key_id, 5, NOW)
            await trio.to_thread.run_sync(cli.revoke_key, rec.key_id, NOW)
            await wait_for(lambda: cache.get(rec.key_id).revoked_at is not None)  # type: ignore[union-attr]
            with pytest.raises(AuthenticationFailed, match="revoked"):
                cache.lookup(full_key)
            await wait_for(lambda: bool(seen))  # top-ups are read after keys in a refresh
            assert [(t.key_id, t.micros) for t in seen] == [(before.key_id, 5)]
            nursery.cancel_scope.cancel()
    finally:
        cli.close()
    assert len(cache) == 2


async def test_a_failed_topup_callback_is_retried(adb: AsyncSqlite) -> None:
    calls: list[int] = []

    async def flaky(t: Topup) -> None:
        calls.append(t.topup_id)
        if len(calls) == 1:
            raise RuntimeError("limiter down")

    rec, _ = await adb.create_key(NewKey("p", credit_micros=0), NOW, new_key())
    cache = ManagedKeyStore(adb, on_topup=flaky)
    await cache.refresh()
    t = await adb.add_topup(rec.key_id, 10, NOW)
    with pytest.raises(RuntimeError):
        await cache.refresh()
    await cache.refresh()
    await cache.refresh()
    assert calls == [t.topup_id, t.topup_id]


async def test_refresher_survives_store_errors_and_bugs(adb: AsyncSqlite) -> None:
    class Flaky:
        fail: Exception | None = None

        async def keys_changed_since(self, version: int) -> list[KeyRecord]:
            if self.fail is not None:
                raise self.fail
            return await adb.keys_changed_since(version)

        async def topups_since(self, topup_id: int) -> list[Topup]:
            return await adb.topups_since(topup_id)

        async def last_topup_id(self) -> int:
            return await adb.last_topup_id()

    source = Flaky()
    cache = ManagedKeyStore(source, refresh_interval_s=0.02)
    _, first = await adb.create_key(NewKey("a"), NOW, new_key())
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run_refresher)
        for error in (StoreError("database is locked"), RuntimeError("a bug")):
            source.fail = error

            def failed_twice(target: int = cache.refresh_failures + 2) -> bool:
                return cache.refresh_failures >= target

            await wait_for(failed_twice)
            assert cache.lookup(first) is not None  # the cache keeps serving
        _, second = await adb.create_key(NewKey("b"), NOW, new_key())
        source.fail = None
        await wait_for(lambda: cache.lookup(second) is not None)
        nursery.cancel_scope.cancel()


async def test_the_first_load_must_succeed(adb: AsyncSqlite) -> None:
    await adb.aclose()  # closing again at teardown is harmless
    with pytest.raises(StoreError):
        await ManagedKeyStore(adb).run_refresher()


async def test_recent_usage_is_a_keys_newest_rows_first(adb: AsyncSqlite) -> None:
    rows = [row(f"chatcmpl-{i}", "k1", i, created_at=NOW + i) for i in range(5)]
    await adb.write_usage([*rows, row("chatcmpl-other", "k2", 9, created_at=NOW + 9)])
    recent = await adb.recent_usage("k1", 3)
    assert [r.request_id for r in recent] == ["chatcmpl-4", "chatcmpl-3", "chatcmpl-2"]
    assert recent[0] == rows[4]
    assert await adb.recent_usage("nobody", 3) == []
