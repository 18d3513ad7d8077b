"""The Redis limit backend against a real redis-server on a loopback port.

Exactness under concurrency (trio tasks, and two OS processes with their own
clients), agreement with the in-process backend op for op, seeding and generations,
and what happens when Redis is killed or hangs: rate limits fail open (counted),
budgets fail closed (503), and everything recovers when Redis is back.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import openai
import pytest
import trio
from openai import OpenAI

from bench.fakes.threaded import BackgroundTrio
from gateway.app import create_app
from gateway.billing.limits import redis as limits_redis
from gateway.billing.limits.budget import BudgetSeed, Seeder, zero_seed
from gateway.billing.limits.core import Admission, LimitBackend, rate_limit_headers
from gateway.billing.limits.memory import MemoryLimitBackend
from gateway.billing.limits.redis import RedisLimitBackend, open_redis_backend
from gateway.config import load_config
from gateway.errors import (
    BillingError,
    GatewayError,
    GatewayUnavailable,
    InternalError,
    RateLimited,
)
from gateway.store.records import KeyLimits
from tests.conftest import ADMIN_KEY, serve_app
from tests.paths import REPO
from tests.redis_server import RedisServer

T0 = 1_800_000_000.0
ROOT = REPO


@asynccontextmanager
async def backend_on(
    url: str,
    *,
    seeder: Seeder = zero_seed,
    timeout_s: float = 1.0,
    breaker_s: float = 1.0,
    reservation_ttl_s: float = 900.0,
    prefix: str | None = None,
) -> AsyncIterator[RedisLimitBackend]:
    """A backend with a fresh key prefix, so tests sharing a server never collide.

    The exactness tests use a 1 s deadline so that a loaded CI machine cannot turn a
    slow reply into a fail-open admission; they also assert that none failed open.
    """
    async with open_redis_backend(
        url,
        seeder=seeder,
        prefix=prefix or f"t{uuid.uuid4().hex[:8]}:",
        timeout_s=timeout_s,
        breaker_s=breaker_s,
        reservation_ttl_s=reservation_ttl_s,
    ) as backend:
        yield backend


async def admit_all(
    backend: LimitBackend, limits: KeyLimits, n: int, *, worst: int = 0, now: float = T0
) -> tuple[list[Admission], list[GatewayError]]:
    """Release `n` admissions at once; the admitted and the refused."""
    admitted: list[Admission] = []
    refused: list[GatewayError] = []

    async def one() -> None:
        try:
            admitted.append(await backend.admit("k", limits, 10, worst, now))
        except (RateLimited, BillingError) as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return admitted, refused


async def until_the_breaker_closes(backend: RedisLimitBackend) -> None:
    """Wait (at most 5 s) for the flusher's probe to find Redis back."""
    for _ in range(100):
        if not backend.breaker_open:
            return
        await trio.sleep(0.05)
    raise AssertionError("the breaker never closed")


# ------------------------------------------------------------------------ exactness


async def test_400_concurrent_admissions_against_rpm_100_admit_exactly_100(
    redis: RedisServer,
) -> None:
    async with backend_on(redis.url) as backend:
        admitted, refused = await admit_all(backend, KeyLimits(rpm=100, tpm=100_000), 400)
        assert backend.stats.fail_open == 0 and backend.stats.store_errors == 0
        assert len(admitted) == 100
        assert len(refused) == 300
        assert all("requests per minute" in e.message for e in refused)
        assert {e.headers["retry-after"] for e in refused} == {"1"}  # 600 ms
        remaining = sorted(a.requests.remaining for a in admitted if a.requests)
        assert remaining == list(range(100))  # each admission saw its own place


async def test_a_tiny_budget_hit_by_200_concurrent_requests_is_never_overshot(
    redis: RedisServer,
) -> None:
    limits = KeyLimits(spend_limit_micros=1_000, spend_period="day")
    async with backend_on(redis.url) as backend:
        admitted, refused = await admit_all(backend, limits, 200, worst=7)
        assert backend.stats.fail_open == 0 and backend.stats.store_errors == 0
        assert len(admitted) == 1_000 // 7
        assert all(isinstance(e, BillingError) for e in refused)
        budget = (await backend.status("k", T0))["budget"]
        assert isinstance(budget, dict)
        assert (budget["spent_micros"], budget["reserved_micros"]) == (0, 994)

        async def settle(adm: Admission) -> None:
            await backend.settle(adm, 10, 5, T0)

        async with trio.open_nursery() as nursery:
            for adm in admitted:
                nursery.start_soon(settle, adm)
        budget = (await backend.status("k", T0))["budget"]
        assert isinstance(budget, dict)
        assert (budget["spent_micros"], budget["reserved_micros"]) == (710, 0)
        more, _ = await admit_all(backend, limits, 100, worst=7)
        assert len(more) == 290 // 7


async def test_a_burst_of_settlements_does_not_read_as_redis_down(redis: RedisServer) -> None:
    """Thousands of streams ending at once (their client died) queue for connections;
    waiting past the timeout used to count as a store failure, open the breaker and
    fail every budgeted admission closed for a second. Settlements that would queue
    behind a full pool are deferred instead, and all land."""
    limits = KeyLimits(spend_limit_micros=10_000_000, spend_period="day")
    n = 3_000
    async with open_redis_backend(
        redis.url, prefix=f"t{uuid.uuid4().hex[:8]}:", timeout_s=0.05, max_connections=4
    ) as backend:
        admitted = [await backend.admit("k", limits, 10, 7, T0) for _ in range(n)]
        assert backend.stats.store_errors == 0

        async def settle(adm: Admission) -> None:
            await backend.settle(adm, 10, 5, T0)

        async with trio.open_nursery() as nursery:
            for adm in admitted:
                nursery.start_soon(settle, adm)
        assert backend.stats.store_errors == 0
        assert backend.stats.settle_deferred > 0  # the burst was queued, not timed out
        assert await backend.flush() == 0
        await backend.admit("k", limits, 10, 7, T0)  # the breaker stayed closed
        budget = (await backend.status("k", T0))["budget"]
        assert isinstance(budget, dict)
        assert (budget["spent_micros"], budget["reserved_micros"]) == (5 * n, 7)


async def test_settlement_corrects_tokens_down_and_up(redis: RedisServer) -> None:
    limits = KeyLimits(tpm=10_000)
    async with backend_on(redis.url) as backend:
        first = await backend.admit("k", limits, 6_000, 0, T0)
        with pytest.raises(RateLimited, match="tokens per minute"):
            await backend.admit("k", limits, 5_000, 0, T0)
        await backend.settle(first, 1_000, 0, T0)
        second = await backend.admit("k", limits, 5_000, 0, T0)
        assert second.tokens is not None and second.tokens.remaining == 4_000
        await backend.settle(second, 9_000, 0, T0)
        status = await backend.status("k", T0, limits)
        assert status["tokens"] == {"limit": 10_000, "remaining": 0, "reset": "1m0s"}
        with pytest.raises(RateLimited) as err:
            await backend.admit("k", limits, 1, 0, T0)
        assert err.value.message.endswith("Try again in 6ms.")
        assert err.value.headers["x-ratelimit-remaining-tokens"] == "0"


# ------------------------------------------------------------------- two processes

_WORKER = "from tests.billing.limits.test_redis import worker_main; worker_main()"


def worker_main() -> None:
    """A separate OS process: its own client; says "ready", waits for "go", fires."""
    url, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    prefix = sys.argv[4]
    limits = (
        KeyLimits(rpm=100)
        if mode == "rpm"
        else KeyLimits(spend_limit_micros=1_000, spend_period="day", prepaid=True)
    )

    async def seeder(key_id: str, lim: KeyLimits, now: float) -> BudgetSeed:
        return BudgetSeed.for_limits(lim, now, spent_micros=0, credit_micros=800)

    async def main() -> None:
        async with open_redis_backend(url, seeder=seeder, prefix=prefix, timeout_s=2.0) as backend:
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
            admitted, _ = await admit_all(backend, limits, n, worst=7)
            print(json.dumps({"admitted": len(admitted), "fail_open": backend.stats.fail_open}))

    trio.run(main)


def run_two_workers(url: str, mode: str, n: int, prefix: str) -> list[dict[str, int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, mode, str(n), prefix],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line == "ready\n", (line, p.stderr.read() if p.stderr else "")
        for p in procs:  # release both at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=20)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_processes_on_one_redis_admit_exactly_100_of_400(redis: RedisServer) -> None:
    results = run_two_workers(redis.url, "rpm", 200, f"p{uuid.uuid4().hex[:8]}:")
    assert [r["fail_open"] for r in results] == [0, 0]
    assert sum(r["admitted"] for r in results) == 100


def test_two_processes_never_overshoot_a_tiny_budget(redis: RedisServer) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}:"
    results = run_two_workers(redis.url, "budget", 100, prefix)
    # Spend limit 1000, credit 800, worst case 7: the credit binds at 114 requests.
    assert sum(r["admitted"] for r in results) == 800 // 7

    async def check() -> None:
        async with open_redis_backend(redis.url, prefix=prefix) as backend:
            budget = (await backend.status("k", T0))["budget"]
            assert isinstance(budget, dict)
            assert budget["reserved_micros"] == 7 * (800 // 7)
            assert budget["credit_micros"] == 800

    trio.run(check)


# --------------------------------------------------------------- same as in-process


def outcome(result: Admission | GatewayError) -> object:
    """What a caller can observe of an admission or a refusal (not the random gen)."""
    if isinstance(result, GatewayError):
        return (type(result).__name__, result.message, result.headers)
    return (
        result.est_tokens,
        result.tpm,
        result.reserved_micros,
        result.budget_gen is not None,
        result.requests,
        result.tokens,
        result.degraded,
    )


async def test_redis_agrees_with_the_in_process_backend_op_for_op(redis: RedisServer) -> None:
    configs = [
        KeyLimits(rpm=7, tpm=1_000),
        KeyLimits(rpm=3, spend_limit_micros=500, spend_period="day"),
        KeyLimits(tpm=MAX_TPM, spend_limit_micros=10**15, spend_period="month", prepaid=True),
        KeyLimits(prepaid=True),
        KeyLimits(tpm=1_000, spend_limit_micros=300, spend_period="month"),
    ]

    async def seeder(key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        return BudgetSeed.for_limits(limits, now, spent_micros=50, credit_micros=400)

    memory = MemoryLimitBackend(seeder=seeder, reservation_ttl_s=900)
    async with backend_on(redis.url, seeder=seeder) as shared:
        rng = random.Random(4)
        now = FEB_1_2027 - 2_000.0  # crosses a UTC day and month boundary on the way
        flight: list[tuple[Admission, Admission]] = []
        next_topup = 1
        for _ in range(600):
            now += rng.choice([0.0, 0.001, 0.137, 1.0, 9.0, 61.0])
            key = f"k{rng.randrange(3)}"
            limits = rng.choice(configs)
            r = rng.random()
            if r < 0.6:
                tokens = rng.choice([0, 1, 250, 999, 10**6, 10**8])
                worst = rng.choice([0, 1, 49, 120, 10**9])
                results: list[Admission | GatewayError] = []
                for b in (memory, shared):
                    try:
                        results.append(await b.admit(key, limits, tokens, worst, now))
                    except GatewayError as exc:
                        results.append(exc)
                assert outcome(results[0]) == outcome(results[1])
                if isinstance(results[0], Admission) and isinstance(results[1], Admission):
                    flight.append((results[0], results[1]))
            elif r < 0.9 and flight:
                m, s = flight.pop(rng.randrange(len(flight)))
                actual_tokens = rng.choice([0, m.est_tokens, m.est_tokens * 3 + 7])
                actual_cost = rng.randrange(m.reserved_micros + 1) if rng.random() < 0.9 else 77
                await memory.settle(m, actual_tokens, actual_cost, now)
                await shared.settle(s, actual_tokens, actual_cost, now)
            else:
                micros = rng.choice([1, 100, 5_000])
                # Identified top-ups only where credit is cached: a pending one lives
                # in Redis for a TTL, in memory until its seed (tested on its own).
                cached = await memory.status(key, now)
                budget = cached["budget"]
                has_credit = isinstance(budget, dict) and budget["credit_micros"] is not None
                topup_id = None
                if has_credit:
                    topup_id = rng.choice([None, next_topup, max(1, next_topup - 1)])
                next_topup += 1
                assert await memory.topup(key, micros, topup_id) == await shared.topup(
                    key, micros, topup_id
                )
            assert await memory.status(key, now, limits) == await shared.status(key, now, limits)
        assert shared.stats.store_errors == 0
        assert memory.stats.admitted == shared.stats.admitted > 100
        assert memory.stats.refused == shared.stats.refused > 100


MAX_TPM = 1_000_000_000
FEB_1_2027 = 1_801_440_000.0  # 2027-02-01 00:00 UTC


# ---------------------------------------------------------------- seeding, TTLs


async def test_seeding_happens_once_and_again_after_redis_loses_its_data(
    redis: RedisServer,
) -> None:
    ledger = {"spent": 0, "credit": 1_000}
    seeds: list[str] = []

    async def seeder(key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        seeds.append(key_id)
        return BudgetSeed.for_limits(
            limits, now, spent_micros=ledger["spent"], credit_micros=ledger["credit"]
        )

    limits = KeyLimits(spend_limit_micros=5_000, spend_period="month", prepaid=True)
    async with backend_on(redis.url, seeder=seeder) as backend:
        old = await backend.admit("k", limits, 0, 400, T0)
        await backend.admit("k", limits, 0, 400, T0)
        assert seeds == ["k"]
        with pytest.raises(BillingError, match="credit"):
            await backend.admit("k", limits, 0, 400, T0)
        assert await backend.topup("k", 500)
        await backend.admit("k", limits, 0, 400, T0)
        # Redis loses the key (a restart without persistence); the ledger has one
        # settled row of 300 and the topup.
        await backend._client.execute("DEL", backend.redis_key("k"))
        ledger.update(spent=300, credit=1_200)
        fresh = await backend.admit("k", limits, 0, 100, T0)
        assert seeds == ["k", "k"]
        await backend.settle(old, 0, 300, T0)  # the old generation: not charged again
        budget = (await backend.status("k", T0))["budget"]
        assert isinstance(budget, dict)
        assert budget == {
            "period": "month",
            "period_start": 1_798_761_600,
            "spent_micros": 300,
            "reserved_micros": 100,
            "credit_micros": 1_200,
        }
        await backend.settle(fresh, 0, 100, T0)
        budget = (await backend.status("k", T0))["budget"]
        assert isinstance(budget, dict)
        assert (budget["spent_micros"], budget["credit_micros"]) == (400, 1_100)

        # A burst on a key not seen before reads the ledger once, not once per request.
        seeds.clear()
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(backend.admit, "new", limits, 0, 1, T0)
        assert seeds == ["new"]


async def test_a_topup_reported_by_every_process_and_during_a_seed_counts_once(
    redis: RedisServer,
) -> None:
    limits = KeyLimits(prepaid=True)
    ledger_read = trio.Event()
    topup_reported = trio.Event()

    async def slow_seeder(key_id: str, lim: KeyLimits, now: float) -> BudgetSeed:
        ledger_read.set()  # read: 1000 of credit, including top-up 1 but not 2
        seed = BudgetSeed.for_limits(lim, now, spent_micros=0, credit_micros=1_000, last_topup_id=1)
        await topup_reported.wait()
        return seed

    async with (
        backend_on(redis.url, seeder=slow_seeder) as one,
        open_redis_backend(redis.url, prefix=one.redis_key("")[: -len("{}")]) as two,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one.admit, "k", limits, 0, 1, T0)
            await ledger_read.wait()
            # Both processes' refreshers report top-ups 1 (in the seed) and 2 (not).
            for backend in (one, two):
                assert not await backend.topup("k", 500, 1)
                assert not await backend.topup("k", 300, 2)
            topup_reported.set()
        for backend in (one, two):
            assert await backend.topup("k", 300, 2)  # reported again later: a no-op
        budget = (await two.status("k", T0))["budget"]
        assert isinstance(budget, dict)
        assert (budget["credit_micros"], budget["reserved_micros"]) == (1_300, 1)


async def test_state_expires_when_idle(redis: RedisServer) -> None:
    async with backend_on(redis.url) as backend:
        await backend.admit("rates", KeyLimits(rpm=60), 0, 0, T0)
        ttl_ms = await backend._client.execute("PTTL", backend.redis_key("rates"))
        assert 1_000 < ttl_ms <= 2_000  # 1 s of backlog plus 1 s of margin
        await backend.admit("budget", KeyLimits(rpm=60, prepaid=True), 0, 0, T0)
        ttl_ms = await backend._client.execute("PTTL", backend.redis_key("budget"))
        assert 86_000_000 < ttl_ms <= 86_400_000
        await backend.admit("free", KeyLimits(), 0, 0, T0)
        assert await backend._client.execute("EXISTS", backend.redis_key("free")) == 0


# ------------------------------------------------------------------- Redis failures


async def test_redis_killed_rates_fail_open_budgets_fail_closed_then_recover(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    rates = KeyLimits(rpm=1)
    budget = KeyLimits(spend_limit_micros=1_000, spend_period="day")
    seeds: list[float] = []

    async def seeder(key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        seeds.append(now)
        return BudgetSeed.for_limits(limits, now, spent_micros=0, credit_micros=None)

    caplog.set_level(logging.WARNING, logger="gateway.billing.limits.core")
    async with backend_on(own_redis.url, seeder=seeder, timeout_s=0.2, breaker_s=1.0) as backend:
        await backend.admit("r", rates, 0, 0, T0)
        before = await backend.admit("b", budget, 0, 100, T0)
        own_redis.kill()

        with trio.fail_after(2):
            degraded = await backend.admit("r", rates, 0, 0, T0 + 0.1)  # over RPM, let through
        assert degraded.degraded and rate_limit_headers(degraded) == []
        assert backend.stats.fail_open == 1 and backend.stats.store_errors == 1
        with pytest.raises(GatewayUnavailable) as err:
            await backend.admit("b", budget, 0, 100, T0 + 0.2)
        assert err.value.http_status == 503 and err.value.code == "budget_unavailable"
        assert err.value.type == "gateway_unavailable_error"  # the gateway's store, not upstream
        assert "budget service is unavailable" in err.value.message
        assert backend.stats.fail_closed == 1
        await backend.settle(before, 0, 80, T0 + 0.3)  # queued, not raised
        await backend.settle(degraded, 0, 0, T0 + 0.3)  # nothing was reserved
        assert backend.pending_settlements == 1
        assert backend.stats.store_errors == 1  # the breaker is open: no new attempts
        await trio.sleep(1.3)  # the flusher's probe fails: still open, one more error
        await backend.admit("r", rates, 0, 0, T0 + 1.2)  # fails fast, Redis still down
        assert backend.stats.fail_open == 2 and backend.stats.store_errors == 2
        warnings = [r for r in caplog.records if r.name == "gateway.billing.limits.core"]
        assert len(warnings) == 1 and "fail open" in warnings[0].getMessage()

        own_redis.start()  # back, empty
        await until_the_breaker_closes(backend)
        later = T0 + 3
        await backend.admit("r", rates, 0, 0, later)
        with pytest.raises(RateLimited):
            await backend.admit("r", rates, 0, 0, later)  # enforced again
        after = await backend.admit("b", budget, 0, 100, later)
        assert len(seeds) == 2  # Redis forgot the budget: seeded again from the ledger
        await backend.settle(after, 0, 90, later)
        assert backend.pending_settlements == 0  # the queued one was retried (old gen)
        status = (await backend.status("b", later))["budget"]
        assert isinstance(status, dict)
        assert (status["spent_micros"], status["reserved_micros"]) == (90, 0)


async def test_a_hung_redis_costs_at_most_the_timeout_and_replies_stay_in_order(
    own_redis: RedisServer,
) -> None:
    limits = KeyLimits(rpm=100)
    async with backend_on(own_redis.url, timeout_s=0.2, breaker_s=0.5) as backend:
        for _ in range(3):
            await backend.admit("k", limits, 0, 0, T0)
        own_redis.pause()
        try:
            start = trio.current_time()
            adm = await backend.admit("k", limits, 0, 0, T0)
            assert adm.degraded
            assert trio.current_time() - start < 0.6
            with pytest.raises(GatewayUnavailable):
                await backend.admit("b", KeyLimits(prepaid=True), 0, 1, T0 + 0.02)
        finally:
            own_redis.resume()
        await trio.sleep(0.1)  # the paused server now answers the abandoned call
        await until_the_breaker_closes(backend)
        # No reply of the abandoned call may be read as the answer to a later one: the
        # remaining counts go down one by one (the abandoned admission may have run).
        seen = []
        for _ in range(20):
            adm = await backend.admit("k", limits, 0, 0, T0 + 0.5)
            assert not adm.degraded and adm.requests is not None
            seen.append(adm.requests.remaining)
        assert seen[0] in (100 - 4, 100 - 5)
        assert seen == list(range(seen[0], seen[0] - 20, -1))
        assert backend.stats.fail_open == 1


# ------------------------------------------------------- reservations that never settle

DAY = KeyLimits(spend_limit_micros=100, spend_period="day")


async def budget_of(backend: RedisLimitBackend, now: float) -> tuple[object, object]:
    budget = (await backend.status("k", now))["budget"]
    assert isinstance(budget, dict)
    return budget["spent_micros"], budget["reserved_micros"]


async def test_an_admission_that_timed_out_but_ran_later_is_released(
    own_redis: RedisServer,
) -> None:
    async with backend_on(own_redis.url, timeout_s=0.2, breaker_s=1.0) as backend:
        await backend.admit("k", DAY, 0, 10, T0)
        own_redis.pause()
        try:
            with pytest.raises(GatewayUnavailable):
                await backend.admit("k", DAY, 0, 90, T0)  # 503: the caller gives up
        finally:
            own_redis.resume()
        await trio.sleep(0.1)
        assert await budget_of(backend, T0) == (0, 100)  # yet the script ran and reserved
        for _ in range(100):  # the compensating release, once the breaker closes
            if not backend.pending_settlements:
                break
            await trio.sleep(0.05)
        assert await budget_of(backend, T0) == (0, 10)
        await backend.admit("k", DAY, 0, 90, T0 + 2)


async def test_a_release_that_overtakes_its_admission_stops_it_reserving(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits_redis, "new_reservation_id", lambda: "r1")
    async with backend_on(redis.url) as backend:
        await backend.load(
            "k", BudgetSeed.for_limits(DAY, T0, spent_micros=0, credit_micros=None), T0
        )
        backend._cancel("k", "r1", 90, T0, 960_000)  # the release arrives first
        assert await backend.flush(T0) == 0
        with pytest.raises(InternalError):
            await backend.admit("k", DAY, 0, 90, T0)  # the late admission: refused to run
        assert await budget_of(backend, T0) == (0, 0)


async def test_a_reservation_never_settled_is_released_after_its_ttl(redis: RedisServer) -> None:
    async with backend_on(redis.url, reservation_ttl_s=60) as backend:
        await backend.admit("k", DAY, 0, 100, T0)  # its gateway is killed: no settlement
        with pytest.raises(BillingError, match="reserved by requests in flight"):
            await backend.admit("k", DAY, 0, 1, T0 + 59.999)
        assert await budget_of(backend, T0 + 60) == (0, 0)
        late = await backend.admit("k", DAY, 0, 100, T0 + 60)
        await backend.settle(late, 0, 30, T0 + 200)  # charged, releases nothing else
        assert await budget_of(backend, T0 + 200) == (30, 0)


async def test_a_reservation_outlives_the_deadline_admission_gives_it(redis: RedisServer) -> None:
    limits = KeyLimits(spend_limit_micros=2, spend_period="day")
    async with backend_on(redis.url, reservation_ttl_s=900) as backend:
        first = await backend.admit("k", limits, 0, 2, T0, reservation_ttl_s=1260)
        with pytest.raises(BillingError):
            await backend.admit("k", limits, 0, 1, T0 + 1000)  # past 900 s: still counts
        await backend.settle(first, 0, 2, T0 + 1200)
        with pytest.raises(BillingError):
            await backend.admit("k", limits, 0, 1, T0 + 1201)


async def test_settling_twice_releases_once(redis: RedisServer) -> None:
    async with backend_on(redis.url) as backend:
        a = await backend.admit("k", DAY, 0, 60, T0)
        await backend.admit("k", DAY, 0, 40, T0)
        await backend.settle(a, 0, 10, T0)
        await backend.settle(a, 0, 0, T0)  # a retried settlement
        assert await budget_of(backend, T0) == (10, 40)
        with pytest.raises(BillingError):
            await backend.admit("k", DAY, 0, 51, T0)


async def test_a_reservation_leaked_before_midnight_is_gone_the_next_day(
    redis: RedisServer,
) -> None:
    evening = 1_800_057_600.0 - 600  # 2027-01-15 23:50 UTC
    async with backend_on(redis.url) as backend:
        await backend.admit("k", DAY, 0, 90, evening)  # never settled
        next_day = evening + 3_600
        assert await budget_of(backend, next_day) == (0, 0)
        await backend.admit("k", DAY, 0, 100, next_day)


async def test_queued_settlements_are_drained_when_the_backend_closes(
    redis: RedisServer,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    async with backend_on(redis.url, prefix=prefix) as backend:
        a = await backend.admit("k", DAY, 0, 100, T0)
        backend._open, backend._open_until = True, float("inf")  # as if Redis had failed
        await backend.settle(a, 0, 40, T0 + 1)
        assert backend.pending_settlements == 1
    async with backend_on(redis.url, prefix=prefix) as again:
        assert await budget_of(again, T0 + 2) == (40, 0)


# ------------------------------------------------- a frozen Redis, through the gateway

FROZEN_CONFIG = """
[state]
sqlite_path = "{dir}/gateway.sqlite3"
admin_key = "{admin}"
redis_url = "{redis}"

[providers.mock]
kind = "mock"

[models."mock-priced"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0
price_input_per_mtok = 1
price_output_per_mtok = 1
"""


def _managed_key(base: str, **spec: object) -> str:
    r = httpx.post(
        f"{base}/admin/keys",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={"name": f"k{uuid.uuid4().hex[:6]}", **spec},
    )
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def test_a_frozen_redis_costs_one_timeout_then_requests_fail_fast_until_a_probe_succeeds(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis stopped with SIGSTOP keeps its sockets and answers nothing: only the first
    request waits for `redis_timeout_s` (1 s); the breaker then answers every request
    at once (rate limits open, budgets closed, 503) until a probe finds Redis back."""
    path = tmp_path / "gateway.toml"
    path.write_text(FROZEN_CONFIG.format(dir=tmp_path, admin=ADMIN_KEY, redis=own_redis.url))
    app = create_app(load_config(path))
    hello = [{"role": "user", "content": "hi"}]
    with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
        base = f"http://127.0.0.1:{port}"
        rates = OpenAI(base_url=f"{base}/v1", api_key=_managed_key(base, rpm=1000), max_retries=0)
        budget = OpenAI(
            base_url=f"{base}/v1",
            api_key=_managed_key(base, spend_limit_micros=10**6, spend_period="day"),
            max_retries=0,
        )
        raw = rates.chat.completions.with_raw_response.create(model="mock-priced", messages=hello)  # type: ignore[arg-type]
        assert raw.headers["x-ratelimit-limit-requests"] == "1000"
        budget.chat.completions.create(model="mock-priced", messages=hello)  # type: ignore[arg-type]

        own_redis.pause()
        try:
            start = time.monotonic()
            raw = rates.chat.completions.with_raw_response.create(
                model="mock-priced",
                messages=hello,  # type: ignore[arg-type]
            )
            assert "x-ratelimit-limit-requests" not in raw.headers  # admitted unlimited
            assert time.monotonic() - start >= 0.9  # the one request that waits
            waits = []
            for _ in range(10):
                start = time.monotonic()
                raw = rates.chat.completions.with_raw_response.create(
                    model="mock-priced",
                    messages=hello,  # type: ignore[arg-type]
                )
                assert "x-ratelimit-limit-requests" not in raw.headers
                with pytest.raises(openai.InternalServerError) as err:
                    budget.chat.completions.create(model="mock-priced", messages=hello)  # type: ignore[arg-type]
                assert err.value.status_code == 503 and err.value.code == "budget_unavailable"
                waits.append(time.monotonic() - start)
            # Two requests each, none waiting for the timeout: the breaker answered them.
            # (Spread over more than the 1 s breaker: its probes fail while Redis is frozen.)
            assert max(waits) < 0.5, waits
        finally:
            own_redis.resume()
        deadline = time.monotonic() + 5
        while True:  # enforced again once a probe succeeds
            raw = rates.chat.completions.with_raw_response.create(
                model="mock-priced",
                messages=hello,  # type: ignore[arg-type]
            )
            if "x-ratelimit-limit-requests" in raw.headers:
                break
            assert time.monotonic() < deadline, "the breaker never closed"
            time.sleep(0.1)
        budget.chat.completions.create(model="mock-priced", messages=hello)  # type: ignore[arg-type]
