"""`python -m bench ledger` measures the real ledger into both stores (briefly here)."""

from __future__ import annotations

from pathlib import Path

from bench.ledger import measure
from gateway.store.postgres import AsyncPostgres
from gateway.store.sqlite import AsyncSqlite


async def test_the_ledger_bench_commits_what_it_records(tmp_path: Path, pg_url: str) -> None:
    for backend, db in (
        ("sqlite", await AsyncSqlite.open(tmp_path / "g.sqlite3")),
        ("postgres", await AsyncPostgres.open(pg_url)),
    ):
        result = await measure(db, tmp_path / backend, backend, 0.6, rate=500)
        assert result.requests_recorded > 100
        assert 0 < result.rows_committed <= result.requests_recorded
        await db.aclose()
