"""The reconcile after a seed under traffic, driven step by step on a real redis-server.

Redis loses a key's budget (FLUSHALL: a restart without persistence) while requests
run; the next admission seeds it from the ledger. `Books` stands in for the ledger
(PostgreSQL and the instances' journals): rows are written to it when the test says
so, so that a row another instance has not written yet is simply not there. Each
test ends with the live balance and period spend equal to the ledger's to the
micro-dollar (docs/deployment.md, "Credit: one source of truth").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from gateway.billing.limits.budget import (
    DEFAULT_RESERVATION_TTL_S,
    RECONCILE_LOOKBACK_S,
    BudgetSeed,
    seed_from_view,
)
from gateway.billing.limits.core import Admission
from gateway.billing.limits.redis import RedisLimitBackend, open_redis_backend
from gateway.store.base import RowQuery
from gateway.store.periods import period_bounds
from gateway.store.records import PENDING, BudgetView, KeyLimits, StoreError, UsageRow
from tests.redis_server import RedisServer

T0 = 1_800_000_000.0
TOPUPS = 100_000
LIMITS = KeyLimits(spend_limit_micros=1_000_000, spend_period="day", prepaid=True)
WORST = 1_000


class Books:
    """The ledger: the rows written so far (a final row replaces a pending one)."""

    def __init__(self) -> None:
        self.rows: dict[str, UsageRow] = {}
        self.seeds = 0

    def write(self, row: UsageRow) -> None:
        current = self.rows.get(row.request_id)
        if current is None or current.status == PENDING:
            self.rows[row.request_id] = row

    def view(self, q: RowQuery) -> BudgetView:
        start, end = period_bounds("day", q.now)
        rows = self.rows.values()
        return BudgetView(
            topups_micros=TOPUPS,
            last_topup_id=0,
            cost_micros=sum(r.cost_micros for r in rows),
            period_cost_micros=sum(r.cost_micros for r in rows if start <= r.created_at < end),
            rows=tuple(r for r in rows if q.wants(r)),
        )

    async def seed(self, key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        """What `Gateway.seed_budget` reads."""
        self.seeds += 1
        since = now - RECONCILE_LOOKBACK_S
        q = RowQuery(
            limits.spend_period, now, since=since, pending_since=now - DEFAULT_RESERVATION_TTL_S
        )
        return seed_from_view(limits, now, self.view(q), since)

    async def read(
        self, key_id: str, since: float | None, ids: tuple[str, ...], now: float
    ) -> tuple[UsageRow, ...]:
        """What `Gateway.ledger_rows` reads."""
        return self.view(RowQuery(None, now, since=since, request_ids=ids)).rows

    @property
    def credit(self) -> int:
        return TOPUPS - sum(r.cost_micros for r in self.rows.values())

    @property
    def spent(self) -> int:
        return sum(r.cost_micros for r in self.rows.values())


def row(rid: str, cost: int, at: float, status: str = "ok") -> UsageRow:
    return UsageRow(rid, "k", "m", "p", 10, 5, 0, cost, status, 1, at)


class Traffic:
    """Requests on key "k": admitted (pending row), then finished (final row, settled)."""

    def __init__(self, backend: RedisLimitBackend, books: Books) -> None:
        self.backend = backend
        self.books = books
        self.admissions: dict[str, Admission] = {}
        self.unwritten: list[UsageRow] = []  # journaled by "another instance", not written

    async def start(self, rid: str, at: float, *, written: bool = True) -> None:
        self.admissions[rid] = await self.backend.admit(
            "k", LIMITS, 10, WORST, at, reservation_id=rid
        )
        self._journal(row(rid, WORST, at, PENDING), written)

    async def finish(self, rid: str, cost: int, *, written: bool = True) -> None:
        a = self.admissions.pop(rid)
        self._journal(row(rid, cost, T0), written)  # journaled first, then settled
        await self.backend.settle(a, 15, cost, T0)

    def _journal(self, r: UsageRow, written: bool) -> None:
        if written:
            self.books.write(r)
        else:
            self.unwritten.append(r)

    def flush(self) -> None:
        """The other instance writes its journal."""
        for r in self.unwritten:
            self.books.write(r)
        self.unwritten.clear()

    async def live(self) -> tuple[int, int, int]:
        """Redis's (credit, spent, reserved)."""
        budget = (await self.backend.status("k", T0))["budget"]
        assert isinstance(budget, dict)
        return budget["credit_micros"], budget["spent_micros"], budget["reserved_micros"]

    async def lose_redis(self) -> None:
        await self.backend._client.execute("FLUSHALL")


@asynccontextmanager
async def traffic_on(url: str) -> AsyncIterator[Traffic]:
    books = Books()
    async with open_redis_backend(
        url, seeder=books.seed, rows=books.read, prefix=f"r{uuid.uuid4().hex[:8]}:", timeout_s=1
    ) as backend:
        yield Traffic(backend, books)


async def test_requests_in_flight_at_the_restart_end_up_charged_their_actual_cost(
    redis: RedisServer,
) -> None:
    """G1: the seed sees their pending rows (worst case); their settlements go to the
    lost state; the reconcile charges the actual cost instead, once."""
    async with traffic_on(redis.url) as t:
        for i in range(3):
            await t.start(f"old{i}", T0 - 1)
        await t.lose_redis()
        await t.start("new", T0)  # seeds: the three old requests count their worst case
        assert t.books.seeds == 2
        assert await t.live() == (TOPUPS - 3 * WORST, 3 * WORST, WORST)
        for i in range(3):
            await t.finish(f"old{i}", 100 + i)  # old generation: a no-op in Redis
        await t.finish("new", 50)
        assert await t.backend.reconciler.reconcile_now() == 0  # nothing left to wait for
        assert await t.live() == (t.books.credit, t.books.spent, 0)
        assert t.books.credit == TOPUPS - 303 - 50
        assert await t.backend.reconciler.reconcile_now() == 0  # closed: nothing again
        assert await t.live() == (t.books.credit, t.books.spent, 0)


async def test_rows_another_instance_had_not_written_are_charged_once_written(
    redis: RedisServer,
) -> None:
    """G2: requests another instance settled into the lost state, rows not yet written
    when the seed read the ledger: neither counts them until the reconcile does."""
    async with traffic_on(redis.url) as t:
        await t.start("gone0", T0 - 1, written=False)
        await t.start("gone1", T0 - 1, written=False)
        await t.finish("gone0", 300, written=False)
        await t.finish("gone1", 200, written=False)
        await t.start("seen", T0 - 1)
        await t.finish("seen", 70)
        await t.lose_redis()
        await t.start("new", T0)
        assert await t.live() == (TOPUPS - 70, 70, WORST)  # the seed missed 500
        t.flush()
        await t.finish("new", 40)
        assert await t.backend.reconciler.reconcile_now() == 0
        assert await t.live() == (t.books.credit, t.books.spent, 0)
        assert t.books.credit == TOPUPS - 70 - 500 - 40


async def test_a_request_straddling_the_seed_keeps_the_window_open_until_it_ends(
    redis: RedisServer,
) -> None:
    """A stream admitted just before the restart whose row the seed could not see, and
    one it saw pending: rounds wait for both, and new traffic in the window (settled
    before or after its row is written) is counted once."""
    async with traffic_on(redis.url) as t:
        await t.start("unseen", T0 - 1, written=False)
        await t.start("seen", T0 - 1)
        await t.lose_redis()
        await t.start("new0", T0)
        t.flush()  # the unseen stream's pending row is written now
        await t.start("new1", T0)
        await t.finish("new0", 10)
        assert await t.backend.reconciler.reconcile_now() == 1  # both streams still run
        # From now on only the two streams are watched: the window keeps just theirs.
        window = t.backend.redis_key("k") + ":w"
        fields = await t.backend._client.execute("HKEYS", window)
        assert sorted(f.decode() for f in fields) == ["@g", "@log", "r:unseen", "s:seen"]
        # The unseen stream is charged its worst case meanwhile, like the seen one.
        credit, spent, reserved = await t.live()
        assert (credit, spent, reserved) == (TOPUPS - 2 * WORST - 10, 2 * WORST + 10, WORST)
        # new1's final row is written before its settlement arrives (a settlement queued
        # while Redis was slow): a round in between leaves it to its settlement, as its
        # reservation is live.
        t.books.write(row("new1", 20, T0))
        assert await t.backend.reconciler.reconcile_now() == 1
        await t.backend.settle(t.admissions.pop("new1"), 15, 20, T0)
        await t.finish("unseen", 600)
        await t.finish("seen", 400)
        assert await t.backend.reconciler.reconcile_now() == 0
        assert await t.live() == (t.books.credit, t.books.spent, 0)
        assert t.books.credit == TOPUPS - 600 - 400 - 10 - 20


async def test_a_second_loss_drops_the_first_window(redis: RedisServer) -> None:
    async with traffic_on(redis.url) as t:
        await t.start("a", T0 - 1)
        await t.lose_redis()
        await t.start("b", T0)
        await t.lose_redis()
        await t.finish("a", 5)
        await t.finish("b", 6)  # both lost: the next seed reads their final rows
        await t.start("c", T0)
        await t.finish("c", 7)
        assert await t.backend.reconciler.reconcile_now() == 0
        assert await t.live() == (t.books.credit, t.books.spent, 0)


async def test_a_settlement_sent_twice_in_the_window_is_charged_once(redis: RedisServer) -> None:
    """A settlement retried (its first reply lost) is logged in the window: not again."""
    async with traffic_on(redis.url) as t:
        await t.start("a", T0)
        admission = t.admissions["a"]
        await t.finish("a", 30)
        await t.backend.settle(admission, 15, 30, T0)
        assert await t.live() == (TOPUPS - 30, 30, 0)
        assert await t.backend.reconciler.reconcile_now() == 0
        assert await t.live() == (t.books.credit, t.books.spent, 0)


async def test_rounds_run_in_the_background_and_outlast_a_ledger_that_fails(
    redis: RedisServer,
) -> None:
    """The backend's own task runs the rounds from `delay_s` after the seed; a ledger
    that cannot be read (StoreError), or a reader that fails unforeseen, puts a round
    off: the task goes on and the next round reconciles."""
    async with traffic_on(redis.url) as t:
        r = t.backend.reconciler
        r.delay_s = r.every_s = 0.05
        failures: list[BaseException] = [StoreError("PostgreSQL away"), RuntimeError("bug")]
        read = t.books.read

        async def flaky(*args: Any) -> tuple[UsageRow, ...]:
            if failures:
                raise failures.pop(0)
            return await read(*args)

        r._reader = flaky
        await t.start("old", T0 - 1)
        await t.lose_redis()
        await t.start("new", T0)
        await t.finish("old", 100)
        await t.finish("new", 200)
        for _ in range(250):  # at most 5 s
            if not r.open_windows:
                break
            await trio.sleep(0.02)
        assert failures == [] and r.stats.retries == 1 and r.stats.closed == 1
        assert await t.live() == (t.books.credit, t.books.spent, 0)
