"""Per-key rate limits and spend budgets as a pure state machine: admit, settle, seed.

A backend (`memory`, `redis`) keeps a `KeyState` per key and drives it with these
functions; the Redis backend mirrors them line for line in Lua (`lua/*.lua`). The
parts: `gcra` (the exact integer rate arithmetic behind RPM and TPM), `budget` (spend
limits and prepaid credit: the cached state, its seed from the ledger, the
reservations of requests in flight), `responses` (the refusals and x-ratelimit-*
headers a client sees). Here: what one admission checks and reserves, and how its
settlement corrects the reservation to the actual usage.

Everything that depends on time takes `now` (unix seconds) from the caller.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Protocol

from gateway.billing.limits.budget import (
    DEFAULT_RESERVATION_TTL_S,
    BudgetSeed,
    BudgetState,
    expired_micros,
    needs_seed,
    new_reservation_id,
    purge_reservations,
)
from gateway.billing.limits.gcra import (
    WINDOW_MS,
    RateState,
    RateWindow,
    backlog,
    fits,
    rate_window,
    store_backlog,
    to_ms,
)
from gateway.billing.limits.responses import (
    credit_error,
    format_duration,
    format_micros,
    header_pairs,
    rate_limited_error,
    spend_limit_error,
)
from gateway.errors import BillingError, InvalidRequest
from gateway.store.periods import SpendPeriod, period_start
from gateway.store.records import MAX_MICROS, KeyLimits

__all__ = [
    "Admission",
    "KeyState",
    "LimitBackend",
    "LimiterStats",
    "admit_state",
    "apply_seed",
    "check_request",
    "rate_limit_header_dict",
    "rate_limit_headers",
    "settle_state",
    "status_dict",
    "topup_state",
    "unlimited_admission",
]


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


def check_request(limits: KeyLimits, est_tokens: int, worst_cost_micros: int) -> tuple[int, int]:
    """Refuse what can never be admitted, before touching any state; return the request's
    tokens and worst cost as the state machine holds them (at most `MAX_MICROS` each).

    Raises InvalidRequest (400) if the estimated tokens exceed the TPM limit outright
    (retrying cannot help, so not a 429), BillingError (402) if the worst-case cost
    exceeds the spend limit outright, or, on a key with a budget, exceeds what any
    budget can hold (`MAX_MICROS`), and ValueError only for negative inputs (a bug).
    Any other size is admissible: a request bigger than `MAX_MICROS` tokens on a key
    without a TPM limit is held as `MAX_MICROS` (only TPM reads the count), so no
    value a client can send makes the limiter fail (docs/reliability.md R13).
    """
    if est_tokens < 0 or worst_cost_micros < 0:
        raise ValueError("est_tokens and worst_cost_micros must be >= 0")
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
    if limits.needs_budget and worst_cost_micros > MAX_MICROS:
        raise BillingError(
            f"This request may cost up to {format_micros(worst_cost_micros)}, more than "
            f"any credit can cover. Lower max_tokens.",
            code="insufficient_quota",
        )
    return min(est_tokens, MAX_MICROS), min(worst_cost_micros, MAX_MICROS)


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
    if (rq is not None and limits.rpm is not None and not fits(rq, 1, limits.rpm)) or (
        tk is not None and limits.tpm is not None and not fits(tk, est_tokens, limits.tpm)
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


def _windows(admission: Admission) -> list[tuple[str, RateWindow]]:
    out: list[tuple[str, RateWindow]] = []
    if admission.requests is not None:
        out.append(("requests", admission.requests))
    if admission.tokens is not None:
        out.append(("tokens", admission.tokens))
    return out


def rate_limit_header_dict(admission: Admission) -> dict[str, str]:
    """The x-ratelimit-* headers of an admission (none for unlimited dimensions)."""
    return dict(header_pairs(_windows(admission)))


def rate_limit_headers(admission: Admission) -> list[tuple[bytes, bytes]]:
    """The x-ratelimit-* headers as ASGI (name, value) byte pairs."""
    return [(k.encode("ascii"), v.encode("ascii")) for k, v in header_pairs(_windows(admission))]


# --------------------------------------------------------------------------- backend


class LimitBackend(Protocol):
    """Where limit and budget state lives: this process (memory) or shared (Redis).

    `admit` raises RateLimited (429), BillingError (402), InvalidRequest (400, the
    request can never fit) or, for a budgeted key whose state store is unreachable,
    GatewayUnavailable (503, code `budget_unavailable`).
    """

    stats: LimiterStats

    async def admit(
        self,
        key_id: str,
        limits: KeyLimits,
        est_tokens: int,
        worst_cost_micros: int,
        now: float,
        *,
        reservation_ttl_s: float | None = None,
        reservation_id: str | None = None,
    ) -> Admission:
        """Check every limit and reserve the request, its tokens and its worst cost.

        `reservation_ttl_s`: how long the budget reservation counts unsettled; it must
        outlive the request (`budget.reservation_ttl_s` of its deadline). None: the
        backend's default. `reservation_id` names the budget reservation: the request's
        ledger id, so that a reconcile can match the two (None: a random one)."""
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

    async def check(self, timeout_s: float) -> str | None:
        """Whether the state store answers within `timeout_s` (for readiness): None if
        it does, else why not. Never raises for a store failure."""
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
            "reserved_micros": max(0, b.reserved_micros - expired_micros(b, now_ms)),
            "credit_micros": b.credit_micros,
        }
    return out
