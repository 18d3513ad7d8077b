"""Per-key rate limits (GCRA) and spend budgets as a pure state machine.

Rate limits (RPM, TPM; reliability.md R14). Each key has, per dimension, a
theoretical arrival time (TAT) as in the Generic Cell Rate Algorithm: a request of
`n` units (1 for RPM, the estimated tokens for TPM) pushes the TAT `n * 60 s / limit`
into the future and is admitted if the TAT stays within 60 s of now. This is a token
bucket of capacity `limit` that refills continuously at `limit` per minute: a burst
of exactly `limit` is admitted at once, then `limit / 60` per second. In any span of
`t` seconds at most `limit + t * limit / 60` units pass, so there is no 2x burst at
a fixed window's edge, and the long-run rate is at most `limit` per minute. It is
the behaviour OpenAI documents ("limits replenish continuously"), not a sliding
log: a client that bursts `limit` at second 0 may send one more every `60 / limit`
seconds after that.

Exact integer arithmetic, so that the Redis Lua script (whose numbers are doubles)
and this module agree to the unit: time is whole milliseconds, and a dimension's
state is its TAT in ms plus a remainder `carry` in [0, limit), so that the exact TAT
is `tat_ms + carry / limit`. The working quantity is the *backlog*,
`(TAT - now) * limit` in ms*units: a request fits iff `backlog + n * 60000 <=
60000 * limit`. With `limit <= MAX_LIMIT` and the backlog capped at
`MAX_DEBT_WINDOWS` windows every value stays below 2**53.

Budgets (R15). A key with a spend limit (per UTC day or month) or prepaid credit has
`spent` in the current period, `reserved` for requests in flight and `credit`.
Admission reserves the request's worst-case cost and is refused unless
`spent + reserved + worst <= limit` and `credit - reserved - worst >= 0`; settlement
releases the reservation and charges the actual cost. So concurrent requests can
never overshoot as long as the actual cost does not exceed the worst case. Each
reservation is an entry (id, micros, expiry): one whose settlement never arrives (a
killed gateway, a lost settlement) stops counting after the reservation TTL (the
request deadline, `DEFAULT_RESERVATION_TTL_S` unless configured), and settling an
entry that is gone (twice, or after it expired) releases nothing. Reservations live
across a period rollover until settled or expired: a request in flight at midnight
is charged to the new period when it settles, so it must count there.

The durable ledger is the truth and a backend only caches it: a key's budget state
is *seeded* (`BudgetSeed`, from the ledger) the first time a backend needs it, and
again when the cached state has expired or no longer matches the key's limits (its
spend period changed, it became prepaid). Seeding never overwrites live counters.
Each seeded state has a random generation id; a settlement applies only to the
generation it reserved in, so a state store that lost its data (a Redis restart)
is never corrected twice for the same request.

Everything that depends on time takes `now` (unix seconds) from the caller.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import heapq
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from gateway.errors import BillingError, InvalidRequest, RateLimited
from gateway.store.periods import SpendPeriod, period_end, period_start
from gateway.store.records import MAX_MICROS, KeyLimits

__all__ = [
    "DEFAULT_RESERVATION_TTL_S",
    "MAX_DEBT_WINDOWS",
    "WINDOW_MS",
    "Admission",
    "BudgetSeed",
    "BudgetState",
    "KeyState",
    "LimitBackend",
    "LimiterStats",
    "RateState",
    "RateWindow",
    "Seeder",
    "admit_state",
    "apply_seed",
    "backlog",
    "check_request",
    "credit_error",
    "format_duration",
    "format_micros",
    "needs_seed",
    "new_generation",
    "new_reservation_id",
    "purge_reservations",
    "rate_limit_header_dict",
    "rate_limit_headers",
    "rate_limited_error",
    "rate_window",
    "settle_state",
    "spend_limit_error",
    "status_dict",
    "store_backlog",
    "to_ms",
    "topup_state",
    "unlimited_admission",
    "zero_seed",
]

WINDOW_MS = 60_000  # RPM and TPM are per minute
MAX_DEBT_WINDOWS = 100  # settlement may push a backlog this many windows ahead, no more
# How long a budget reservation counts if its settlement never arrives (the gateway
# was killed, an admission timed out client-side but ran in Redis, a queued
# settlement was lost): the longest a request may run, `total_timeout_s` by default.
# A request running longer is still charged its actual cost when it settles.
DEFAULT_RESERVATION_TTL_S = 900.0


# --------------------------------------------------------------------------- limits


def to_ms(now: float) -> int:
    """Whole milliseconds of a unix time (floor), the limiter's clock unit."""
    return math.floor(now * 1000)


# ------------------------------------------------------------------------------ GCRA


@dataclass(slots=True)
class RateState:
    """One dimension's GCRA state: exact TAT = tat_ms + carry / limit."""

    tat_ms: int = 0
    carry: int = 0


def backlog(state: RateState, now_ms: int, limit: int) -> int:
    """(TAT - now) * limit in ms*units, never below 0 (an idle bucket is empty)."""
    return max(0, (state.tat_ms - now_ms) * limit + state.carry)


def store_backlog(state: RateState, value: int, now_ms: int, limit: int) -> None:
    """Write a backlog back as (tat_ms, carry), clamped to [0, MAX_DEBT_WINDOWS windows]."""
    value = min(max(value, 0), MAX_DEBT_WINDOWS * WINDOW_MS * limit)
    q, r = divmod(value, limit)
    state.tat_ms = now_ms + q
    state.carry = r


def _fits(level: int, units: int, limit: int) -> bool:
    return level + units * WINDOW_MS <= WINDOW_MS * limit


def _retry_ms(level: int, units: int, limit: int) -> int:
    """Milliseconds until `units` fit into a bucket at `level` (0 if they fit now)."""
    excess = level + units * WINDOW_MS - WINDOW_MS * limit
    return max(0, -(-excess // limit))


@dataclass(frozen=True, slots=True)
class RateWindow:
    """What the x-ratelimit-* headers say for one dimension."""

    limit: int
    remaining: int  # units that would be admitted right now
    reset_ms: int  # until the bucket is back to full capacity


def rate_window(limit: int, level: int) -> RateWindow:
    """Header values for a bucket at `level` (ms*units)."""
    remaining = max(0, (WINDOW_MS * limit - level) // WINDOW_MS)
    return RateWindow(limit=limit, remaining=remaining, reset_ms=-(-level // limit))


# ---------------------------------------------------------------------------- budget


@dataclass(slots=True)
class BudgetState:
    """A key's cached budget: spend in the current period, reservations, credit."""

    gen: str
    period: SpendPeriod | None
    period_start: int
    spent_micros: int = 0
    reserved_micros: int = 0
    credit_micros: int | None = None  # None: the state was seeded for a key that is not prepaid
    topup_id: int = 0  # the last top-up the credit includes (0: none known)
    # The live reservations, id -> (micros, expires_ms); `reserved_micros` is their sum
    # once `purge_reservations` has dropped the expired ones. `expiries` is a heap of
    # (expires_ms, id) over them (entries of settled ids are skipped when popped).
    reservations: dict[str, tuple[int, int]] = field(default_factory=dict)
    expiries: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BudgetSeed:
    """A key's budget as the durable ledger knows it: what a backend is seeded with.

    `spent_micros` is the spend in the period `period` that began at `period_start`
    (all of the key's spend, or 0, when `period` is None); `credit_micros` is the
    prepaid balance (topups minus all spend), None if the key is not prepaid, and
    `last_topup_id` the id of the last top-up that balance includes (0 if unknown),
    so that a top-up reported to the backend as well is never counted twice.
    """

    period: SpendPeriod | None
    period_start: int
    spent_micros: int
    credit_micros: int | None
    last_topup_id: int = 0

    @classmethod
    def for_limits(
        cls,
        limits: KeyLimits,
        now: float,
        *,
        spent_micros: int,
        credit_micros: int | None,
        last_topup_id: int = 0,
    ) -> BudgetSeed:
        """The seed shape `limits` needs at `now` (period and its start filled in)."""
        return cls(
            period=limits.spend_period,
            period_start=period_start(limits.spend_period, now),
            spent_micros=spent_micros,
            credit_micros=credit_micros if limits.prepaid else None,
            last_topup_id=last_topup_id if limits.prepaid else 0,
        )


Seeder = Callable[[str, KeyLimits, float], Awaitable[BudgetSeed]]
"""Reads a key's budget from the durable ledger: (key_id, limits, now) -> seed."""


async def zero_seed(key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
    """The seeder for a backend without a ledger: nothing spent, no credit."""
    return BudgetSeed.for_limits(limits, now, spent_micros=0, credit_micros=0)


def new_generation() -> str:
    """A random id for a freshly seeded budget state."""
    return secrets.token_hex(8)


def new_reservation_id() -> str:
    """A random id naming one budget reservation (settlement releases it by id)."""
    return secrets.token_hex(8)


def purge_reservations(budget: BudgetState, now_ms: int) -> None:
    """Stop counting reservations that expired at or before `now_ms` unsettled."""
    heap = budget.expiries
    while heap and heap[0][0] <= now_ms:
        expires, rid = heapq.heappop(heap)
        entry = budget.reservations.get(rid)
        if entry is not None and entry[1] == expires:
            del budget.reservations[rid]
            budget.reserved_micros = max(0, budget.reserved_micros - entry[0])


def _expired_micros(budget: BudgetState, now_ms: int) -> int:
    return sum(m for m, expires in budget.reservations.values() if expires <= now_ms)


def needs_seed(budget: BudgetState | None, limits: KeyLimits) -> bool:
    """True if the cached budget cannot answer for `limits` and must be (re)seeded."""
    if not limits.needs_budget:
        return False
    if budget is None:
        return True
    if limits.spend_limit_micros is not None and budget.period != limits.spend_period:
        return True
    return limits.prepaid and budget.credit_micros is None


def apply_seed(
    state: KeyState, seed: BudgetSeed, gen: str, pending_topups: dict[int, int] | None = None
) -> bool:
    """Fill in what the cached budget lacks from `seed`; never overwrite live counters.

    A missing budget is created from the seed (generation `gen`). An existing one
    takes the seed's spend only if it tracks another period kind or an older period,
    and the seed's credit only if it has none. Credit taken from a seed also takes
    the `pending_topups` (id -> micros, reported while no credit was cached) that the
    seed does not include (ids above `seed.last_topup_id`), and empties that dict.
    Returns True if anything changed.
    """
    b = state.budget
    changed = False
    if b is None:
        b = state.budget = BudgetState(
            gen=gen,
            period=seed.period,
            period_start=seed.period_start,
            spent_micros=seed.spent_micros,
        )
        changed = True
    elif seed.period != b.period or seed.period_start > b.period_start:
        b.period, b.period_start, b.spent_micros = seed.period, seed.period_start, seed.spent_micros
        changed = True
    if b.credit_micros is None and seed.credit_micros is not None:
        credit, last = seed.credit_micros, seed.last_topup_id
        if pending_topups:
            for topup_id, micros in pending_topups.items():
                if topup_id > seed.last_topup_id:
                    credit += micros
                    last = max(last, topup_id)
            pending_topups.clear()
        b.credit_micros, b.topup_id = credit, last
        changed = True
    return changed


def topup_state(state: KeyState | None, micros: int, topup_id: int | None) -> bool:
    """Add a top-up to the cached credit, once per id; True if the credit includes it,
    False if no credit is cached (the caller keeps an identified top-up pending for a
    seed that may be reading the ledger right now: see `apply_seed`)."""
    b = state.budget if state is not None else None
    if b is None or b.credit_micros is None:
        return False
    if topup_id is not None:
        if topup_id <= b.topup_id:
            return True  # already counted (a second report, or in the seed)
        b.topup_id = topup_id
    b.credit_micros += micros
    return True


# ------------------------------------------------------------------------ admission


@dataclass(frozen=True, slots=True)
class Admission:
    """What an admission reserved, for settlement and the response headers."""

    key_id: str
    est_tokens: int
    tpm: int | None = None  # the TPM limit the tokens were reserved against
    reserved_micros: int = 0
    budget_gen: str | None = None  # None: no budget reserved
    spend_period: SpendPeriod | None = None
    requests: RateWindow | None = None
    tokens: RateWindow | None = None
    degraded: bool = False  # state store unreachable: rate limits were not enforced
    reservation_id: str | None = None  # names the budget reservation (None: none made)


def unlimited_admission(key_id: str, est_tokens: int) -> Admission:
    """The admission of a key without any limit (nothing reserved, no headers)."""
    return Admission(key_id=key_id, est_tokens=est_tokens)


@dataclass(slots=True)
class KeyState:
    """Everything a backend keeps for one key."""

    requests: RateState = field(default_factory=RateState)
    tokens: RateState = field(default_factory=RateState)
    budget: BudgetState | None = None
    touched: float = 0.0


@dataclass(slots=True)
class LimiterStats:
    """Counters a backend exposes as metrics."""

    admitted: int = 0
    refused: int = 0
    fail_open: int = 0  # admitted without rate limits: the state store was unreachable
    fail_closed: int = 0  # refused: a budgeted key while the state store was unreachable
    store_errors: int = 0  # failed or timed-out state store calls
    settle_deferred: int = 0  # settlements queued for retry after a store failure
    settle_dropped: int = 0  # queued settlements dropped (queue full); the ledger has them


def format_micros(micros: int) -> str:
    """Micro-dollars as dollars with at least 2 and at most 6 decimals: `$0.0125`."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{digits}"


def check_request(limits: KeyLimits, est_tokens: int, worst_cost_micros: int) -> None:
    """Refuse what can never be admitted, before touching any state.

    Raises InvalidRequest (400) if the estimated tokens exceed the TPM limit outright
    (retrying cannot help, so not a 429), BillingError if the worst-case cost exceeds
    the spend limit outright, ValueError for negative or absurd inputs (a bug).
    """
    if not 0 <= est_tokens <= MAX_MICROS or not 0 <= worst_cost_micros <= MAX_MICROS:
        raise ValueError("est_tokens and worst_cost_micros must be in [0, 1e15]")
    if limits.tpm is not None and est_tokens > limits.tpm:
        raise InvalidRequest(
            f"Request too large for this key's tokens per minute (TPM) limit: limit "
            f"{limits.tpm}, requested {est_tokens} (prompt plus max output tokens). "
            f"Shorten the prompt or lower max_tokens.",
            code="tokens_exceed_tpm_limit",
        )
    limit = limits.spend_limit_micros
    if limit is not None and worst_cost_micros > limit:
        raise BillingError(
            f"This request may cost up to {format_micros(worst_cost_micros)}, more than "
            f"the key's whole spend limit for this {limits.spend_period} "
            f"({format_micros(limit)}). Lower max_tokens.",
            code="spend_limit_exceeded",
        )


def spend_limit_error(
    limits: KeyLimits, spent: int, reserved: int, worst: int, now: float
) -> BillingError:
    """402 for a request that would take the key past its spend limit for the period."""
    period = limits.spend_period or "day"
    resets = datetime.fromtimestamp(period_end(period, now), tz=UTC).strftime("%Y-%m-%d %H:%M")
    return BillingError(
        f"Spend limit for this {period} reached: limit "
        f"{format_micros(limits.spend_limit_micros or 0)}, spent {format_micros(spent)}, "
        f"{format_micros(reserved)} reserved by requests in flight, and this request may "
        f"cost up to {format_micros(worst)}. The limit resets at {resets} UTC.",
        code="spend_limit_exceeded",
    )


def credit_error(credit: int, reserved: int, worst: int) -> BillingError:
    """402 for a prepaid key whose credit cannot cover the request's worst case."""
    return BillingError(
        f"Insufficient credit: balance {format_micros(credit)}, "
        f"{format_micros(reserved)} reserved by requests in flight, and this request may "
        f"cost up to {format_micros(worst)}. Top up the key's credit.",
        code="insufficient_quota",
    )


def rate_limited_error(
    limits: KeyLimits,
    est_tokens: int,
    rq_level: int | None,
    tk_level: int | None,
) -> RateLimited:
    """429 naming the limit(s) hit, with Retry-After and x-ratelimit-* headers.

    `rq_level`/`tk_level` are the buckets' current backlogs (None where unlimited).
    """
    hit: list[str] = []
    retry_ms = 0
    windows: list[tuple[str, RateWindow]] = []
    if limits.rpm is not None and rq_level is not None:
        windows.append(("requests", rate_window(limits.rpm, rq_level)))
        if not _fits(rq_level, 1, limits.rpm):
            hit.append(f"requests per minute (RPM): limit {limits.rpm}")
            retry_ms = max(retry_ms, _retry_ms(rq_level, 1, limits.rpm))
    if limits.tpm is not None and tk_level is not None:
        window = rate_window(limits.tpm, tk_level)
        windows.append(("tokens", window))
        if not _fits(tk_level, est_tokens, limits.tpm):
            hit.append(
                f"tokens per minute (TPM): limit {limits.tpm}, remaining {window.remaining}, "
                f"requested {est_tokens}"
            )
            retry_ms = max(retry_ms, _retry_ms(tk_level, est_tokens, limits.tpm))
    retry_s = max(1, -(-retry_ms // 1000))
    headers = {name: value for name, value in _header_pairs(windows)}
    return RateLimited(
        f"Rate limit reached for {' and '.join(hit)}. Try again in {format_duration(retry_ms)}.",
        retry_after_s=retry_s,
        headers=headers,
    )


def admit_state(
    state: KeyState,
    key_id: str,
    limits: KeyLimits,
    est_tokens: int,
    worst_cost_micros: int,
    now: float,
    *,
    reservation_ttl_ms: int = round(DEFAULT_RESERVATION_TTL_S * 1000),
    reservation_id: str | None = None,
) -> Admission | None:
    """Check every limit and reserve, all or nothing; None if the budget needs a seed.

    Budget refusals come first (402 says more than "retry later"), then RPM and TPM
    (429). `check_request` must have passed. Mutates `state` only on admission (and
    to drop expired reservations). The budget reservation is an entry that counts for
    `reservation_ttl_ms` unless settled first: one whose settlement never arrives
    cannot shrink the budget for longer than that.
    """
    if needs_seed(state.budget, limits):
        return None
    now_ms = to_ms(now)
    b = state.budget
    spent = reserved = 0
    if b is not None and limits.needs_budget:
        limit = limits.spend_limit_micros
        # needs_seed guarantees b.period == limits.spend_period when there is a limit.
        rollover = limit is not None and b.period_start < period_start(b.period, now)
        spent = 0 if rollover else b.spent_micros  # 0: a new period began
        purge_reservations(b, now_ms)
        reserved = b.reserved_micros
        if limit is not None and spent + reserved + worst_cost_micros > limit:
            raise spend_limit_error(limits, spent, reserved, worst_cost_micros, now)
        if limits.prepaid:
            credit = b.credit_micros or 0
            if credit - reserved - worst_cost_micros < 0:
                raise credit_error(credit, reserved, worst_cost_micros)
    rq = backlog(state.requests, now_ms, limits.rpm) if limits.rpm is not None else None
    tk = backlog(state.tokens, now_ms, limits.tpm) if limits.tpm is not None else None
    if (rq is not None and limits.rpm is not None and not _fits(rq, 1, limits.rpm)) or (
        tk is not None and limits.tpm is not None and not _fits(tk, est_tokens, limits.tpm)
    ):
        raise rate_limited_error(limits, est_tokens, rq, tk)
    requests = tokens = None
    if rq is not None and limits.rpm is not None:
        rq += WINDOW_MS
        store_backlog(state.requests, rq, now_ms, limits.rpm)
        requests = rate_window(limits.rpm, rq)
    if tk is not None and limits.tpm is not None:
        tk += est_tokens * WINDOW_MS
        store_backlog(state.tokens, tk, now_ms, limits.tpm)
        tokens = rate_window(limits.tpm, tk)
    gen: str | None = None
    rid: str | None = None
    if b is not None and limits.needs_budget:
        if limits.spend_limit_micros is not None:
            b.period_start = max(b.period_start, period_start(b.period, now))
        b.spent_micros = spent
        b.reserved_micros = reserved + worst_cost_micros
        rid = reservation_id or new_reservation_id()
        expires = now_ms + reservation_ttl_ms
        b.reservations[rid] = (worst_cost_micros, expires)
        heapq.heappush(b.expiries, (expires, rid))
        gen = b.gen
    state.touched = now
    return Admission(
        key_id=key_id,
        est_tokens=est_tokens,
        tpm=limits.tpm,
        reserved_micros=worst_cost_micros if gen is not None else 0,
        budget_gen=gen,
        spend_period=limits.spend_period,
        requests=requests,
        tokens=tokens,
        reservation_id=rid,
    )


def settle_state(
    state: KeyState,
    admission: Admission,
    actual_tokens: int,
    actual_cost_micros: int,
    now: float,
) -> bool:
    """Correct the reservation to the actuals; True if the budget was charged here.

    The token bucket moves by (actual - estimated), down or up (never below empty).
    The budget releases the reserved worst case and charges the actual cost (to the
    period current now), but only in the generation it was reserved in: otherwise
    the ledger row carries the cost into the next seed. The reservation is released
    only if its entry is still live: settling twice, or after the entry expired,
    never releases what other requests reserved.
    """
    if actual_tokens < 0 or actual_cost_micros < 0:
        raise ValueError("actual_tokens and actual_cost_micros must be >= 0")
    state.touched = now
    if admission.degraded:
        return False
    if admission.tpm is not None and admission.tokens is not None:
        delta = min(actual_tokens, MAX_MICROS) - admission.est_tokens
        if delta:
            now_ms = to_ms(now)
            level = backlog(state.tokens, now_ms, admission.tpm) + delta * WINDOW_MS
            store_backlog(state.tokens, level, now_ms, admission.tpm)
    b = state.budget
    if admission.budget_gen is None or b is None or b.gen != admission.budget_gen:
        return False
    if b.period is not None and b.period == admission.spend_period:
        start = period_start(b.period, now)
        if b.period_start < start:
            b.period_start, b.spent_micros = start, 0
    purge_reservations(b, to_ms(now))
    if admission.reservation_id is None:
        b.reserved_micros = max(0, b.reserved_micros - admission.reserved_micros)
    elif (entry := b.reservations.pop(admission.reservation_id, None)) is not None:
        b.reserved_micros = max(0, b.reserved_micros - entry[0])
        if len(b.expiries) > 2 * len(b.reservations) + 64:  # drop settled ids' entries
            b.expiries = [(e, r) for r, (_, e) in b.reservations.items()]
            heapq.heapify(b.expiries)
    b.spent_micros += actual_cost_micros
    if b.credit_micros is not None:
        b.credit_micros -= actual_cost_micros
    return True


# --------------------------------------------------------------------------- headers


def format_duration(ms: int) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it (Go style).

    `0s`, `12ms`, `1s`, `1.5s`, `6m0s`, `1h2m3.25s`.
    """
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    sec = f"{seconds}.{millis:03d}".rstrip("0") if millis else str(seconds)
    sec += "s"
    if hours:
        return f"{hours}h{minutes}m{sec}"
    if minutes:
        return f"{minutes}m{sec}"
    return sec


def _header_pairs(windows: list[tuple[str, RateWindow]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for dim, w in windows:
        out.append((f"x-ratelimit-limit-{dim}", str(w.limit)))
        out.append((f"x-ratelimit-remaining-{dim}", str(w.remaining)))
        out.append((f"x-ratelimit-reset-{dim}", format_duration(w.reset_ms)))
    return out


def _windows(admission: Admission) -> list[tuple[str, RateWindow]]:
    out: list[tuple[str, RateWindow]] = []
    if admission.requests is not None:
        out.append(("requests", admission.requests))
    if admission.tokens is not None:
        out.append(("tokens", admission.tokens))
    return out


def rate_limit_header_dict(admission: Admission) -> dict[str, str]:
    """The x-ratelimit-* headers of an admission (none for unlimited dimensions)."""
    return dict(_header_pairs(_windows(admission)))


def rate_limit_headers(admission: Admission) -> list[tuple[bytes, bytes]]:
    """The x-ratelimit-* headers as ASGI (name, value) byte pairs."""
    return [(k.encode("ascii"), v.encode("ascii")) for k, v in _header_pairs(_windows(admission))]


# --------------------------------------------------------------------------- backend


class LimitBackend(Protocol):
    """Where limit and budget state lives: this process (memory) or shared (Redis).

    `admit` raises RateLimited (429), BillingError (402), InvalidRequest (400, the
    request can never fit) or, for a budgeted key whose state store is unreachable,
    UpstreamUnavailable (503, code `budget_unavailable`).
    """

    stats: LimiterStats

    async def admit(
        self,
        key_id: str,
        limits: KeyLimits,
        est_tokens: int,
        worst_cost_micros: int,
        now: float,
    ) -> Admission:
        """Check every limit and reserve the request, its tokens and its worst cost."""
        ...

    async def settle(
        self,
        admission: Admission,
        actual_tokens: int,
        actual_cost_micros: int,
        now: float,
    ) -> None:
        """Correct an admission's reservation to the actual tokens and cost. Never raises
        for a store failure (it runs in a shielded finally); the ledger has the row."""
        ...

    async def topup(self, key_id: str, micros: int, topup_id: int | None = None) -> bool:
        """Add a top-up (committed to the ledger first) to the cached credit; True if the
        cached credit includes it. With an id, each top-up counts once however often it
        is reported (every process's key refresher reports it, to one shared Redis),
        and one reported while a seed is being read is not lost. False if no credit is
        cached: the next seed, read from the ledger, includes it."""
        ...

    async def load(self, key_id: str, seed: BudgetSeed, now: float) -> bool:
        """Seed a key's budget from the ledger where the cache lacks it (see
        `apply_seed`); True if anything changed."""
        ...

    async def status(
        self, key_id: str, now: float, limits: KeyLimits | None = None
    ) -> dict[str, object]:
        """The key's live state for the admin API (JSON-ready)."""
        ...


def status_dict(
    key_id: str, state: KeyState | None, now: float, limits: KeyLimits | None
) -> dict[str, object]:
    """A key's state as the admin API shows it: rate windows (with `limits`), budget."""
    out: dict[str, object] = {"key_id": key_id, "requests": None, "tokens": None, "budget": None}
    if state is None:
        state = KeyState()
    now_ms = to_ms(now)
    if limits is not None:
        for dim, limit, rs in (
            ("requests", limits.rpm, state.requests),
            ("tokens", limits.tpm, state.tokens),
        ):
            if limit is not None:
                w = rate_window(limit, backlog(rs, now_ms, limit))
                out[dim] = {
                    "limit": w.limit,
                    "remaining": w.remaining,
                    "reset": format_duration(w.reset_ms),
                }
    b = state.budget
    if b is not None:
        spent = b.spent_micros
        if b.period is not None and b.period_start < period_start(b.period, now):
            spent = 0
        out["budget"] = {
            "period": b.period,
            "period_start": max(b.period_start, period_start(b.period, now)),
            "spent_micros": spent,
            "reserved_micros": max(0, b.reserved_micros - _expired_micros(b, now_ms)),
            "credit_micros": b.credit_micros,
        }
    return out
