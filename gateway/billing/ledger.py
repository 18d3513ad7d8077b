"""The usage ledger: durable before the client hears the end, cheap on the hot path.

`record(row)` appends one JSON line to a write-ahead journal with a single
`os.write` (O_APPEND) and returns: the line is in the kernel's page cache, so it
survives the death of this process, `kill -9` included. A background writer
(`run_writer`, in the app's lifespan nursery) moves the rows into the store (SQLite,
or PostgreSQL shared by several machines: gateway/store/base.py) in one
transaction every `flush_interval_s` (200 ms), and only after the commit deletes the
journal file they came from. Failed batches are kept and retried, never dropped;
at shutdown the writer drains what is left (docs/reliability.md R23, and the ways
LiteLLM lost spend rows: dropped batches, no shutdown drain, cancelled flushes).

Power loss: without `fsync` the last lines may still be in the page cache. With
`fsync=True` (`[state] fsync = true`) each `record` also waits for `fdatasync` of
the journal, in a worker thread: rows then survive power loss, at the cost of a
disk flush per request.

Journal files live in one directory, named `<instance>-<seq>.jsonl`; each worker
process writes its own, holding an exclusive `flock` on it for as long as it is
open. At each flush the current file is sealed and a new one started, so a commit
covers exactly the files it deletes. `open()` replays every journal file that no
live process holds (their writer died) into the store and deletes it; the upsert by
`request_id` makes a replay idempotent, so a crash between commit and delete
duplicates nothing.

While the store is unreachable the journal grows on disk; memory holds at most
`memory_rows` of the rows waiting (the oldest journals' rows are read back from their
files when written, or when a seed needs them), and a new journal file is started only
when the waiting ones hold `journal_rows` rows, so that an outage of hours keeps a few
hundred files open, not one per flush interval.

Spend and credit (which seed the limiter) are the stored ledger plus the rows this
process has journaled but not yet committed: `spent_in_period`, `credit_balance`
and `budget_view` (all of a key's budget and the rows a reconcile asks for, on one
snapshot) merge the two exactly.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson
import trio

from gateway.billing.limits.budget import BudgetSeed
from gateway.store.base import AsyncStore, RowQuery, collapse
from gateway.store.periods import SpendPeriod
from gateway.store.records import BudgetView, KeyLimits, StoreError, UsageRow

log = logging.getLogger("gateway.billing.ledger")

SUFFIX: Final = ".jsonl"
DRAIN_TIMEOUT_S: Final = 10.0  # how long shutdown may spend writing what is left
MEMORY_ROWS: Final = 50_000  # rows waiting to be written held in memory, at most (~15 MB)
JOURNAL_ROWS: Final = 10_000  # while rows wait, a journal file holds this many


@dataclass(eq=False, slots=True)
class _Journal:
    """One journal file, locked by this process while open."""

    path: Path
    fd: int
    rows: list[UsageRow] | None = field(default_factory=list)  # None: only in the file
    count: int = 0  # rows written to it
    keys: set[str | None] = field(default_factory=set)  # the keys of those rows
    size: int = 0  # bytes written: a torn write is cut back to this
    users: int = 0  # fsyncs in flight: close only when they are done
    dir_synced: bool = False  # fsync mode: the directory entry is on disk
    retired: bool = False

    async def load(self) -> list[UsageRow]:
        """Its rows: from memory, else read back from its file (in a worker thread)."""
        if self.rows is not None:
            return self.rows
        data = await trio.to_thread.run_sync(self.path.read_bytes)
        return read_journal(data, str(self.path))

    def release(self) -> None:
        """Delete the file (its rows are committed) and close it once no fsync uses it."""
        if not self.retired:
            self.retired = True
            self.path.unlink(missing_ok=True)
        if self.users == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _lock(fd: int) -> bool:
    """Take an exclusive lock on a journal file without waiting; False if held."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def read_journal(data: bytes, source: str = "journal") -> list[UsageRow]:
    """The rows of a journal file. A line that does not parse (a write torn by power
    loss) is skipped with a warning; every other line still counts."""
    rows: list[UsageRow] = []
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            rows.append(UsageRow.from_dict(obj))
        except ValueError as e:  # orjson.JSONDecodeError is a ValueError
            log.warning("%s line %d: skipped an unreadable usage row: %s", source, n, e)
    return rows


class Ledger:
    """Usage rows: journaled by `record`, batched into the store by `run_writer`."""

    def __init__(
        self,
        db: AsyncStore,
        journal_dir: str | Path,
        *,
        fsync: bool = False,
        flush_interval_s: float = 0.2,
        memory_rows: int = MEMORY_ROWS,
        journal_rows: int = JOURNAL_ROWS,
    ) -> None:
        self._db = db
        self.memory_rows = memory_rows
        self.journal_rows = journal_rows
        self.journal_dir = Path(journal_dir)
        self.fsync = fsync
        self.flush_interval_s = flush_interval_s
        self._instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0
        self._current: _Journal | None = None
        self._sealed: list[_Journal] = []  # waiting for their commit, oldest first
        self._held = 0  # rows of `_sealed` held in memory
        self._flush_lock = trio.Lock()
        self.rows_written = 0  # committed to the store by this process
        self.flush_failures = 0

    @classmethod
    async def open(
        cls,
        db: AsyncStore,
        journal_dir: str | Path,
        *,
        fsync: bool = False,
        flush_interval_s: float = 0.2,
        memory_rows: int = MEMORY_ROWS,
        journal_rows: int = JOURNAL_ROWS,
    ) -> Ledger:
        """Replay the journals of dead processes into the store, then start a journal of
        our own. Call before serving (and before seeding limits from the ledger)."""
        ledger = cls(
            db,
            journal_dir,
            fsync=fsync,
            flush_interval_s=flush_interval_s,
            memory_rows=memory_rows,
            journal_rows=journal_rows,
        )
        await ledger.start()
        return ledger

    async def start(self) -> None:
        """For a ledger built with the constructor: replay dead journals, then open ours."""
        await self.replay()
        self._rotate()

    # -------------------------------------------------------------- journal

    def _rotate(self) -> None:
        """Seal the current journal (if it holds rows) and start a new one; while sealed
        journals wait for a store that failed, only once it holds `journal_rows` rows."""
        current = self._current
        if current is not None and (
            not current.count or (self._sealed and current.count < self.journal_rows)
        ):
            return
        fresh = self._new_journal()  # if this fails, nothing has changed
        if current is not None:
            self._sealed.append(current)
            self._held += current.count
        self._current = fresh

    def _evict(self) -> None:
        """After a failed flush: past `memory_rows`, leave the oldest sealed journals'
        rows in their files only. (Not before a flush: it would read them back at once.)"""
        for journal in self._sealed:
            if self._held <= self.memory_rows:
                break
            if journal.rows is not None:
                journal.rows = None
                self._held -= journal.count

    def _new_journal(self) -> _Journal:
        self._seq += 1
        name = f"{self._instance}-{self._seq:010d}"
        tmp = self.journal_dir / (name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _lock(fd)  # a fresh, private name: nobody else can hold it
            path = self.journal_dir / (name + SUFFIX)
            # Only a locked file ever carries the suffix replay looks for, so a starting
            # process can never take (and delete) a journal we are about to write.
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        return _Journal(path, fd)

    def _sync_dir(self) -> None:
        fd = os.open(self.journal_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def record(self, row: UsageRow) -> None:
        """Journal one row; on return it survives a crash of this process (and, with
        fsync, a power loss). The store gets it within `flush_interval_s`."""
        journal = self._current
        if journal is None:
            raise RuntimeError("the ledger is closed")
        line = orjson.dumps(row) + b"\n"
        try:
            written = os.write(journal.fd, line)
            if written != len(line):  # a short write to a regular file: the disk is full
                raise OSError(f"short write to the usage journal {journal.path}")
        except OSError:
            os.ftruncate(journal.fd, journal.size)  # no torn line for the next row to join
            raise
        journal.size += written
        assert journal.rows is not None  # the current journal's are always held
        journal.rows.append(row)
        journal.count += 1
        journal.keys.add(row.key_id)
        if self.fsync:
            journal.users += 1
            try:
                await trio.to_thread.run_sync(os.fdatasync, journal.fd)
                if not journal.dir_synced:  # the file's name must survive power loss too
                    await trio.to_thread.run_sync(self._sync_dir)
                    journal.dir_synced = True
            finally:
                journal.users -= 1
                if journal.retired:
                    journal.release()

    @property
    def journal_path(self) -> Path | None:
        """The journal file `record` appends to now (None once closed)."""
        return None if self._current is None else self._current.path

    @property
    def backlog_rows(self) -> int:
        """How many rows are journaled but not yet committed to the store (a metric)."""
        rows = sum(j.count for j in self._sealed)
        return rows + (self._current.count if self._current is not None else 0)

    @property
    def held_rows(self) -> int:
        """How many of those are held in memory (at most `memory_rows` plus the
        current journal's)."""
        return self._held + (self._current.count if self._current is not None else 0)

    def _journals(self) -> list[_Journal]:
        return [*self._sealed, *([self._current] if self._current is not None else [])]

    async def pending(self, key_id: str | None = None, *, only: bool = False) -> list[UsageRow]:
        """Rows journaled but not yet committed to the store, in order; with `only`,
        just those of `key_id` (the journals without its rows are not read)."""
        rows: list[UsageRow] = []
        for journal in self._journals():
            if only and key_id not in journal.keys:
                continue
            rows += (r for r in await journal.load() if not only or r.key_id == key_id)
        return rows

    # --------------------------------------------------------------- writer

    async def flush(self) -> int:
        """Commit every journaled row to the store, then delete their journal files:
        the oldest journals first, at most `memory_rows` rows to a transaction (the
        lock is let go between them, so a seed need not wait for a long backlog). On
        failure (or cancellation) the rows stay journaled for the next try."""
        written = 0
        async with self._flush_lock:
            self._rotate()
            # Rows held back in the current journal behind a backlog go once it is gone.
            held_back = self._current is not None and self._current.count > 0
        while True:
            async with self._flush_lock:
                if not self._sealed and held_back:
                    held_back = False
                    self._rotate()
                if not self._sealed:
                    return written
                batch: list[_Journal] = []
                rows: list[UsageRow] = []
                for journal in self._sealed:
                    if batch and len(rows) + journal.count > self.memory_rows:
                        break
                    rows += await journal.load()
                    batch.append(journal)
                unique = collapse(rows)  # one write per request
                try:
                    await self._db.write_usage(unique)
                except BaseException:
                    self._evict()
                    raise
                del self._sealed[: len(batch)]
                for journal in batch:
                    if journal.rows is not None:
                        self._held -= journal.count
                    journal.release()
                self.rows_written += len(unique)
                written += len(unique)

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Flush every `flush_interval_s` until cancelled, then drain what is left
        (shielded, for up to DRAIN_TIMEOUT_S). A failing flush is logged and retried."""
        task_status.started()
        try:
            while True:
                await trio.sleep(self.flush_interval_s)
                await self._flush_logged()
        finally:
            with trio.CancelScope(shield=True) as drain:
                drain.deadline = trio.current_time() + DRAIN_TIMEOUT_S
                await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except (StoreError, OSError) as e:
            self.flush_failures += 1
            log.error("usage ledger flush failed, rows kept in the journal: %s", e)

    async def aclose(self) -> None:
        """Flush what is left and close the journal. Rows that cannot be written stay
        in their journal files and are replayed at the next start."""
        with trio.CancelScope(shield=True) as drain:
            drain.deadline = trio.current_time() + DRAIN_TIMEOUT_S
            await self._flush_logged()
        for journal in self._journals():
            if journal.count:  # keep the file for replay; just let go of it
                os.close(journal.fd)
                journal.fd = -1
            else:
                journal.release()
        self._sealed.clear()
        self._held = 0
        self._current = None

    # --------------------------------------------------------------- replay

    def _prepare_dir(self) -> None:
        """Create the journal directory; delete `.tmp` files whose creator died
        before it could name them (they never hold rows)."""
        self.journal_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for tmp in self.journal_dir.glob("*.tmp"):
            try:
                fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if _lock(fd):
                    tmp.unlink(missing_ok=True)
            finally:
                os.close(fd)

    async def replay(self) -> int:
        """Write the journals no live process holds into the store, then delete them.
        Returns how many rows were replayed."""
        await trio.to_thread.run_sync(self._prepare_dir)
        total = 0
        for path in sorted(self.journal_dir.glob("*" + SUFFIX)):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # another process replayed it meanwhile
                continue
            try:
                if not _lock(fd):  # a live process owns it
                    continue
                data = await trio.to_thread.run_sync(path.read_bytes)
                rows = read_journal(data, str(path))
                await self._db.write_usage(rows)
                path.unlink(missing_ok=True)
                total += len(rows)
                if rows:
                    log.info("replayed %d usage rows from %s", len(rows), path.name)
            finally:
                os.close(fd)
        return total

    # ---------------------------------------------------------- spend/credit

    async def _pending_for(self, key_id: str) -> list[UsageRow]:
        return await self.pending(key_id, only=True)

    async def spent_in_period(self, key_id: str, period: SpendPeriod, now: float) -> int:
        """A key's spend in the UTC day or month containing `now`, journaled rows included."""
        async with self._flush_lock:  # no batch half-committed while we read
            return await self._db.spent_in_period(
                key_id, period, now, await self._pending_for(key_id)
            )

    async def seed(self, key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        """A key's budget as the ledger knows it: a `limits.budget.Seeder` for the limit backends.
        Spend and credit are read under one lock, journaled rows included."""
        async with self._flush_lock:
            pending = await self._pending_for(key_id)
            spent = 0
            if limits.spend_period is not None:
                spent = await self._db.spent_in_period(key_id, limits.spend_period, now, pending)
            credit = None
            if limits.prepaid:
                credit = await self._db.credit_balance(key_id, pending)
        return BudgetSeed.for_limits(limits, now, spent_micros=spent, credit_micros=credit)

    async def budget_view(self, key_id: str, q: RowQuery) -> BudgetView:
        """A key's top-ups, costs and the rows `q` lists, on one snapshot of the store
        with the rows journaled here merged in (no batch half-committed meanwhile)."""
        async with self._flush_lock:
            return await self._db.budget_view(key_id, q, await self._pending_for(key_id))

    async def credit_balance(self, key_id: str) -> int:
        """A prepaid key's top-ups minus all its usage, journaled rows included."""
        return (await self.credit_snapshot(key_id))[0]

    async def credit_snapshot(self, key_id: str) -> tuple[int, int]:
        """(credit balance, id of the last top-up it includes): a limiter that seeds
        from this can skip top-ups up to that id when `ManagedKeyStore` reports them."""
        async with self._flush_lock:
            return await self._db.credit_snapshot(key_id, await self._pending_for(key_id))
