"""The stored responses table: ownership, retention, pruning (on SQLite and on
PostgreSQL), and SQLite's own schema version."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store.records import StoreError
from gateway.store.responses import (
    SCHEMA_VERSION,
    ResponseStore,
    SqliteResponses,
    SqliteResponseTable,
    StoredResponse,
)
from gateway.store.sqlite import SCHEMA_VERSION as LEDGER_VERSION
from gateway.store.sqlite import SqliteStore


def stored(response_id: str, owner: str = "key:a", at: float = 1000.0) -> StoredResponse:
    return StoredResponse(response_id, owner, at, b'{"id": "%s"}' % response_id.encode(), b"[]")


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResponseStore]:
    """The same suite on both backends, as gateway/state.py builds them."""
    if request.param == "sqlite":
        s: ResponseStore = SqliteResponses(SqliteResponseTable(tmp_path / "g.sqlite3"))
        yield s
        await s.aclose()
        return
    from gateway.store.pg_responses import PostgresResponses
    from gateway.store.postgres import AsyncPostgres

    db = await AsyncPostgres.open(request.getfixturevalue("pg_url"))
    s = PostgresResponses(db)
    yield s
    await s.aclose()
    await db.aclose()


async def test_only_the_owner_reads_or_deletes(store: ResponseStore) -> None:
    await store.put(stored("resp_1"))
    assert await store.get("resp_1", "key:a", 0) == stored("resp_1")
    assert await store.get("resp_1", "key:b", 0) is None
    assert await store.delete("resp_1", "key:b") is False
    assert await store.delete("resp_1", "key:a") is True
    assert await store.get("resp_1", "key:a", 0) is None
    assert await store.delete("resp_1", "key:a") is False


async def test_reads_ignore_what_is_past_retention_and_prune_deletes_it(
    store: ResponseStore,
) -> None:
    await store.put(stored("resp_old", at=100.0))
    await store.put(stored("resp_new", at=900.0))
    assert await store.get("resp_old", "key:a", since=500.0) is None
    assert await store.get("resp_new", "key:a", since=500.0) is not None
    assert await store.prune(before=500.0) == 1
    assert await store.get("resp_old", "key:a", since=0) is None
    assert await store.get("resp_new", "key:a", since=0) is not None


async def test_a_second_put_replaces_and_bytes_come_back_as_they_went(
    store: ResponseStore,
) -> None:
    await store.put(stored("resp_1"))
    again = StoredResponse("resp_1", "key:a", 2000.0, '{"é": "\\u0000"}'.encode(), b'[{"a": 1}]')
    await store.put(again)
    assert await store.get("resp_1", "key:a", 0) == again


def test_it_shares_the_file_with_the_ledger_without_touching_its_version(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    ledger = SqliteStore(path)
    table = SqliteResponseTable(path)
    table.put(stored("resp_1"))
    ledger.close()
    table.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (LEDGER_VERSION,)
        assert db.execute("SELECT version FROM responses_schema").fetchall() == [(SCHEMA_VERSION,)]
    again = SqliteResponseTable(path)  # opening twice creates nothing new
    assert again.get("resp_1", "key:a", 0) == stored("resp_1")
    again.close()


def test_a_newer_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    SqliteResponseTable(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this gateway"):
        SqliteResponseTable(path)
