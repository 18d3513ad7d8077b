"""The store interface's suite: every test runs on SQLite and on PostgreSQL.

What the rest of the gateway asks of a store (gateway/store/base.py) must hold the same
on both backends: keys and their versions, top-ups and credit, the ledger's upsert
rule, spend, reports, and the key cache on top. Backend-specific matters (SQLite's file
migrations and interrupts, PostgreSQL's migrations and notifications) have their own
files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.auth.cache import ManagedKeyStore, principal_of
from gateway.auth.keys import format_key, new_key, parse_key
from gateway.auth.principal import Authenticator, StaticKeyStore
from gateway.config import KeyConfig
from gateway.errors import AuthenticationFailed
from gateway.store.base import AsyncStore, RowQuery, Store
from gateway.store.periods import period_bounds
from gateway.store.records import (
    MAX_LIMIT,
    MAX_MICROS,
    KeyRecord,
    NewKey,
    RefusalCount,
    StoreError,
    Topup,
)
from gateway.store.reports import POSTGRES, SQLITE, usage_report
from gateway.store.sqlite import AsyncSqlite, SqliteStore
from tests.store.test_sqlite import NOW, row, ts, wait_for


@dataclass
class Backend:
    """How a test reaches its database: `open` a new connection to it (another
    process, the CLI), `open_async` the server's wrapper."""

    name: str
    open: Callable[[], Store]
    open_async: Callable[[], Awaitable[AsyncStore]]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "state" / "gateway.sqlite3"
        return Backend("sqlite", lambda: SqliteStore(path), lambda: AsyncSqlite.open(path))
    from gateway.store.postgres import AsyncPostgres, PostgresStore

    url: str = request.getfixturevalue("pg_url")
    return Backend("postgres", lambda: PostgresStore.connect(url), lambda: AsyncPostgres.open(url))


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()


@pytest.fixture
async def adb(backend: Backend) -> AsyncIterator[AsyncStore]:
    db = await backend.open_async()
    yield db
    await db.aclose()


def test_key_principal_carries_scope_and_limits(store: Store) -> None:
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
def test_invalid_specs_name_the_field(store: Store, spec: NewKey, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        store.create_key(spec, NOW, new_key())
    assert store.list_keys() == []


def test_versions_follow_commit_order_across_connections(store: Store, backend: Backend) -> None:
    other = backend.open()  # the CLI, in another process
    a, _ = store.create_key(NewKey("a"), NOW, new_key())
    b, _ = other.create_key(NewKey("b"), NOW - 100, new_key())  # an older clock does not matter
    assert b.version > a.version
    revoked = other.revoke_key(a.key_id, NOW + 1)
    assert revoked is not None and revoked.version > b.version
    assert [r.name for r in store.keys_changed_since(a.version)] == ["b", "a"]
    assert store.keys_changed_since(revoked.version) == []
    other.close()


def test_revoke_is_idempotent_and_unknown_is_none(store: Store) -> None:
    record, _ = store.create_key(NewKey("a"), NOW, new_key())
    first = store.revoke_key(record.key_id, NOW + 1)
    again = store.revoke_key(record.key_id, NOW + 2)
    assert first is not None and again is not None
    assert first.revoked_at == again.revoked_at == NOW + 1
    assert first.version == again.version
    assert store.revoke_key("nosuchkey000", NOW) is None


def test_topups_and_credit_balance(store: Store) -> None:
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


def test_a_prepaid_key_with_zero_credit_has_no_initial_topup(store: Store) -> None:
    record, _ = store.create_key(NewKey("z", credit_micros=0), NOW, new_key())
    assert record.prepaid
    assert store.topups_since(0) == []
    assert store.credit_balance(record.key_id) == 0


def test_final_rows_replace_pending_rows_and_are_never_replaced(store: Store) -> None:
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


def test_spend_counts_the_calendar_period(store: Store) -> None:
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


def test_pending_rows_merge_exactly_like_the_upsert(store: Store) -> None:
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


def test_a_budget_view_lists_the_rows_asked_for_merged_like_the_upsert(store: Store) -> None:
    """One snapshot: top-ups, all costs, the day's, and the rows named by time (recent;
    pending and less recent) or by id, with journaled rows merged in."""
    key, _ = store.create_key(NewKey("p", credit_micros=1_000), NOW, new_key())
    k = key.key_id
    hour = 3600.0
    store.write_usage(
        [
            row("old-final", k, 1, created_at=NOW - 5 * hour),
            row("old-pending", k, 2, status="pending", created_at=NOW - 5 * hour),
            row("ancient-pending", k, 4, status="pending", created_at=ts(2026, 3, 1)),
            row("mid-final", k, 8, created_at=NOW - hour),
            row("mid-pending", k, 16, status="pending", created_at=NOW - hour),
            row("recent", k, 32, status="pending", created_at=NOW - 10),
            row("other-key", "k2", 64, created_at=NOW - 10),
        ]
    )
    journal = [
        row("recent", k, 30, created_at=NOW - 10),  # its final row, not yet written
        row("fresh", k, 128, status="pending", created_at=NOW - 1),
    ]
    q = RowQuery(
        "day", NOW, since=NOW - 60, pending_since=NOW - 2 * hour, request_ids=("old-final",)
    )
    view = store.budget_view(k, q, journal)
    assert (view.topups_micros, view.last_topup_id > 0) == (1_000, True)
    assert view.cost_micros == 1 + 2 + 4 + 8 + 16 + 30 + 128
    assert view.period_cost_micros == 1 + 2 + 8 + 16 + 30 + 128  # not March 1st's
    listed = {r.request_id: (r.status, r.cost_micros) for r in view.rows}
    assert listed == {
        "old-final": ("ok", 1),  # by id
        "mid-pending": ("pending", 16),  # pending since 2 h
        "recent": ("ok", 30),  # since 60 s, the journal's final row
        "fresh": ("pending", 128),  # only in the journal
    }
    ids = ("mid-final", "other-key")
    by_id = store.budget_view(k, RowQuery(None, NOW, request_ids=ids, credit=False))
    assert [r.request_id for r in by_id.rows] == ["mid-final"]  # another key's row is not
    assert (by_id.topups_micros, by_id.cost_micros, by_id.period_cost_micros) == (0, 0, 0)


class Explained:
    """A connection that explains each query instead of running it (no rows back)."""

    def __init__(self, c: Any, prefix: str) -> None:
        self.c, self.prefix = c, prefix
        self.plan: list[str] = []

    def execute(self, sql: Any, params: Any = ()) -> Explained:
        self.plan += [str(r[-1]) for r in self.c.execute(self.prefix + sql, params).fetchall()]
        return self

    def fetchall(self) -> list[Any]:
        return []


@pytest.mark.parametrize("key", ["k1", "config-key-name"])
def test_one_keys_usage_report_reads_indexes_not_whole_tables(
    store: Store, backend: Backend, key: str
) -> None:
    """A managed key's id or a config key's name: either way every table is read
    through an index (PostgreSQL told to avoid sequential scans, as it would on a big
    ledger)."""
    store.write_usage([row(f"r{i}", "k1" if i % 2 else None, i) for i in range(20)])
    store.add_refusals([RefusalCount(60, "k1", "n", "m", "p", 429, "rpm", 1)])
    with store._read() as c:  # type: ignore[attr-defined]
        if backend.name == "postgres":
            c.execute("SET LOCAL enable_seqscan = off")
            explained = Explained(c, "EXPLAIN ")
            dialect = POSTGRES
        else:
            explained = Explained(c, "EXPLAIN QUERY PLAN ")
            dialect = SQLITE
        usage_report(explained, "model", key=key, dialect=dialect)
        usage_report(explained, "model", since=NOW - 86400, key=key, dialect=dialect)
    plan = "\n".join(explained.plan)
    for scan in ("SCAN usage", "SCAN refusals", "Seq Scan", "usage_time"):
        assert scan not in plan, plan
    for index in ("usage_key_time", "usage_config_key_time", "refusals_key"):
        assert index in plan, plan


def test_usage_summary_by_model_and_status(store: Store) -> None:
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


def test_refusals_add_up_per_minute_and_join_the_report(store: Store) -> None:
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


async def test_lookup_finds_active_keys_only(adb: AsyncStore) -> None:
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


async def test_authenticator_tries_managed_then_config_keys(adb: AsyncStore) -> None:
    cache = ManagedKeyStore(adb)
    _, full_key = await adb.create_key(NewKey("managed"), NOW, new_key())
    await cache.refresh()
    auth = Authenticator([cache, StaticKeyStore([KeyConfig(name="cfg", key="sk-cfg-123")])])
    assert auth.authenticate(b"Bearer " + full_key.encode()).name == "managed"
    assert auth.authenticate(b"Bearer sk-cfg-123").name == "cfg"
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(b"Bearer " + new_key().full_key.encode())


async def test_refresher_sees_another_process_within_an_interval(
    adb: AsyncStore, backend: Backend
) -> None:
    seen: list[Topup] = []

    async def on_topup(t: Topup) -> None:
        seen.append(t)

    before, _ = await adb.create_key(NewKey("old", credit_micros=100), NOW, new_key())
    cache = ManagedKeyStore(adb, on_topup=on_topup, refresh_interval_s=0.05)
    cli = backend.open()  # another process's connection
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


async def test_a_failed_topup_callback_is_retried(adb: AsyncStore) -> None:
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


async def test_refresher_survives_store_errors_and_bugs(adb: AsyncStore) -> None:
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


async def test_the_first_load_must_succeed(adb: AsyncStore) -> None:
    await adb.aclose()  # closing again at teardown is harmless
    with pytest.raises(StoreError):
        await ManagedKeyStore(adb).run_refresher()


async def test_recent_usage_is_a_keys_newest_rows_first(adb: AsyncStore) -> None:
    rows = [row(f"chatcmpl-{i}", "k1", i, created_at=NOW + i) for i in range(5)]
    await adb.write_usage([*rows, row("chatcmpl-other", "k2", 9, created_at=NOW + 9)])
    recent = await adb.recent_usage("k1", 3)
    assert [r.request_id for r in recent] == ["chatcmpl-4", "chatcmpl-3", "chatcmpl-2"]
    assert recent[0] == rows[4]
    assert await adb.recent_usage("nobody", 3) == []
