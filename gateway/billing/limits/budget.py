"""Spend budgets: a key's cached budget, its seed from the ledger, its reservations.

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

A seed taken while requests run (after a Redis restart, under traffic) also carries
a `SeedWindow`: what it counted for each recent or pending request, by request id.
The shared backend keeps it for a while and reconciles against the ledger once the
requests that straddled the restart have settled and been written
(gateway/billing/limits/reconcile.py; docs/deployment.md).

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.store.periods import SpendPeriod, period_start
from gateway.store.records import BudgetView, KeyLimits

__all__ = [
    "DEFAULT_RESERVATION_TTL_S",
    "RECONCILE_LOOKBACK_S",
    "RESERVATION_MARGIN_S",
    "BudgetSeed",
    "BudgetState",
    "SeedWindow",
    "Seeder",
    "expired_micros",
    "needs_seed",
    "new_generation",
    "new_reservation_id",
    "purge_reservations",
    "reservation_ttl_s",
    "seed_from_view",
    "zero_seed",
]

# How long a budget reservation counts if its settlement never arrives (the gateway
# was killed, an admission timed out client-side but ran in Redis, a queued
# settlement was lost). It must outlive the longest request it covers: one that
# expired while its request still ran would let another request take its place, and
# the first one's settlement would then overshoot the budget. So admission passes the
# TTL of each request, `reservation_ttl_s` of its deadline (the provider's
# `total_timeout_s`, plus the media fetch); this default (the default total deadline
# plus the margin) is only for callers that pass none.
RESERVATION_MARGIN_S = 60.0  # settlement after the deadline: ledger write, Redis, clocks
DEFAULT_RESERVATION_TTL_S = 900.0 + RESERVATION_MARGIN_S

# How far back a seed lists the requests it counted as finished, by id: a request
# none of whose rows the seed could see (another instance had not written them yet)
# was admitted at most this long before the seed (the instances' flush lag, 200 ms
# when healthy, plus clock skew), so a reconcile finds it among the rows created
# since then. An instance unable to write its rows for longer is not covered.
RECONCILE_LOOKBACK_S = 30.0


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
class SeedWindow:
    """What a seed counted per request, for the reconcile that follows it.

    `charges` are (request id, micros the seed counted: a pending row's reserved worst
    case, a final row's cost) for every row created at or after `since` and every
    pending row created within the reservation TTL before the seed; `older` the ids of
    those pending rows created before `since` (a reconcile reads them by id)."""

    since: float
    charges: tuple[tuple[str, int], ...] = ()
    older: tuple[str, ...] = ()


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
    window: SeedWindow | None = None  # None: nothing to reconcile (no shared store)

    @classmethod
    def for_limits(
        cls,
        limits: KeyLimits,
        now: float,
        *,
        spent_micros: int,
        credit_micros: int | None,
        last_topup_id: int = 0,
        window: SeedWindow | None = None,
    ) -> BudgetSeed:
        """The seed shape `limits` needs at `now` (period and its start filled in)."""
        return cls(
            period=limits.spend_period,
            period_start=period_start(limits.spend_period, now),
            spent_micros=spent_micros,
            credit_micros=credit_micros if limits.prepaid else None,
            last_topup_id=last_topup_id if limits.prepaid else 0,
            window=window,
        )


def seed_from_view(limits: KeyLimits, now: float, view: BudgetView, since: float) -> BudgetSeed:
    """The seed `limits` needs from the ledger's `view` read at `now`, with the window
    of the rows it lists (those created at or after `since`, and pending ones)."""
    window = SeedWindow(
        since=since,
        charges=tuple((r.request_id, r.cost_micros) for r in view.rows),
        older=tuple(r.request_id for r in view.rows if r.created_at < since),
    )
    return BudgetSeed.for_limits(
        limits,
        now,
        spent_micros=view.period_cost_micros if limits.spend_period is not None else 0,
        credit_micros=view.topups_micros - view.cost_micros,
        last_topup_id=view.last_topup_id,
        window=window,
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


def reservation_ttl_s(deadline_s: float) -> float:
    """The TTL of a reservation for a request that runs at most `deadline_s` seconds
    after admission: the deadline plus `RESERVATION_MARGIN_S` for its settlement."""
    return max(0.0, deadline_s) + RESERVATION_MARGIN_S


def purge_reservations(budget: BudgetState, now_ms: int) -> None:
    """Stop counting reservations that expired at or before `now_ms` unsettled."""
    heap = budget.expiries
    while heap and heap[0][0] <= now_ms:
        expires, rid = heapq.heappop(heap)
        entry = budget.reservations.get(rid)
        if entry is not None and entry[1] == expires:
            del budget.reservations[rid]
            budget.reserved_micros = max(0, budget.reserved_micros - entry[0])


def expired_micros(budget: BudgetState, now_ms: int) -> int:
    """Micros of the reservations that expired at or before `now_ms`, not yet purged."""
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
