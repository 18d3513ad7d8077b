"""The limiter and budgets (gateway/billing/limits/core.py) and the in-process backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio

from gateway.billing.limits.budget import BudgetSeed, reservation_ttl_s, zero_seed
from gateway.billing.limits.core import (
    Admission,
    KeyState,
    admit_state,
    apply_seed,
    rate_limit_header_dict,
    rate_limit_headers,
    settle_state,
    topup_state,
)
from gateway.billing.limits.memory import MemoryLimitBackend
from gateway.errors import BillingError, InternalError, InvalidRequest, RateLimited
from gateway.store.periods import SpendPeriod, period_end, period_start
from gateway.store.records import KeyLimits

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


# ------------------------------------------------------------------------ pure parts


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="rpm"):
        KeyLimits(rpm=0)
    with pytest.raises(ValueError, match="tpm"):
        KeyLimits(tpm=10**10)
    with pytest.raises(ValueError, match="spend_period"):
        KeyLimits(spend_limit_micros=5)
    with pytest.raises(ValueError, match="spend_limit"):
        KeyLimits(spend_limit_micros=-1, spend_period="day")
    assert KeyLimits().unlimited
    assert KeyLimits(prepaid=True).needs_budget
    assert not KeyLimits(rpm=5).needs_budget


@pytest.mark.parametrize(
    ("now", "period", "start", "end"),
    [
        (utc(2027, 1, 15, 8), "day", utc(2027, 1, 15), utc(2027, 1, 16)),
        (utc(2027, 1, 15, 23, 59, 59), "day", utc(2027, 1, 15), utc(2027, 1, 16)),
        (utc(2027, 1, 16), "day", utc(2027, 1, 16), utc(2027, 1, 17)),
        (utc(2027, 1, 15, 8), "month", utc(2027, 1, 1), utc(2027, 2, 1)),
        (utc(2028, 2, 29, 12), "month", utc(2028, 2, 1), utc(2028, 3, 1)),
        (utc(2027, 12, 31, 23, 59), "month", utc(2027, 12, 1), utc(2028, 1, 1)),
    ],
)
def test_periods_are_utc_calendar_periods(
    now: float, period: SpendPeriod, start: float, end: float
) -> None:
    assert period_start(period, now) == start
    assert period_end(period, now) == end
    assert period_start(None, now) == 0


def admit(
    state: KeyState,
    limits: KeyLimits,
    tokens: int = 0,
    worst: int = 0,
    now: float = T0,
    ttl_s: float = 900.0,
) -> Admission:
    adm = admit_state(
        state, "k", limits, tokens, worst, now, reservation_ttl_ms=round(ttl_s * 1000)
    )
    assert adm is not None
    return adm


def test_rpm_admits_a_burst_of_exactly_the_limit_then_refills_continuously() -> None:
    limits = KeyLimits(rpm=7)  # 60 s / 7 is not a whole number of ms
    state = KeyState()
    for _ in range(7):
        admit(state, limits)
    with pytest.raises(RateLimited) as err:
        admit(state, limits)
    assert "requests per minute" in err.value.message
    assert err.value.headers["retry-after"] == "9"  # 8571.43 ms, rounded up
    assert err.value.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimited):
        admit(state, limits, now=T0 + 8.571)
    admit(state, limits, now=T0 + 8.572)
    with pytest.raises(RateLimited):
        admit(state, limits, now=T0 + 8.572)


def test_a_window_edge_cannot_be_used_for_a_double_burst() -> None:
    """A fixed window would pass 2x around its edge; GCRA passes limit + refill."""
    limits = KeyLimits(rpm=60)
    state = KeyState()
    admitted = 0
    for ms in range(59_000, 61_000, 10):  # 2 s around a minute boundary, 200 attempts
        try:
            admit(state, limits, now=T0 + ms / 1000)
            admitted += 1
        except RateLimited:
            pass
    assert admitted == 60 + 1  # the burst, plus one refilled during those 2 s


def test_tpm_reserves_the_estimate_and_settlement_moves_it() -> None:
    limits = KeyLimits(tpm=10_000)
    state = KeyState()
    first = admit(state, limits, tokens=6_000)
    assert first.tokens is not None and first.tokens.remaining == 4_000
    with pytest.raises(RateLimited) as err:
        admit(state, limits, tokens=5_000)
    assert "tokens per minute" in err.value.message
    assert "requests per minute" not in err.value.message
    assert err.value.headers["retry-after"] == "6"  # 1000 tokens at 10000/min
    settle_state(state, first, 1_000, 0, T0)  # used far less than estimated
    second = admit(state, limits, tokens=5_000)
    assert second.tokens is not None and second.tokens.remaining == 4_000
    settle_state(state, second, 9_000, 0, T0)  # used more: the bucket goes into debt
    with pytest.raises(RateLimited) as err:
        admit(state, limits, tokens=1)
    assert err.value.headers["retry-after"] == "1"  # never 0
    assert err.value.message.endswith("Try again in 6ms.")  # 1 token at 10000/min
    with pytest.raises(RateLimited):
        admit(state, limits, tokens=1, now=T0 + 0.005)
    admit(state, limits, tokens=1, now=T0 + 0.006)


def test_both_limits_hit_are_both_named() -> None:
    limits = KeyLimits(rpm=1, tpm=100)
    state = KeyState()
    admit(state, limits, tokens=100)
    with pytest.raises(RateLimited) as err:
        admit(state, limits, tokens=50)
    assert "requests per minute (RPM)" in err.value.message
    assert "tokens per minute (TPM)" in err.value.message
    assert err.value.headers["retry-after"] == "60"


def test_headers_say_limit_remaining_and_reset() -> None:
    limits = KeyLimits(rpm=60, tpm=90_000)
    adm = admit(KeyState(), limits, tokens=1_500)
    assert rate_limit_header_dict(adm) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "90000",
        "x-ratelimit-remaining-tokens": "88500",
        "x-ratelimit-reset-tokens": "1s",
    }
    assert (b"x-ratelimit-reset-requests", b"1s") in rate_limit_headers(adm)
    only_rpm = admit(KeyState(), KeyLimits(rpm=10))
    assert [k for k, _ in rate_limit_headers(only_rpm)] == [
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
    ]
    assert rate_limit_headers(Admission(key_id="k", est_tokens=3)) == []


def seeded(limits: KeyLimits, *, spent: int = 0, credit: int = 0, now: float = T0) -> KeyState:
    state = KeyState()
    apply_seed(
        state, BudgetSeed.for_limits(limits, now, spent_micros=spent, credit_micros=credit), "g"
    )
    return state


def test_spend_limit_refuses_what_would_overshoot_and_resets_at_midnight() -> None:
    limits = KeyLimits(spend_limit_micros=1_000, spend_period="day")
    state = seeded(limits, spent=400)
    day = 86_400.0  # requests still in flight at midnight: their reservations carry over
    a = admit(state, limits, worst=500, ttl_s=day)
    with pytest.raises(BillingError) as err:
        admit(state, limits, worst=101)
    assert err.value.http_status == 402
    assert "Spend limit for this day" in err.value.message
    assert "resets at 2027-01-16 00:00 UTC" in err.value.message
    admit(state, limits, worst=100, ttl_s=day)
    settle_state(state, a, 0, 200, T0)  # cost less than the worst case: room again
    b = state.budget
    assert b is not None and (b.spent_micros, b.reserved_micros) == (600, 100)
    admit(state, limits, worst=300, ttl_s=day)
    midnight = utc(2027, 1, 16)
    with pytest.raises(BillingError):
        admit(state, limits, worst=1, now=midnight - 0.001)
    admit(state, limits, worst=600, now=midnight)
    assert b.spent_micros == 0 and b.reserved_micros == 1_000


def test_a_request_larger_than_the_whole_limit_is_refused_outright() -> None:
    backend = MemoryLimitBackend()

    async def go() -> None:
        with pytest.raises(BillingError, match="whole spend limit for this month"):
            await backend.admit(
                "k", KeyLimits(spend_limit_micros=10, spend_period="month"), 0, 11, T0
            )
        with pytest.raises(InvalidRequest, match="tokens per minute") as err:
            await backend.admit("k", KeyLimits(tpm=100), 101, 0, T0)
        assert err.value.http_status == 400

    trio.run(go)
    assert len(backend) == 0  # refused before any state was made


def test_prepaid_credit_is_reserved_and_charged() -> None:
    limits = KeyLimits(prepaid=True)
    state = seeded(limits, credit=1_000)
    a = admit(state, limits, worst=700)
    with pytest.raises(BillingError) as err:
        admit(state, limits, worst=301)
    assert "credit" in err.value.message and err.value.code == "insufficient_quota"
    settle_state(state, a, 0, 650, T0)
    b = state.budget
    assert b is not None and (b.credit_micros, b.reserved_micros, b.spent_micros) == (350, 0, 650)
    admit(state, limits, worst=350)


def test_seeding_fills_gaps_and_never_overwrites_live_counters() -> None:
    day = KeyLimits(spend_limit_micros=100, spend_period="day")
    state = seeded(day, spent=10)
    admit(state, day, worst=5)
    again = BudgetSeed.for_limits(day, T0, spent_micros=0, credit_micros=None)
    assert not apply_seed(state, again, "other")
    b = state.budget
    assert b is not None and (b.gen, b.spent_micros, b.reserved_micros) == ("g", 10, 5)
    # The key becomes prepaid and monthly: both need the ledger again.
    month_prepaid = KeyLimits(spend_limit_micros=1_000, spend_period="month", prepaid=True)
    assert admit_state(state, "k", month_prepaid, 0, 1, T0) is None
    seed = BudgetSeed.for_limits(month_prepaid, T0, spent_micros=40, credit_micros=70)
    assert apply_seed(state, seed, "other")
    assert (b.gen, b.period, b.spent_micros, b.reserved_micros, b.credit_micros) == (
        "g",
        "month",
        40,
        5,
        70,
    )
    admit(state, month_prepaid, worst=55)
    with pytest.raises(BillingError, match="credit"):
        admit(state, month_prepaid, worst=11)


def test_settlement_from_another_generation_is_not_charged_twice() -> None:
    limits = KeyLimits(spend_limit_micros=100, spend_period="day")
    state = seeded(limits)
    a = admit(state, limits, worst=50)
    # The cache was lost and seeded again (from a ledger that already has the row).
    fresh = KeyState()
    apply_seed(fresh, BudgetSeed.for_limits(limits, T0, spent_micros=30, credit_micros=None), "g2")
    assert not settle_state(fresh, a, 0, 30, T0)
    b = fresh.budget
    assert b is not None and (b.spent_micros, b.reserved_micros) == (30, 0)
    assert settle_state(state, a, 0, 30, T0)


# --------------------------------------------------------------- in-process backend


async def test_memory_backend_is_exact_under_concurrency() -> None:
    """500 tasks, each yielding to the others around its admission, against RPM=100."""
    backend = MemoryLimitBackend()
    limits = KeyLimits(rpm=100, spend_limit_micros=1_000, spend_period="day")
    admitted: list[Admission] = []
    refused: list[Exception] = []

    async def one() -> None:
        await trio.lowlevel.checkpoint()
        try:
            admitted.append(await backend.admit("k", limits, 0, 7, T0))
        except (RateLimited, BillingError) as exc:
            refused.append(exc)
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(500):
            nursery.start_soon(one)
    assert len(admitted) == 100
    assert len(refused) == 400
    assert backend.stats.admitted == 100 and backend.stats.refused == 400
    status = await backend.status("k", T0, limits)
    assert status["budget"] == {
        "period": "day",
        "period_start": period_start("day", T0),
        "spent_micros": 0,
        "reserved_micros": 700,
        "credit_micros": None,
    }
    assert status["requests"] == {"limit": 100, "remaining": 0, "reset": "1m0s"}


async def test_memory_backend_budget_is_never_overshot_by_concurrent_requests() -> None:
    backend = MemoryLimitBackend()
    limits = KeyLimits(spend_limit_micros=1_000, spend_period="day", prepaid=True)
    await backend.load(
        "k", BudgetSeed.for_limits(limits, T0, spent_micros=0, credit_micros=500), T0
    )
    admitted: list[Admission] = []

    async def one() -> None:
        await trio.lowlevel.checkpoint()
        try:
            adm = await backend.admit("k", limits, 0, 7, T0)
        except BillingError:
            return
        admitted.append(adm)
        await trio.sleep(0.01)
        await backend.settle(adm, 0, 7, T0)

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one)
    assert len(admitted) == 500 // 7
    status = await backend.status("k", T0)
    assert status["budget"] == {
        "period": "day",
        "period_start": period_start("day", T0),
        "spent_micros": 7 * 71,
        "reserved_micros": 0,
        "credit_micros": 500 - 7 * 71,
    }


async def test_memory_backend_seeds_each_key_once_from_the_ledger() -> None:
    calls: list[str] = []

    async def seeder(key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        calls.append(key_id)
        await trio.sleep(0.01)  # a ledger read in a thread
        return BudgetSeed.for_limits(limits, now, spent_micros=900, credit_micros=None)

    backend = MemoryLimitBackend(seeder=seeder)
    limits = KeyLimits(spend_limit_micros=1_000, spend_period="month")
    results: list[bool] = []

    async def one() -> None:
        try:
            await backend.admit("k", limits, 0, 30, T0)
            results.append(True)
        except BillingError:
            results.append(False)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(one)
    assert results.count(True) == 3  # 100 left after the ledger's 900
    assert calls == ["k"]  # one ledger read for the whole burst
    calls.clear()
    with pytest.raises(BillingError):
        await backend.admit("k", limits, 0, 30, T0)
    assert calls == []  # cached now


def test_topups_count_once_per_id_and_none_is_lost_while_a_seed_is_read() -> None:
    limits = KeyLimits(prepaid=True)
    state = KeyState()
    # Reported while the seed is being read: no credit cached yet, so kept pending.
    assert not topup_state(state, 100, 7)
    pending = {7: 100, 8: 50}
    # The seed was read after top-up 7 was committed, before 8.
    seed = BudgetSeed.for_limits(limits, T0, spent_micros=0, credit_micros=1_100, last_topup_id=7)
    assert apply_seed(state, seed, "g", pending)
    b = state.budget
    assert b is not None and (b.credit_micros, b.topup_id) == (1_150, 8)
    assert pending == {}
    assert topup_state(state, 50, 8)  # the refresher of another process reports 8 too
    assert topup_state(state, 25, 9)
    assert topup_state(state, 25, 9)
    assert topup_state(state, 10, None)  # no id: always added
    assert b.credit_micros == 1_185 and b.topup_id == 9


async def test_memory_backend_keeps_a_topup_reported_while_its_seed_is_read() -> None:
    read = trio.Event()
    reported = trio.Event()

    async def slow_seeder(key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        read.set()  # read: 1000 of credit, including top-up 1 but not 2
        seed = BudgetSeed.for_limits(
            limits, now, spent_micros=0, credit_micros=1_000, last_topup_id=1
        )
        await reported.wait()
        return seed

    backend = MemoryLimitBackend(seeder=slow_seeder)
    limits = KeyLimits(prepaid=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.admit, "k", limits, 0, 1, T0)
        await read.wait()
        assert not await backend.topup("k", 500, 1)
        assert not await backend.topup("k", 300, 2)
        reported.set()
    assert await backend.topup("k", 300, 2)  # reported again: counted once
    budget = (await backend.status("k", T0))["budget"]
    assert isinstance(budget, dict)
    assert (budget["credit_micros"], budget["reserved_micros"]) == (1_300, 1)


async def test_memory_backend_topup_and_unlimited_keys() -> None:
    backend = MemoryLimitBackend()
    limits = KeyLimits(prepaid=True)
    assert not await backend.topup("k", 100)  # nothing cached: the seed will include it
    with pytest.raises(BillingError, match="credit"):
        await backend.admit("k", limits, 0, 1, T0)  # zero_seed: no ledger, no credit
    assert await backend.topup("k", 100)
    adm = await backend.admit("k", limits, 0, 100, T0)
    await backend.settle(adm, 0, 60, T0)
    budget = (await backend.status("k", T0))["budget"]
    assert isinstance(budget, dict) and budget["credit_micros"] == 40
    free = await backend.admit("free", KeyLimits(), 10**6, 10**6, T0)
    assert free.requests is None and free.budget_gen is None
    await backend.settle(free, 5, 5, T0)
    assert (await backend.status("free", T0))["budget"] is None


async def test_memory_backend_forgets_idle_keys() -> None:
    backend = MemoryLimitBackend(idle_ttl_s=60)
    limits = KeyLimits(rpm=1)
    for i in range(50):
        await backend.admit(f"k{i}", limits, 0, 0, T0 + i)
    assert len(backend) == 50
    for i in range(50):
        await backend.admit(f"n{i}", limits, 0, 0, T0 + 200 + i)
    assert len(backend) == 50  # two idle entries dropped per admission
    await backend.admit("n0", limits, 0, 0, T0 + 400)  # refilled after 200 s


async def test_a_seeder_that_cannot_seed_is_a_bug_not_an_admission() -> None:
    async def wrong(key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        return await zero_seed(key_id, KeyLimits(), now)  # no period, no credit

    backend = MemoryLimitBackend(seeder=wrong)
    with pytest.raises(InternalError):
        await backend.admit("k", KeyLimits(spend_limit_micros=5, spend_period="day"), 0, 1, T0)


# ------------------------------------------------------- reservations that never settle


async def test_a_reservation_never_settled_stops_counting_after_its_ttl() -> None:
    backend = MemoryLimitBackend(reservation_ttl_s=60)
    limits = KeyLimits(spend_limit_micros=100, spend_period="day")
    await backend.admit("k", limits, 0, 100, T0)  # its gateway dies: no settlement
    with pytest.raises(BillingError, match="reserved by requests in flight"):
        await backend.admit("k", limits, 0, 1, T0 + 59.999)
    budget = (await backend.status("k", T0 + 60))["budget"]
    assert isinstance(budget, dict) and budget["reserved_micros"] == 0
    late = await backend.admit("k", limits, 0, 100, T0 + 60)
    # A request that outlived its reservation is still charged, and releases nothing.
    await backend.settle(late, 0, 30, T0 + 200)
    budget = (await backend.status("k", T0 + 200))["budget"]
    assert isinstance(budget, dict) and (budget["spent_micros"], budget["reserved_micros"]) == (
        30,
        0,
    )


async def test_a_reservation_outlives_the_deadline_admission_gives_it() -> None:
    """The overshoot of issue 10: a 1200 s request behind a fixed 900 s TTL lost its
    reservation while it ran, a second request took its place, and both were charged."""
    backend = MemoryLimitBackend()
    limits = KeyLimits(spend_limit_micros=2, spend_period="day")
    first = await backend.admit("k", limits, 0, 2, T0, reservation_ttl_s=reservation_ttl_s(1200))
    with pytest.raises(BillingError):
        await backend.admit("k", limits, 0, 1, T0 + 1000)  # the first still runs
    await backend.settle(first, 0, 2, T0 + 1200)
    with pytest.raises(BillingError):
        await backend.admit("k", limits, 0, 1, T0 + 1201)
    budget = (await backend.status("k", T0 + 1201))["budget"]
    assert isinstance(budget, dict) and budget["spent_micros"] == 2


def test_settling_twice_or_after_expiry_never_releases_another_reservation() -> None:
    limits = KeyLimits(spend_limit_micros=100, spend_period="day")
    state = seeded(limits)
    a = admit(state, limits, worst=60, ttl_s=60)
    admit(state, limits, worst=40, ttl_s=600)
    assert settle_state(state, a, 0, 10, T0)
    assert settle_state(state, a, 0, 0, T0)  # a retried settlement: charged 0, no release
    b = state.budget
    assert b is not None and (b.spent_micros, b.reserved_micros) == (10, 40)
    with pytest.raises(BillingError):
        admit(state, limits, worst=51)
    c = admit(state, limits, worst=50, ttl_s=60)
    admit(state, limits, worst=10, now=T0 + 60, ttl_s=600)  # c expired unsettled
    assert b.reserved_micros == 50
    settle_state(state, c, 0, 0, T0 + 61)  # c's settlement arrives after its expiry
    assert b.reserved_micros == 50  # the other two are still reserved


def test_a_reservation_leaked_before_midnight_is_gone_the_next_day() -> None:
    limits = KeyLimits(spend_limit_micros=100, spend_period="day")
    state = seeded(limits, now=utc(2027, 1, 15, 23, 50))
    admit(state, limits, worst=90, now=utc(2027, 1, 15, 23, 50))  # never settled
    next_day = utc(2027, 1, 16, 0, 30)
    admit(state, limits, worst=100, now=next_day)
    b = state.budget
    assert b is not None and (b.spent_micros, b.reserved_micros) == (0, 100)
