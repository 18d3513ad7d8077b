"""The in-process limit backend: a dict of per-key state driven by `gateway.billing.limits.core`.

For one gateway process (the embedded default). Admission and settlement are a dict
lookup and a few integer operations, with no await between check and reservation,
so trio tasks cannot interleave inside one and concurrent admissions are exact. The
state is per process: several workers behind one port would each enforce the full
limit, so the app must refuse `--workers N > 1` with this backend.

The key map is kept in least-recently-touched order; each admission looks at the
oldest entry or two and drops them once idle for `idle_ttl_s`, so memory follows the
set of recently active keys at O(1) cost per admission. A dropped budget is seeded
again from the ledger when the key comes back.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.billing.limits.budget import (
    DEFAULT_RESERVATION_TTL_S,
    BudgetSeed,
    Seeder,
    new_generation,
    zero_seed,
)
from gateway.billing.limits.core import (
    Admission,
    KeyState,
    LimiterStats,
    admit_state,
    apply_seed,
    check_request,
    settle_state,
    status_dict,
    topup_state,
    unlimited_admission,
)
from gateway.billing.limits.single_flight import SingleFlight
from gateway.errors import GatewayError, InternalError
from gateway.store.records import MAX_MICROS, KeyLimits

__all__ = ["MemoryLimitBackend"]

_SWEEP_PER_CALL = 2
_PENDING_TOPUP_KEYS = 10_000
_SEED_ATTEMPTS = 3  # a task that waited for another's seed may still need its own


class MemoryLimitBackend:
    """`LimitBackend` on a dict in this process."""

    def __init__(
        self,
        *,
        seeder: Seeder = zero_seed,
        idle_ttl_s: float = 86_400.0,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
    ) -> None:
        """`reservation_ttl_s`: how long a budget reservation counts unsettled (the
        longest a request may run; see `DEFAULT_RESERVATION_TTL_S`)."""
        if idle_ttl_s <= 0 or reservation_ttl_s <= 0:
            raise ValueError("idle_ttl_s and reservation_ttl_s must be > 0")
        self._seeder = seeder
        self._reservation_ttl_ms = round(reservation_ttl_s * 1000)
        self._idle_ttl_s = idle_ttl_s
        self._states: OrderedDict[str, KeyState] = OrderedDict()
        self._seeding = SingleFlight()
        # Identified top-ups reported while the key had no cached credit, for a seed
        # that may be reading the ledger at that moment (bounded: oldest keys go first).
        self._pending_topups: OrderedDict[str, dict[int, int]] = OrderedDict()
        self.stats = LimiterStats()

    def __len__(self) -> int:
        return len(self._states)

    def _state(self, key_id: str, now: float) -> KeyState:
        """The key's state (created if new), marked most recently used; sweeps idle ones."""
        states = self._states
        for _ in range(_SWEEP_PER_CALL):
            if not states:
                break
            oldest = next(iter(states))
            if oldest == key_id or now - states[oldest].touched < self._idle_ttl_s:
                break
            del states[oldest]
        state = states.get(key_id)
        if state is None:
            state = states[key_id] = KeyState(touched=now)
        else:
            states.move_to_end(key_id)
        return state

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
        """Check every limit and reserve; seeds the budget from the ledger on first use."""
        ttl_ms = (
            self._reservation_ttl_ms
            if reservation_ttl_s is None
            else max(1, round(reservation_ttl_s * 1000))
        )
        try:
            est_tokens, worst_cost_micros = check_request(limits, est_tokens, worst_cost_micros)
            if limits.unlimited:
                self.stats.admitted += 1
                return unlimited_admission(key_id, est_tokens)
            seeds = 0
            # The state is re-fetched each time: another task may have seeded it meanwhile.
            while (
                admission := admit_state(
                    self._state(key_id, now),
                    key_id,
                    limits,
                    est_tokens,
                    worst_cost_micros,
                    now,
                    reservation_ttl_ms=ttl_ms,
                    reservation_id=reservation_id,
                )
            ) is None:
                if seeds == _SEED_ATTEMPTS:
                    raise InternalError("The key's budget could not be loaded.")
                seeds += 1
                epoch = self._seeding.epoch(key_id)
                await self._seeding.run(key_id, epoch, self._seed, key_id, limits, now)
        except GatewayError:
            self.stats.refused += 1
            raise
        self.stats.admitted += 1
        return admission

    async def _seed(self, key_id: str, limits: KeyLimits, now: float) -> None:
        await self.load(key_id, await self._seeder(key_id, limits, now), now)

    async def settle(
        self,
        admission: Admission,
        actual_tokens: int,
        actual_cost_micros: int,
        now: float,
    ) -> None:
        """Correct the reservation to the actuals (see `settle_state`)."""
        if admission.tokens is None and admission.budget_gen is None:
            return
        state = self._states.get(admission.key_id)
        if state is None:
            return  # swept: nothing reserved survives; the ledger has the cost
        self._states.move_to_end(admission.key_id)
        settle_state(state, admission, actual_tokens, actual_cost_micros, now)

    async def topup(self, key_id: str, micros: int, topup_id: int | None = None) -> bool:
        """Add a top-up to the cached credit, once per id (see `LimitBackend.topup`)."""
        if not -MAX_MICROS <= micros <= MAX_MICROS:
            raise ValueError("a topup must be within +-1e15 micros")
        if topup_state(self._states.get(key_id), micros, topup_id):
            return True
        if topup_id is not None:
            pending = self._pending_topups.setdefault(key_id, {})
            pending[topup_id] = micros
            self._pending_topups.move_to_end(key_id)
            if len(self._pending_topups) > _PENDING_TOPUP_KEYS:
                self._pending_topups.popitem(last=False)
        return False

    async def load(self, key_id: str, seed: BudgetSeed, now: float) -> bool:
        """Seed the key's budget where the cache lacks it; True if anything changed."""
        pending = self._pending_topups.get(key_id)
        changed = apply_seed(self._state(key_id, now), seed, new_generation(), pending)
        if pending is not None and not pending:
            del self._pending_topups[key_id]
        return changed

    async def status(
        self, key_id: str, now: float, limits: KeyLimits | None = None
    ) -> dict[str, object]:
        """The key's live state for the admin API."""
        return status_dict(key_id, self._states.get(key_id), now, limits)

    async def check(self, timeout_s: float) -> str | None:
        """In process: always there."""
        return None
