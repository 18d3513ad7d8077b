"""The SQLite store, its trio wrapper and the managed-key cache."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from gateway.auth.cache import ManagedKeyStore
from gateway.auth.keys import new_key, parse_key
from gateway.auth.manage import key_json
from gateway.store.periods import period_bounds
from gateway.store.records import (
    NewKey,
    StoreError,
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


# -------------------------------------------------------------------- credit


# --------------------------------------------------------------------- usage


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
