"""What only PostgreSQL has: migrations, ordering across connections, notifications,
an unreachable server, and `gateway db migrate|copy`. The shared suite is in
test_store.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio

from gateway.__main__ import main
from gateway.auth.cache import ManagedKeyStore
from gateway.auth.keys import new_key, parse_key
from gateway.store.pg_schema import SCHEMA_VERSION
from gateway.store.postgres import AsyncPostgres, PostgresStore
from gateway.store.records import NewKey, RefusalCount, StoreError
from gateway.store.responses import SqliteResponseTable, StoredResponse
from gateway.store.sqlite import SqliteStore
from tests.postgres_server import PostgresServer
from tests.store.test_sqlite import NOW, row, wait_for

_names = iter(range(10**6))


def empty_db(postgres: PostgresServer) -> str:
    return postgres.new_database(f"empty_{time.monotonic_ns()}_{next(_names)}", empty=True)


def test_migrate_then_start_and_refuse_other_versions(
    postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_db(postgres)
    with pytest.raises(StoreError, match="run `gateway db migrate`"):
        PostgresStore.connect(url)
    assert main(["db", "migrate", "--db", url]) == 0
    assert f"schema version {SCHEMA_VERSION}; applied 1" in capsys.readouterr().out
    assert main(["db", "migrate", "--db", url]) == 0
    assert "up to date" in capsys.readouterr().out
    PostgresStore.connect(url).close()
    postgres.execute(
        f"INSERT INTO schema_migrations VALUES ({SCHEMA_VERSION + 1}, 'future', 0)",
        url.rsplit("/", 1)[1],
    )
    with pytest.raises(StoreError, match="newer than this gateway"):
        PostgresStore.connect(url)
    assert main(["db", "migrate", "--db", url]) == 1
    assert "newer than this gateway" in capsys.readouterr().err


def test_concurrent_migrations_apply_once(postgres: PostgresServer) -> None:
    url = empty_db(postgres)
    results: list[list[int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(PostgresStore.migrate_url(url)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(len, results)) == [0, 0, 0, len(range(SCHEMA_VERSION))]


def test_concurrent_writers_keep_versions_and_topup_ids_in_commit_order(pg_url: str) -> None:
    """Watermarks need ids that grow in commit order: 8 connections writing at once get
    distinct, gap-free versions and top-up ids, and no writer fails."""
    store = PostgresStore.connect(pg_url, pool_size=8)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(10):
                record, _ = store.create_key(NewKey("w", credit_micros=5), NOW, new_key())
                store.add_topup(record.key_id, 1, NOW)
                store.revoke_key(record.key_id, NOW)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    keys = store.keys_changed_since(0)
    assert len(keys) == 80
    assert [k.version for k in keys] == sorted({k.version for k in keys})
    topups = store.topups_since(0)
    assert [t.topup_id for t in topups] == list(range(1, 161))
    store.close()


async def test_a_change_elsewhere_is_notified_at_once(pg_url: str) -> None:
    """The cache polls every 30 s here: only the notification can bring the key."""
    db = await AsyncPostgres.open(pg_url)
    other = PostgresStore.connect(pg_url)
    cache = ManagedKeyStore(db, refresh_interval_s=30.0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run_refresher)
            nursery.start_soon(db.watch_keys, cache.wake)
            await trio.sleep(0.3)  # the listener connects
            _, full_key = await trio.to_thread.run_sync(
                other.create_key, NewKey("elsewhere"), NOW, new_key()
            )
            await wait_for(lambda: cache.lookup(full_key) is not None, timeout_s=2.0)
            nursery.cancel_scope.cancel()
    finally:
        other.close()
        await db.aclose()


def test_an_unreachable_server_fails_fast_with_a_store_error(postgres: PostgresServer) -> None:
    from tests.conftest import free_port

    started = time.monotonic()
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        PostgresStore.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_db_copy_moves_a_sqlite_install(
    postgres: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.sqlite3"
    lite = SqliteStore(path)
    prepaid, _ = lite.create_key(NewKey("p", credit_micros=1000), NOW, new_key())
    lite.add_topup(prepaid.key_id, 500, NOW)
    plain, _ = lite.create_key(NewKey("q", rpm=5), NOW, new_key())
    lite.revoke_key(plain.key_id, NOW)
    lite.write_usage([row("r1", prepaid.key_id, 300), row("r2", None, 7, key_name="cfg")])
    minute = int(NOW) // 60 * 60
    lite.add_refusals([RefusalCount(minute, "", "", "", "", 401, "invalid_api_key", 3)])
    kept = StoredResponse("resp_1", prepaid.key_id, NOW, b'{"id": "resp_1"}', b"[]")
    responses = SqliteResponseTable(path)
    responses.put(kept)
    responses.close()
    url = empty_db(postgres)
    assert main(["db", "copy", "--from", f"sqlite:{path}", "--to", url]) == 0
    out = capsys.readouterr().out
    assert "keys: 2 rows copied" in out and "usage: 2 rows copied" in out
    assert "responses: 1 rows copied" in out
    pg = PostgresStore.connect(url)
    with pg.connection() as c:
        [got] = c.execute("SELECT * FROM responses").fetchall()
    assert StoredResponse(*got) == kept
    assert pg.list_keys() == lite.list_keys()
    assert pg.credit_snapshot(prepaid.key_id) == lite.credit_snapshot(prepaid.key_id)
    for by in ("key", "status", "day"):
        assert pg.usage_report(by) == lite.usage_report(by)
    assert pg.keys_changed_since(0)[-1].version == lite.keys_changed_since(0)[-1].version
    # New writes continue the copied versions and ids.
    t = pg.add_topup(prepaid.key_id, 1, NOW)
    assert t.topup_id == lite.last_topup_id() + 1
    assert main(["db", "copy", "--from", f"sqlite:{path}", "--to", url]) == 0
    out = capsys.readouterr().out
    assert "keys: 0 rows copied (2 already there)" in out
    assert "responses: 0 rows copied (1 already there)" in out
    pg.close()
    lite.close()


def test_db_copy_of_a_file_that_never_stored_a_response(
    postgres: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.sqlite3"
    SqliteStore(path).close()  # keys and the ledger, no responses table
    assert main(["db", "copy", "--from", f"sqlite:{path}", "--to", empty_db(postgres)]) == 0
    assert "responses: 0 rows copied" in capsys.readouterr().out


def test_db_copy_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "copy", "--from", str(tmp_path), "--to", "postgresql://x/y"]) == 2
    assert "sqlite:PATH" in capsys.readouterr().err
    assert main(["db", "copy", "--from", f"sqlite:{tmp_path}/no", "--to", "postgresql://x"]) == 2
    assert "no SQLite database" in capsys.readouterr().err
    (tmp_path / "g.sqlite3").touch()
    assert main(["db", "copy", "--from", f"sqlite:{tmp_path}/g.sqlite3", "--to", "x.db"]) == 2
    assert "postgresql://" in capsys.readouterr().err


def test_the_keys_cli_works_on_postgres(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--db", pg_url, "--name", "cli", "--credit", "2"]) == 0
    assert "sk-" in capsys.readouterr().out
    assert main(["keys", "list", "--db", pg_url, "--json"]) == 0
    assert '"name": "cli"' in capsys.readouterr().out
    store = PostgresStore.connect(pg_url)
    [record] = store.list_keys()
    assert store.credit_balance(record.key_id) == 2_000_000
    store.close()
    assert main(["usage", "--db", pg_url]) == 0


def test_every_statement_is_bounded_by_the_timeout(pg_url: str) -> None:
    store = PostgresStore.connect(pg_url, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(StoreError, match="statement timeout"), store._conn() as c:
        c.execute("SELECT pg_sleep(5)")
    assert time.monotonic() - started < 2
    assert store.list_keys() == []  # the pool still serves
    store.close()


def test_only_the_hash_of_a_secret_is_stored(pg_url: str) -> None:
    store = PostgresStore.connect(pg_url)
    record, full_key = store.create_key(NewKey("alice", credit_micros=5), NOW, new_key())
    with store._conn() as c:
        dump = " ".join(
            str(row)
            for table in ("keys", "topups", "usage", "refusals")
            for row in c.execute(f"SELECT * FROM {table}").fetchall()
        )
    parsed = parse_key(full_key)
    assert parsed is not None and record.key_id in dump
    assert full_key not in dump and parsed[1] not in dump
    store.close()


async def test_stored_responses_fail_with_a_store_error_when_the_database_goes(
    postgres: PostgresServer,
) -> None:
    """The routes answer 503 `store_unavailable` on a StoreError: a lost database must
    raise one, within the timeout, not hang or leak psycopg's own errors."""
    from gateway.store.pg_responses import PostgresResponses

    url = postgres.new_database(f"gone_{time.monotonic_ns()}_{next(_names)}")
    db = await AsyncPostgres.open(url, timeout_s=1.0)
    responses = PostgresResponses(db)
    kept = StoredResponse("resp_1", "key:a", NOW, b"{}", b"[]")
    await responses.put(kept)
    assert await responses.get("resp_1", "key:a", 0) == kept
    postgres.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match="gone_"):
            await responses.get("resp_1", "key:a", 0)
        with pytest.raises(StoreError):
            await responses.put(kept)
    finally:
        await responses.aclose()
        await db.aclose()
    assert time.monotonic() - started < 6


async def test_the_retention_sweep_deletes_a_backlog_in_batches(pg_url: str) -> None:
    from gateway.store.pg_responses import PostgresResponses

    db = await AsyncPostgres.open(pg_url)
    responses = PostgresResponses(db, prune_batch=2)
    try:
        for i in range(5):
            await responses.put(StoredResponse(f"resp_{i}", "key:a", 100.0 + i, b"{}", b"[]"))
        await responses.put(StoredResponse("resp_new", "key:a", 900.0, b"{}", b"[]"))
        assert await responses.prune(before=500.0) == 5
        assert await responses.get("resp_new", "key:a", 0) is not None
        assert await responses.prune(before=500.0) == 0
    finally:
        await db.aclose()
