"""Credit across Redis losing its data, under any interleaving: exact once reconciled.

On a real redis-server, any sequence of requests started and finished (their rows
written to the ledger at once, or later, as another instance's journal would be),
journals written, Redis losing everything (FLUSHALL) and reconcile rounds (each after
every instance wrote its journal, as the round's delay provides): once every request
has finished, every row is written and the window has closed, Redis's credit and
period spend are the ledger's to the micro-dollar and nothing stays reserved
(docs/deployment.md, "Credit: one source of truth"). And while no row is missing
from the ledger at a loss, the budget is never overshot: Redis never counts less
than the ledger (credit minus reservations, spend plus reservations).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import BillingError
from gateway.store.records import PENDING, UsageRow
from tests.billing.limits.test_reconcile import T0, TOPUPS, WORST, traffic_on
from tests.redis_server import RedisServer, running_redis

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Op = tuple[str, int, bool]
ops = st.lists(
    st.tuples(
        st.sampled_from(["start", "start", "finish", "finish", "flush", "lose", "round"]),
        st.integers(0, 10_000),  # which request to finish, and its cost as a fraction
        st.booleans(),  # its row written now (else journaled, written at the next flush)
    ),
    max_size=60,
)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@PROPS
@given(steps=ops)
def test_after_any_losses_the_reconciled_credit_is_the_ledgers(
    redis_server: RedisServer, steps: list[Op]
) -> None:
    trio.run(run, redis_server.url, steps)


def truth(rows: dict[str, UsageRow], unwritten: list[UsageRow]) -> int:
    """What the ledger's rows cost once `unwritten` is written (a final row stays)."""
    merged = dict(rows)
    for r in unwritten:
        if r.request_id not in merged or merged[r.request_id].status == PENDING:
            merged[r.request_id] = r
    return sum(r.cost_micros for r in merged.values())


async def run(url: str, steps: list[Op]) -> None:
    async with traffic_on(url) as t:
        running: list[str] = []
        n = 0
        complete = True  # every row is in the ledger since the last loss
        for kind, value, written in steps:
            if kind == "start":
                n += 1
                try:
                    await t.start(f"r{n}", T0, written=written)
                except BillingError:
                    continue
                running.append(f"r{n}")
            elif kind == "finish" and running:
                await t.finish(
                    running.pop(value % len(running)), value % (WORST + 1), written=written
                )
            elif kind == "flush":
                t.flush()
            elif kind == "lose":
                complete = not t.unwritten
                await t.lose_redis()
            elif kind == "round":
                t.flush()
                await t.backend.reconciler.reconcile_now()
            budget = (await t.backend.status("k", T0))["budget"]
            if complete and isinstance(budget, dict):  # seeded since the last loss
                reserved = budget["reserved_micros"]
                spent = truth(t.books.rows, t.unwritten)  # the ledger once journals are written
                assert budget["credit_micros"] - reserved <= TOPUPS - spent
                assert budget["spent_micros"] + reserved >= spent
        for rid in running:
            await t.finish(rid, WORST // 3)
        await t.start("last", T0)  # traffic goes on: seeds if Redis lost it last
        await t.finish("last", 1)
        t.flush()
        for _ in range(5):
            if await t.backend.reconciler.reconcile_now() == 0:
                break
        assert t.backend.reconciler.open_windows == 0
        credit, spent, reserved = await t.live()
        assert (credit, spent, reserved) == (t.books.credit, t.books.spent, 0)
        assert t.books.credit <= TOPUPS
