"""``python -m bench ledger``: how many usage rows per second the ledger sustains into its store.

    python -m bench ledger [--duration 5] [--rate R] [--backends sqlite,postgres]
        [--postgres-url URL]

Runs the gateway's own `Ledger` (journal first, a batch into the store every 200 ms) in
one process, with producers recording each request's two rows (pending at admission,
final at the end) for --duration seconds, at --rate requests per second or as fast as
they can, and reports the requests recorded per second, the final rows committed per
second meanwhile, the rows still journaled at the end (a backlog that grows means the
store, or the CPU it shares with the producers, is the limit) and the rate at which
that backlog then drained with nothing else running: the store's own capacity. SQLite
writes to a file in a temp dir; PostgreSQL to a fresh database of `--postgres-url`, or
of a throwaway cluster with the server's default durability (fsync on) that this
command starts from /usr/lib/postgresql/*/bin or PATH. Nothing is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.lowlevel

from bench.postgres import postgres_bin_dir, running_postgres
from bench.subcommand import at_least, parser_for
from gateway.billing.ledger import Ledger
from gateway.store.base import AsyncStore
from gateway.store.records import UsageRow
from gateway.store.sqlite import AsyncSqlite

__all__ = ["LedgerResult", "add_parser", "measure", "run"]

BACKENDS = ("sqlite", "postgres")
PRODUCERS = 4
YIELD_EVERY = 64  # rows a producer records between checkpoints


@dataclass(frozen=True)
class LedgerResult:
    backend: str
    seconds: float
    requests_recorded: int
    rows_committed: int  # final rows in the store at the end of the run
    backlog_rows: int  # journaled but not committed when the producers stopped
    drain_s: float

    @property
    def committed_per_s(self) -> float:
        return self.rows_committed / self.seconds

    @property
    def drained_per_s(self) -> float | None:
        """Requests' rows (two each, one write after `collapse`) drained per second."""
        return self.backlog_rows / 2 / self.drain_s if self.backlog_rows > 1000 else None


def _row(request_id: str, status: str) -> UsageRow:
    return UsageRow(
        request_id=request_id,
        key_id="kbench",
        model="gpt-bench",
        provider="fake",
        prompt_tokens=12,
        completion_tokens=0 if status == "pending" else 34,
        cached_tokens=0,
        cost_micros=99 if status == "pending" else 27,
        status=status,
        latency_ms=5,
        created_at=time.time(),
        deployment="fake/gpt-bench",
        x_request_id=request_id,
        key_name="bench",
    )


async def measure(
    db: AsyncStore, journal_dir: Path, backend: str, duration_s: float, rate: float | None = None
) -> LedgerResult:
    """Producers for `duration_s`, the writer flushing meanwhile; then the drain."""
    ledger = await Ledger.open(db, journal_dir)
    recorded = 0
    async with trio.open_nursery() as writer:
        await writer.start(ledger.run_writer)
        started = time.monotonic()
        deadline = started + duration_s

        async def produce(n: int) -> None:
            nonlocal recorded
            i = 0
            due = started
            while time.monotonic() < deadline:
                if rate is not None:  # open loop: YIELD_EVERY requests at each due time
                    due += YIELD_EVERY * PRODUCERS / rate
                    await trio.sleep(max(0.0, due - time.monotonic()))
                for _ in range(YIELD_EVERY):
                    rid = f"chatcmpl-{n}-{i}"
                    await ledger.record(_row(rid, "pending"))
                    await ledger.record(_row(rid, "ok"))
                    i += 1
                recorded += YIELD_EVERY
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as producers:
            for n in range(PRODUCERS):
                producers.start_soon(produce, n)
        seconds = time.monotonic() - started
        backlog = ledger.backlog_rows
        committed = ledger.rows_written
        drain_started = time.monotonic()
        await ledger.flush()
        drain_s = time.monotonic() - drain_started
        writer.cancel_scope.cancel()
    await ledger.aclose()
    return LedgerResult(backend, seconds, recorded, committed, backlog, drain_s)


@contextlib.contextmanager
def _postgres_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    with running_postgres(bin_dir, durable=True) as server:
        yield server.new_database(f"ledger_{time.monotonic_ns()}")


async def _run_one(
    backend: str, duration_s: float, pg_url: str | None, rate: float | None
) -> LedgerResult:
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        db: AsyncStore
        if backend == "sqlite":
            db = await AsyncSqlite.open(Path(tmp) / "gateway.sqlite3")
        else:
            from gateway.store.postgres import AsyncPostgres

            assert pg_url is not None
            db = await AsyncPostgres.open(pg_url)
        try:
            return await measure(db, Path(tmp) / "journal", backend, duration_s, rate)
        finally:
            await db.aclose()


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = parser_for(subparsers, "ledger", "usage rows per second into the store", __doc__)
    parser.add_argument("--duration", type=at_least(float, 0.5), default=5.0, metavar="S")
    parser.add_argument(
        "--rate", type=at_least(float, 1.0), default=None, metavar="R", help="requests/s"
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated: sqlite,postgres"
    )
    parser.add_argument("--postgres-url", default=None, metavar="URL", help="a migrated database")


def run(args: argparse.Namespace) -> int:
    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        if b not in BACKENDS:
            print(f"python -m bench ledger: unknown backend {b!r}")
            return 2
    with contextlib.ExitStack() as stack:
        url = (
            stack.enter_context(_postgres_url(args.postgres_url))
            if "postgres" in backends
            else None
        )
        print(
            f"{'backend':9} {'requests/s recorded':>20} {'final rows/s committed':>23}"
            f" {'backlog at end':>15} {'drain s':>8} {'drained rows/s':>15}"
        )
        for backend in backends:
            r = trio.run(_run_one, backend, args.duration, url, args.rate)
            drained = "-" if r.drained_per_s is None else f"{r.drained_per_s:,.0f}"
            print(
                f"{r.backend:9} {r.requests_recorded / r.seconds:>20,.0f}"
                f" {r.committed_per_s:>23,.0f} {r.backlog_rows:>15,} {r.drain_s:>8.2f}"
                f" {drained:>15}"
            )
    return 0
