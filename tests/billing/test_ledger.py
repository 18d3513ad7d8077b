"""The usage ledger: journal, batching writer, replay, and `kill -9` losing nothing."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
import trio

from gateway.auth.keys import new_key
from gateway.billing.ledger import Ledger, read_journal
from gateway.billing.limits.budget import BudgetSeed
from gateway.store.records import KeyLimits, NewKey, StoreError, UsageRow
from gateway.store.sqlite import AsyncSqlite, SqliteStore

NOW = 1_773_576_000.0  # 2026-03-15 12:00 UTC
REPO = Path(__file__).resolve().parents[2]


def row(
    request_id: str, cost: int = 10, *, key_id: str | None = "k", status: str = "ok"
) -> UsageRow:
    return UsageRow(
        request_id=request_id,
        key_id=key_id,
        model="gpt-test",
        provider="fake",
        prompt_tokens=7,
        completion_tokens=3,
        cached_tokens=0,
        cost_micros=cost,
        status=status,
        latency_ms=42,
        created_at=NOW,
    )


def stored_ids(db_path: Path) -> list[str]:
    s = SqliteStore(db_path)
    try:
        return [r[0] for r in s._conn.execute("SELECT request_id FROM usage ORDER BY request_id")]
    finally:
        s.close()


def journals(journal_dir: Path) -> list[Path]:
    return sorted(journal_dir.glob("*.jsonl"))


async def wait_for(predicate: Callable[[], object], timeout_s: float = 2.0) -> None:
    """Poll until `predicate()` holds: a change made elsewhere sends no event."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("not reached in time")


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "gateway.sqlite3", tmp_path / "gateway.sqlite3.journal"


@pytest.fixture
async def db(paths: tuple[Path, Path]) -> AsyncIterator[AsyncSqlite]:
    adb = await AsyncSqlite.open(paths[0])
    yield adb
    await adb.aclose()


async def test_record_is_in_the_journal_at_once_and_in_sqlite_after_a_flush(
    db: AsyncSqlite, paths: tuple[Path, Path]
) -> None:
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir)
    await ledger.record(row("r1"))
    await ledger.record(row("r2"))
    (journal,) = journals(journal_dir)
    assert [r.request_id for r in read_journal(journal.read_bytes())] == ["r1", "r2"]
    assert stored_ids(db_path) == []
    assert await ledger.flush() == 2
    assert stored_ids(db_path) == ["r1", "r2"]
    assert not journal.exists()  # deleted only after the commit
    assert await ledger.flush() == 0
    assert ledger.rows_written == 2
    await ledger.aclose()
    assert journals(journal_dir) == []
    with pytest.raises(RuntimeError, match="closed"):
        await ledger.record(row("r3"))


async def test_the_writer_batches_and_drains_at_shutdown(
    db: AsyncSqlite, paths: tuple[Path, Path]
) -> None:
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir, flush_interval_s=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run_writer)
        for i in range(50):
            await ledger.record(row(f"a{i:02d}"))
        await wait_for(lambda: len(stored_ids(db_path)) == 50)
        await ledger.record(row("last"))
        nursery.cancel_scope.cancel()  # shutdown: the writer drains before it returns
    assert "last" in stored_ids(db_path)
    assert (await ledger.pending()) == []
    await ledger.aclose()


async def test_a_failed_flush_keeps_every_row(
    db: AsyncSqlite, paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir, flush_interval_s=0.01)
    real_write = db.write_usage
    failing = True

    async def write_usage(rows: list[UsageRow]) -> None:
        if failing:
            raise StoreError("disk I/O error")
        await real_write(rows)

    monkeypatch.setattr(db, "write_usage", write_usage)
    await ledger.record(row("r1"))
    with pytest.raises(StoreError):
        await ledger.flush()
    await ledger.record(row("r2"))
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run_writer)
        await trio.sleep(0.05)  # failing flushes: logged and retried
        assert ledger.flush_failures >= 2
        assert [r.request_id for r in (await ledger.pending())] == ["r1", "r2"]
        assert len(journals(journal_dir)) >= 2
        failing = False
        await wait_for(lambda: not ledger.backlog_rows)
        nursery.cancel_scope.cancel()
    assert stored_ids(db_path) == ["r1", "r2"]
    assert journals(journal_dir) == [ledger.journal_path]  # the empty current one only
    await ledger.aclose()


async def test_a_long_outage_keeps_rows_on_disk_and_a_bounded_number_in_memory(
    db: AsyncSqlite, paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store away for 100 flushes: the rows wait in a few journal files, at most
    `memory_rows` plus one journal's in memory; the key's spend still counts them all
    (read back from disk); once the store is back they are written in bounded batches,
    each once, and every file goes."""
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir, memory_rows=10, journal_rows=4)
    real_write = db.write_usage
    failing = True
    batches: list[int] = []

    async def write_usage(rows: list[UsageRow]) -> None:
        if failing:
            raise StoreError("the store is away")
        batches.append(len(rows))
        await real_write(rows)

    monkeypatch.setattr(db, "write_usage", write_usage)
    for i in range(100):
        await ledger.record(row(f"r{i:03d}", cost=1))
        with pytest.raises(StoreError):
            await ledger.flush()
        assert ledger.held_rows <= 10 + 4
    assert ledger.backlog_rows == 100
    assert len(journals(journal_dir)) <= 100 // 4 + 2  # not one per flush
    assert len(await ledger.pending("k", only=True)) == 100
    assert await ledger.spent_in_period("k", "day", NOW) == 100
    failing = False
    assert await ledger.flush() == 100
    assert max(batches) <= 10 + 4 and sum(batches) == 100
    assert stored_ids(db_path) == [f"r{i:03d}" for i in range(100)]
    assert ledger.backlog_rows == ledger.held_rows == 0
    assert journals(journal_dir) == [ledger.journal_path]
    await ledger.aclose()


async def test_a_cancelled_flush_keeps_every_row(
    db: AsyncSqlite, paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir)
    real_write = db.write_usage

    async def hung_write(rows: list[UsageRow]) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(db, "write_usage", hung_write)
    await ledger.record(row("r1"))
    with trio.move_on_after(0.05) as scope:
        await ledger.flush()
    assert scope.cancelled_caught
    assert [r.request_id for r in (await ledger.pending())] == ["r1"]
    monkeypatch.setattr(db, "write_usage", real_write)
    assert await ledger.flush() == 1
    assert stored_ids(db_path) == ["r1"]
    await ledger.aclose()


async def test_rows_that_cannot_be_written_at_close_are_replayed_next_start(
    db: AsyncSqlite, paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir)
    await ledger.record(row("r1"))

    async def broken(rows: list[UsageRow]) -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(db, "write_usage", broken)
    await ledger.aclose()
    assert len(journals(journal_dir)) == 1
    monkeypatch.undo()
    again = await Ledger.open(db, journal_dir)
    assert stored_ids(db_path) == ["r1"]
    assert journals(journal_dir) == [again.journal_path]
    await again.aclose()
    assert journals(journal_dir) == []


async def test_replay_skips_live_journals_and_takes_dead_ones(
    db: AsyncSqlite, paths: tuple[Path, Path]
) -> None:
    db_path, journal_dir = paths
    alive = await Ledger.open(db, journal_dir)
    await alive.record(row("a1"))
    other = await Ledger.open(db, journal_dir)  # another worker starting up
    assert stored_ids(db_path) == []  # the live worker's journal is not touched
    assert len(journals(journal_dir)) == 2
    # The first worker dies: its descriptors close, its lock goes with them.
    assert alive._current is not None
    os.close(alive._current.fd)
    alive._current = None
    assert await other.replay() == 1
    assert stored_ids(db_path) == ["a1"]
    assert len(journals(journal_dir)) == 1  # only the live one of `other`
    await other.aclose()


async def test_replay_is_idempotent_and_skips_torn_lines(
    db: AsyncSqlite, paths: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    db_path, journal_dir = paths
    journal_dir.mkdir()
    good = [orjson.dumps(row(f"r{i}")) for i in range(3)]
    (journal_dir / "123-dead-0000000001.jsonl").write_bytes(
        good[0] + b"\n" + b'{"request_id": "torn", "key_' + b"\n" + good[1] + b"\n[1]\n"
    )
    (journal_dir / "123-dead-0000000002.jsonl").write_bytes(good[1] + b"\n" + good[2] + b"\n")
    (journal_dir / "123-dead-0000000003.tmp").write_bytes(b"")  # died before naming it
    with caplog.at_level(logging.WARNING, "gateway.billing.ledger"):
        ledger = await Ledger.open(db, journal_dir)
    assert stored_ids(db_path) == ["r0", "r1", "r2"]
    assert sum("unreadable usage row" in r.message for r in caplog.records) == 2
    assert sorted(p.suffix for p in journal_dir.iterdir()) == [".jsonl"]  # ours only
    await ledger.aclose()


async def test_spend_and_credit_include_rows_not_yet_flushed(
    db: AsyncSqlite, paths: tuple[Path, Path]
) -> None:
    _, journal_dir = paths
    record, _ = await db.create_key(NewKey("p", credit_micros=1000), NOW, new_key())
    k = record.key_id
    ledger = await Ledger.open(db, journal_dir)
    await ledger.record(row("a", 100, key_id=k))
    await ledger.flush()
    await ledger.record(row("b", 400, key_id=k, status="pending"))  # at admission
    await ledger.record(row("other", 999, key_id="someoneelse"))
    assert await ledger.spent_in_period(k, "day", NOW) == 500
    assert await ledger.credit_balance(k) == 500
    await ledger.flush()
    await ledger.record(row("b", 150, key_id=k))  # the final row replaces the reservation
    assert await ledger.spent_in_period(k, "month", NOW) == 250
    topup = await db.add_topup(k, 50, NOW)
    assert await ledger.credit_snapshot(k) == (800, topup.topup_id)
    await ledger.flush()
    assert await ledger.spent_in_period(k, "day", NOW) == 250
    await ledger.aclose()


async def test_seed_gives_the_limiter_the_ledger_s_budget(
    db: AsyncSqlite, paths: tuple[Path, Path]
) -> None:
    _, journal_dir = paths
    record, _ = await db.create_key(NewKey("p", credit_micros=1000), NOW, new_key())
    k = record.key_id
    ledger = await Ledger.open(db, journal_dir)
    await ledger.record(row("a", 100, key_id=k))
    await ledger.flush()
    await ledger.record(row("b", 40, key_id=k))
    limits = KeyLimits(spend_limit_micros=10_000, spend_period="day", prepaid=True)
    seed = await ledger.seed(k, limits, NOW)
    assert seed == BudgetSeed.for_limits(limits, NOW, spent_micros=140, credit_micros=860)
    assert seed.period_start == int(NOW // 86400) * 86400
    postpaid = await ledger.seed(k, KeyLimits(rpm=5), NOW)
    assert (postpaid.spent_micros, postpaid.credit_micros) == (0, None)
    await ledger.aclose()


async def test_fsync_mode_records_and_flushes(db: AsyncSqlite, paths: tuple[Path, Path]) -> None:
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir, fsync=True)
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(ledger.record, row(f"f{i:02d}"))
        nursery.start_soon(ledger.flush)  # rotation while fsyncs are in flight
    await ledger.flush()
    assert len(stored_ids(db_path)) == 20
    await ledger.aclose()
    assert journals(journal_dir) == []


async def test_a_failed_journal_write_leaves_no_torn_line(
    db: AsyncSqlite, paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir)
    await ledger.record(row("r1"))
    real_write = os.write

    def half_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half_write)
    with pytest.raises(OSError, match="short write"):
        await ledger.record(row("r2"))
    monkeypatch.undo()
    await ledger.record(row("r3"))
    (journal,) = journals(journal_dir)
    assert [r.request_id for r in read_journal(journal.read_bytes())] == ["r1", "r3"]
    await ledger.aclose()


async def test_a_failed_rotation_loses_nothing(
    db: AsyncSqlite, paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir)
    await ledger.record(row("r1"))

    def no_space(*args: object, **kw: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "open", no_space)
    with pytest.raises(OSError):
        await ledger.flush()
    monkeypatch.undo()
    await ledger.record(row("r2"))  # still journaled, in the same file
    assert [r.request_id for r in (await ledger.pending())] == ["r1", "r2"]
    assert await ledger.flush() == 2
    assert stored_ids(db_path) == ["r1", "r2"]
    await ledger.aclose()


async def test_journal_files_are_private_and_locked(
    db: AsyncSqlite, paths: tuple[Path, Path]
) -> None:
    _, journal_dir = paths
    ledger = await Ledger.open(db, journal_dir)
    (journal,) = journals(journal_dir)
    assert journal.stat().st_mode & 0o777 == 0o600
    fd = os.open(journal, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    await ledger.aclose()


# ---------------------------------------------------------------- kill -9

CHILD = textwrap.dedent(
    """
    import os, random, signal, sys
    import trio
    from gateway.billing.ledger import Ledger
    from gateway.store.records import UsageRow
    from gateway.store.sqlite import AsyncSqlite

    db_path, journal_dir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main() -> None:
        db = await AsyncSqlite.open(db_path)
        ledger = await Ledger.open(db, journal_dir, flush_interval_s=0.003)
        rng = random.Random(seed)
        kill_at = rng.randrange(100, 600)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ledger.run_writer)
            for i in range(10**6):
                rid = f"s{seed}-{i:06d}"
                await ledger.record(UsageRow(rid, "k", "m", "p", 1, 2, 0, 3, "ok", 4, 0.0))
                os.write(1, rid.encode() + b"\\n")  # the client is told it succeeded
                if i == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if rng.random() < 0.2:
                    await trio.sleep(rng.choice([0, 0.001, 0.004]))

    trio.run(main)
    """
)


@pytest.mark.parametrize("seed", range(4))
async def test_kill_9_loses_nothing_a_client_was_told(seed: int, paths: tuple[Path, Path]) -> None:
    """A process records rows (with the writer flushing every 3 ms) and SIGKILLs itself
    at a random row; every row it reported as recorded is in SQLite after the replay,
    exactly once."""
    db_path, journal_dir = paths
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-c", CHILD, str(db_path), str(journal_dir), str(seed)],
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=False,
        )
    )
    assert result.returncode == -9, result.stderr.decode()
    told = result.stdout.decode().split()
    assert len(told) >= 100
    before = set(stored_ids(db_path))
    assert before < set(told)  # the last rows were only in the journal
    assert before  # and earlier ones had been batched into SQLite
    db = await AsyncSqlite.open(db_path)
    ledger = await Ledger.open(db, journal_dir)
    assert stored_ids(db_path) == sorted(told)
    assert journals(journal_dir) == [ledger.journal_path]
    await ledger.aclose()
    await db.aclose()
