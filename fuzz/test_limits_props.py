"""Properties of the limiter and budget state machine (gateway/limits.py), any input.

GCRA: over any arrival sequence, the units admitted in any span of t ms never exceed
`limit + t * limit / 60000` (a burst of `limit`, then the continuous refill: no 2x at
a window edge), a burst from empty admits exactly `limit`, and Retry-After is exact.
Budgets: under any interleaving of admissions, settlements, topups and time passing,
spend plus reservations never exceed the limit, credit never goes below the
reservations, every refusal was necessary, a reservation counts exactly until it is
settled or expires, and settling everything leaves the exact sums. Header durations
parse back to the milliseconds they render.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.billing.limits.budget import BudgetSeed, purge_reservations, reservation_ttl_s
from gateway.billing.limits.core import (
    Admission,
    KeyState,
    admit_state,
    apply_seed,
    check_request,
    settle_state,
    status_dict,
)
from gateway.billing.limits.gcra import WINDOW_MS, backlog, to_ms
from gateway.billing.limits.responses import format_duration
from gateway.errors import BillingError, RateLimited
from gateway.store.periods import SpendPeriod, period_start
from gateway.store.records import MAX_LIMIT, KeyLimits

T0 = 1_800_000_000.0  # a fixed epoch: 2027-01-15, not at a period boundary
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def admit_units(state: KeyState, limits: KeyLimits, units: int, now: float) -> Admission | None:
    """Admit one request of `units` tokens on a TPM-only key; None if refused (429)."""
    try:
        return admit_state(state, "k", limits, units, 0, now)
    except RateLimited:
        return None


arrivals = st.lists(
    st.tuples(st.integers(0, 5_000), st.integers(0, 40)),  # (ms since last, units)
    min_size=1,
    max_size=200,
)


@PROPS
@given(limit=st.integers(1, 60), steps=arrivals)
def test_gcra_never_admits_more_than_burst_plus_refill(
    limit: int, steps: list[tuple[int, int]]
) -> None:
    limits = KeyLimits(tpm=limit)
    state = KeyState()
    admitted: list[tuple[int, int]] = []  # (ms, units)
    t_ms = 0
    for gap, units in steps:
        t_ms += gap
        units = min(units, limit)
        if admit_units(state, limits, units, T0 + t_ms / 1000) is not None:
            admitted.append((t_ms, units))
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, units in admitted[i:]:
            total += units
            # total <= limit + (end - start) * limit / 60000, in integers
            assert total * WINDOW_MS <= limit * WINDOW_MS + (end - start) * limit


@PROPS
@given(limit=st.integers(1, 10_000), extra=st.integers(1, 50))
def test_a_burst_from_empty_admits_exactly_the_limit(limit: int, extra: int) -> None:
    limits = KeyLimits(rpm=limit)
    state = KeyState()
    results = []
    for _ in range(limit + extra):
        try:
            admit_state(state, "k", limits, 0, 0, T0)
            results.append(True)
        except RateLimited:
            results.append(False)
    assert results.count(True) == limit
    assert all(results[:limit])


@PROPS
@given(limit=st.integers(1, 1_000), steps=arrivals, units=st.integers(1, 1_000))
def test_retry_after_is_exact(limit: int, steps: list[tuple[int, int]], units: int) -> None:
    """A refused request fits at now + its retry time, and not a millisecond before."""
    limits = KeyLimits(tpm=limit)
    units = min(units, limit)
    state = KeyState()
    t_ms = 0
    for gap, n in steps:
        t_ms += gap
        admit_units(state, limits, min(n * 25, limit), T0 + t_ms / 1000)
    lvl = backlog(state.tokens, round(T0 * 1000) + t_ms, limit)
    excess = lvl + units * WINDOW_MS - WINDOW_MS * limit
    if excess <= 0:
        assert admit_units(copy.deepcopy(state), limits, units, T0 + t_ms / 1000) is not None
        return
    wait_ms = -(-excess // limit)
    with pytest.raises(RateLimited) as err:
        admit_state(copy.deepcopy(state), "k", limits, units, 0, T0 + t_ms / 1000)
    assert int(err.value.headers["retry-after"]) == max(1, -(-wait_ms // 1000))
    assert err.value.message.endswith(f"Try again in {format_duration(wait_ms)}.")
    assert admit_units(copy.deepcopy(state), limits, units, T0 + (t_ms + wait_ms) / 1000)
    assert not admit_units(copy.deepcopy(state), limits, units, T0 + (t_ms + wait_ms - 1) / 1000)


@PROPS
@given(
    limit=st.integers(1, MAX_LIMIT),
    ops=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**6)), max_size=50),
)
def test_settling_down_never_makes_the_bucket_hold_more_than_the_limit(
    limit: int, ops: list[tuple[int, int]]
) -> None:
    """However much is refunded, a burst right after admits at most `limit` units."""
    limits = KeyLimits(tpm=limit)
    state = KeyState()
    for est, actual in ops:
        adm = admit_units(state, limits, min(est, limit), T0)
        if adm is not None:
            settle_state(state, adm, actual, 0, T0)
    assert backlog(state.tokens, round(T0 * 1000), limit) >= 0
    total = 0
    while (adm := admit_units(state, limits, min(limit, 10**6), T0)) is not None:
        total += adm.est_tokens
        if total > limit:
            break
    assert total <= limit


# ----------------------------------------------------------------------- budgets


@dataclass
class Model:
    """The reference: what a budget must be after each operation."""

    spent: int = 0
    reserved: int = 0
    credit: int = 0


@dataclass
class Request:
    """An admitted request: its admission, when it ends, and whether it settles."""

    admission: Admission
    ends_ms: int  # admission + its duration (at most the deadline): it settles then
    expires_ms: int  # when its reservation stops counting unsettled
    lost: bool = False  # its settlement never comes (a killed gateway)
    actual: int = 0  # what it costs when it settles (at most its worst case)


op = st.one_of(
    # A request: worst-case cost, duration as a fraction of the deadline, cost fraction.
    st.tuples(st.just("admit"), st.integers(0, 400), st.integers(0, 1000), st.integers(0, 10**6)),
    st.tuples(st.just("lose"), st.integers(0, 10**6), st.just(0), st.just(0)),  # which
    st.tuples(st.just("topup"), st.integers(0, 500), st.just(0), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 6 * 3600), st.just(0), st.just(0)),  # seconds
)
Op = tuple[str, int, int, int]

# The overshoot that used to get through (a $2 limit): a request reserves 2, its
# reservation expires while it still runs, a request of 1 takes its place, and the first
# then settles 2: spend 3. A reservation now outlives its request's deadline.
OVERSHOOT: list[Op] = [
    ("admit", 2, 1000, 10**6),  # runs its whole deadline, costs its whole worst case
    ("wait", 1000, 0, 0),  # past a 900 s TTL, before the 1200 s deadline
    ("admit", 1, 0, 0),
    ("wait", 400, 0, 0),
]


# A request settles, then midnight passes with no admission: the budget rolls over only
# when it is next read, which the model must allow for (found by a CI-length run).
ROLLOVER: list[Op] = [("admit", 1, 0, 1), ("wait", 14400, 0, 0), ("wait", 21600, 0, 0)]
ROLLOVER += [("wait", 21600, 0, 0)]


@PROPS
@example(limit=2, prepaid=False, credit=0, period="day", deadline_s=1200, ops=OVERSHOOT)
@example(limit=1, prepaid=False, credit=0, period="day", deadline_s=1, ops=ROLLOVER)
@given(
    limit=st.integers(0, 2_000),
    prepaid=st.booleans(),
    credit=st.integers(0, 2_000),
    period=st.sampled_from(["day", "month"]),
    deadline_s=st.integers(1, 4 * 3600),  # the provider's total_timeout_s
    ops=st.lists(op, max_size=120),
)
def test_budget_is_never_overshot_and_every_refusal_was_needed(
    limit: int,
    prepaid: bool,
    credit: int,
    period: SpendPeriod,
    deadline_s: int,
    ops: list[Op],
) -> None:
    """Requests run for up to the deadline and then settle, unless their settlement is
    lost; the reservation TTL is derived from the deadline as admission derives it."""
    limits = KeyLimits(spend_limit_micros=limit, spend_period=period, prepaid=prepaid)
    now = T0
    state = KeyState()
    apply_seed(
        state,
        BudgetSeed.for_limits(limits, now, spent_micros=0, credit_micros=credit),
        "g1",
    )
    model = Model(credit=credit)
    current = period_start(limits.spend_period, now)
    ttl_ms = round(reservation_ttl_s(deadline_s) * 1000)
    deadline_ms = deadline_s * 1000
    requests: list[Request] = []  # admitted, neither settled nor lost-and-expired

    def advance(to: float) -> None:
        """Move the clock to `to`, settling each request that ends on the way, in order."""
        nonlocal now, current
        while True:
            due = [r for r in requests if not r.lost and r.ends_ms <= to_ms(to)]
            step = min(due, key=lambda r: r.ends_ms) if due else None
            at = step.ends_ms / 1000 if step is not None else to
            now = max(now, at)
            if period_start(limits.spend_period, now) != current:
                current = period_start(limits.spend_period, now)
                model.spent = 0
            if step is None:
                return
            requests.remove(step)
            assert step.expires_ms > to_ms(now), "a reservation expired before its request"
            assert settle_state(state, step.admission, 0, step.actual, now)
            model.spent += step.actual
            model.credit -= step.actual

    for kind, value, duration, fraction in ops:
        if kind == "wait":
            advance(now + value)
        elif kind == "topup":
            if not prepaid:
                continue
            assert state.budget is not None and state.budget.credit_micros is not None
            state.budget.credit_micros += value
            model.credit += value
        elif kind == "lose":
            live = [r for r in requests if not r.lost]
            if live:
                live[value % len(live)].lost = True
        else:
            worst = value
            # Live reservations: those neither settled nor expired.
            requests[:] = [r for r in requests if not r.lost or r.expires_ms > to_ms(now)]
            model.reserved = sum(r.admission.reserved_micros for r in requests)
            fits = model.spent + model.reserved + worst <= limit and (
                not prepaid or model.credit - model.reserved - worst >= 0
            )
            try:
                check_request(limits, 0, worst)
                adm = admit_state(state, "k", limits, 0, worst, now, reservation_ttl_ms=ttl_ms)
                assert adm is not None
                requests.append(
                    Request(
                        adm,
                        ends_ms=to_ms(now) + deadline_ms * duration // 1000,
                        expires_ms=to_ms(now) + ttl_ms,
                        actual=fraction % (worst + 1),
                    )
                )
                assert fits, "admitted a request that does not fit"
            except BillingError:
                assert not fits, "refused a request that fits"
        requests[:] = [r for r in requests if not r.lost or r.expires_ms > to_ms(now)]
        model.reserved = sum(r.admission.reserved_micros for r in requests)
        b = state.budget
        assert b is not None
        purge_reservations(b, to_ms(now))  # as the next admission would
        assert b.spent_micros + b.reserved_micros <= limit
        if prepaid:
            assert b.credit_micros is not None
            assert b.credit_micros - b.reserved_micros >= 0
        # A period rolls over lazily (at the next admission or status read): compare
        # the spend the budget would report now, as the final check does.
        shown_now = status_dict("k", state, now, limits)["budget"]
        assert isinstance(shown_now, dict)
        assert (b.reserved_micros, shown_now["spent_micros"]) == (model.reserved, model.spent)
    for r in requests:
        settle_state(state, r.admission, 0, r.admission.reserved_micros, now)
        model.spent += r.admission.reserved_micros
        model.credit -= r.admission.reserved_micros
    b = state.budget
    assert b is not None and b.reserved_micros == 0
    shown = status_dict("k", state, now, limits)["budget"]  # rolls over lazily, as admit does
    assert isinstance(shown, dict) and shown["spent_micros"] == model.spent
    if prepaid:
        assert b.credit_micros == model.credit


# ----------------------------------------------------------------------- headers

_GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)(?:\.(\d{1,3}))?s|(\d+)ms)$")


def parse_duration(text: str) -> int:
    """Milliseconds of a Go-style duration as OpenAI sends in x-ratelimit-reset-*."""
    m = _GO_DURATION.match(text)
    assert m, text
    hours, minutes, secs, frac, millis = m.groups()
    if millis is not None:
        assert hours is None and minutes is None
        return int(millis)
    total = int(hours or 0) * 3_600_000 + int(minutes or 0) * 60_000 + int(secs) * 1000
    return total + int((frac or "0").ljust(3, "0"))


@settings(max_examples=1000, deadline=None)
@given(ms=st.integers(0, 10**10))
def test_durations_render_as_go_durations_and_parse_back(ms: int) -> None:
    text = format_duration(ms)
    assert parse_duration(text) == ms
    if ms >= 60_000:
        assert re.fullmatch(r"(\d+h)?\d+m[\d.]+s", text), text
