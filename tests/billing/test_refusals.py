"""Refused requests are counted per minute in memory and written in one transaction:
bounded rows however many requests are refused, and nothing lost to a failed write."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.billing import refusals as refusals_module
from gateway.billing.refusals import OTHER, Refusals
from gateway.store.records import StoreError
from gateway.store.sqlite import AsyncSqlite

NOW = 1_800_000_000.0


async def test_a_flood_is_a_few_rows_and_counts_add_up(tmp_path: Path) -> None:
    db = await AsyncSqlite.open(tmp_path / "gw.sqlite3")
    counts = Refusals(db)
    for i in range(5000):
        counts.count(status=401, code="invalid_api_key", now=NOW + i % 30)
        counts.count(status=429, code="rate_limit_exceeded", now=NOW, key_id="k", key_name="a",
                     model="m", provider="p")  # fmt: skip
    assert counts.pending() == 10_000
    assert await counts.flush() == 10_000 and counts.pending() == 0
    rows = db.store._conn.execute("SELECT status, count FROM refusals ORDER BY status").fetchall()
    assert rows == [(401, 5000), (429, 5000)]
    counts.count(status=401, code="invalid_api_key", now=NOW)
    await counts.flush()
    assert db.store._conn.execute("SELECT SUM(count) FROM refusals").fetchone() == (10_001,)
    await db.aclose()


async def test_distinct_models_past_the_cap_are_counted_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refusals_module, "MAX_GROUPS", 10)
    db = await AsyncSqlite.open(tmp_path / "gw.sqlite3")
    counts = Refusals(db)
    for i in range(100):
        counts.count(status=403, code="model_not_allowed", now=NOW, key_id="k", model=f"m{i}" * 80)
    await counts.flush()
    rows = dict(db.store._conn.execute("SELECT model, count FROM refusals").fetchall())
    assert len(rows) == 11 and rows[OTHER] == 90
    assert all(len(model) <= 200 for model in rows)
    await db.aclose()


async def test_a_failed_write_keeps_the_counts(tmp_path: Path) -> None:
    db = await AsyncSqlite.open(tmp_path / "gw.sqlite3")
    counts = Refusals(db)
    counts.count(status=402, code="insufficient_quota", now=NOW, key_id="k")
    db.store._conn.execute("DROP TABLE refusals")
    with pytest.raises(StoreError):
        await counts.flush()
    assert counts.pending() == 1
    await db.aclose()
