"""The shared limit backend: per-key state in Redis, changed only by Lua scripts.

Every gateway process and machine that points at the same Redis enforces the same
limits exactly (docs/reliability.md R14): admission is ONE script call that checks the
budget, RPM and TPM and makes every reservation atomically, so 400 requests released
at once from any number of processes against RPM=100 admit exactly 100. Settlement
is one more script call. The arithmetic is `gateway.billing.limits.core`' exact integer GCRA and
budget rules, mirrored line for line in Lua (`lua/*.lua`, loaded by `scripts`; values
stay below 2**53, so Lua's double numbers are exact; numbers are written with `%d`,
never Lua's lossy `%.14g`).

One hash per key, `<prefix>{<key_id>}` (the braces keep a key on one Redis Cluster
slot): `rt rc` and `tt tc` (request and token TAT in ms plus carry), and once the
budget is seeded `g` (generation), `pk` `ps` (period kind and start), `sp` (spent),
`rs` (reserved), `cr` and `ti` (credit and the id of the last top-up in it, prepaid
keys only), and `pt:<id>` for top-ups reported before the credit was seeded; beside
it `<key>:r`, the live reservations, and `<key>:w`, the reconcile window a fresh seed
opens (`gateway.billing.limits.reconcile`: what the seed counted per request and what
settlements charged since, until the ledger has been reconciled with). A hash
with a budget expires after `idle_ttl_s` without use (then the ledger seeds it
again); one without expires as soon as its buckets are empty. Run Redis with
`maxmemory-policy noeviction` (or a `volatile-*` policy): an evicted budget forgets
its in-flight reservations.

When Redis is unreachable or slow (R17): every call has a deadline (`timeout_s`; the
app passes `[state] redis_timeout_s`, 1 s by default). The first failure or timeout
opens a breaker: the calls still waiting end at once, and every later call fails fast,
without touching Redis, until a probe succeeds (a PING from `run_flusher` once
`breaker_s` has passed, then every `breaker_s` while it fails; without the flusher,
the first call after `breaker_s` is the probe). Meanwhile keys with only RPM/TPM
limits fail OPEN (admitted with `degraded=True`, counted in `stats.fail_open`, a
warning logged at most once per `warn_every_s`) and keys with a spend limit or credit
fail CLOSED with 503 `budget_unavailable` (counted in `stats.fail_closed`): spend is
never risked. A settlement that fails is queued (bounded) and retried after the next
successful call; its generation check makes the retry safe if Redis lost its data
meanwhile. Clocks: the caller's `now` is used, so machines sharing a Redis need
synchronised clocks (NTP); a skew of d seconds lets a fast machine admit up to
d/(60/limit) early.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio

from gateway.billing.limits.budget import (
    DEFAULT_RESERVATION_TTL_S,
    BudgetSeed,
    BudgetState,
    Seeder,
    new_generation,
    new_reservation_id,
    zero_seed,
)
from gateway.billing.limits.core import (
    Admission,
    KeyState,
    LimiterStats,
    check_request,
    status_dict,
    unlimited_admission,
)
from gateway.billing.limits.gcra import RateState, rate_window, to_ms
from gateway.billing.limits.reconcile import Reconciler, RowReader, Unreachable, window_args
from gateway.billing.limits.replies import (
    StoreDown,
    budget_unavailable,
    only,
    reply_int,
    reply_text,
)
from gateway.billing.limits.responses import credit_error, rate_limited_error, spend_limit_error
from gateway.billing.limits.scripts import (
    ADMIT_LUA,
    LOAD_LUA,
    RECONCILE_LUA,
    SETTLE_LUA,
    STATUS_LUA,
    TOPUP_LUA,
)
from gateway.billing.limits.single_flight import SingleFlight
from gateway.errors import GatewayError, InternalError
from gateway.store.periods import SpendPeriod, period_start
from gateway.store.records import MAX_MICROS, KeyLimits
from gateway.store.redis_client import RedisClient, RedisError

__all__ = ["RedisLimitBackend", "open_redis_backend"]

log = logging.getLogger("gateway.billing.limits.core")

_NEED_SEED, _OVER_SPEND, _NO_CREDIT, _RATE, _CANCELLED = 1, 2, 3, 4, 5
_SEED_ATTEMPTS = 3  # a task that waited for another's seed may still need its own
_PENDING_MAX = 10_000
_PENDING_TOPUP_TTL_MS = 600_000  # an unseeded key keeps reported top-ups this long
_PENDING_DRAIN = 32

# What counts as "the state store is unavailable" rather than a bug of ours.
_STORE_ERRORS: Final = (RedisError, trio.TooSlowError, OSError)


@dataclass(frozen=True, slots=True)
class _Settlement:
    admission: Admission
    actual_tokens: int
    actual_cost_micros: int
    now: float
    cancel: bool = False  # release the reservation of an admission whose reply was lost
    reservation_ttl_ms: int | None = None  # a cancel: the lost admission's TTL


class RedisLimitBackend:
    """`LimitBackend` on a shared Redis, one script call per admission."""

    def __init__(
        self,
        client: RedisClient,
        *,
        seeder: Seeder = zero_seed,
        prefix: str = "gw:lim:",
        timeout_s: float = 0.2,
        breaker_s: float = 1.0,
        warn_every_s: float = 30.0,
        idle_ttl_s: float = 86_400.0,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        rows: RowReader | None = None,
    ) -> None:
        """`client` must be entered (`async with client`) for the backend's lifetime.

        `reservation_ttl_s`: how long a budget reservation counts unsettled (the longest
        a request may run; see `DEFAULT_RESERVATION_TTL_S`). Queued settlements are
        retried by `run_flusher` and at the end by `drain` (`open_redis_backend` does
        both). `rows` reads the ledger for the reconcile that follows a seed of ours
        under traffic (`reconciler.run`, a background task; None: no reconcile)."""
        if timeout_s <= 0 or breaker_s < 0 or idle_ttl_s < 60 or reservation_ttl_s <= 0:
            raise ValueError(
                "timeout_s must be > 0, breaker_s >= 0, idle_ttl_s >= 60, reservation_ttl_s > 0"
            )
        self._client = client
        self._seeder = seeder
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._breaker_s = breaker_s
        self._warn_every_s = warn_every_s
        self._ttl_ms = round(idle_ttl_s * 1000)
        self._reservation_ttl_ms = round(reservation_ttl_s * 1000)
        self._admit = client.register_script(ADMIT_LUA)
        self._settle = client.register_script(SETTLE_LUA)
        self._load = client.register_script(LOAD_LUA)
        self._topup = client.register_script(TOPUP_LUA)
        self._status = client.register_script(STATUS_LUA)
        self._reconcile = client.register_script(RECONCILE_LUA)
        self.reconciler = Reconciler(self._send_reconcile, rows)
        # The breaker: open from a failed call until a probe succeeds (`probe`, sent by
        # `run_flusher`, or, without it, by the first call after `breaker_s`).
        self._open = False
        self._open_until = float("-inf")  # trio clock: no probe before this
        self._probing = False
        self._probers = 0  # run_flusher tasks probing in the background
        self._in_flight: set[trio.CancelScope] = set()
        self._tripped = trio.Event()  # wakes run_flusher when the breaker opens
        self._clock = (time.time(), 0.0)  # (the last caller's now, trio time then)
        self._last_warning = float("-inf")
        self._unwarned = 0
        self._pending: deque[_Settlement] = deque()
        self._seeding = SingleFlight()
        self.stats = LimiterStats()

    def redis_key(self, key_id: str) -> str:
        """The Redis key holding `key_id`'s state."""
        return f"{self._prefix}{{{key_id}}}"

    def _keys(self, key_id: str) -> list[str]:
        """The key's hash, its reservations' sorted set and its reconcile window (one
        cluster slot)."""
        key = self.redis_key(key_id)
        return [key, f"{key}:r", f"{key}:w"]

    # ------------------------------------------------------------------ plumbing

    async def _call(self, script: Any, key_id: str, args: Sequence[object], now: float) -> Any:
        """Run a script with the deadline; raises `StoreDown` while the breaker is open
        or when the call fails (and opens the breaker)."""
        self._clock = (now, trio.current_time())
        probe = False
        if self._open:
            if self._probing or self._probers or trio.current_time() < self._open_until:
                raise StoreDown(sent=False)
            self._probing = probe = True  # no background prober: this call is the probe
        try:
            reply = await self._guarded(script(keys=self._keys(key_id), args=list(args)), now)
        finally:
            if probe:
                self._probing = False
        if probe:
            self._open = False
        return reply

    async def _guarded(self, call: Awaitable[Any], now: float) -> Any:
        """Await one store call within the deadline; a failure or timeout opens the
        breaker, and the breaker opening ends this call too (`StoreDown`)."""
        scope = trio.CancelScope(deadline=trio.current_time() + self._timeout_s)
        self._in_flight.add(scope)
        done, reply = False, None
        try:
            with scope:
                reply = await call
                done = True
        except _STORE_ERRORS as exc:
            self._trip(exc, now)
            raise StoreDown(sent=True) from exc
        finally:
            self._in_flight.discard(scope)
        if not done:  # its deadline passed, or the breaker opened for another call
            if not self._open:
                self._trip(trio.TooSlowError(f"no reply within {self._timeout_s:g} s"), now)
            raise StoreDown(sent=True)
        return reply

    def _trip(self, exc: BaseException, now: float) -> None:
        """Open the breaker for `breaker_s` (from now, on the trio clock) and end every
        call still waiting: they wait on the same store, and would each use up their
        whole timeout (docs/reliability.md R17)."""
        self.stats.store_errors += 1
        self._open = True
        self._open_until = trio.current_time() + self._breaker_s
        self._tripped.set()
        for scope in self._in_flight:
            scope.cancel()
        self._unwarned += 1
        if now - self._last_warning >= self._warn_every_s:
            log.warning(
                "limit store (Redis) unavailable: %s: %s; rate limits fail open, budgets "
                "fail closed (%d store failures since the last warning)",
                type(exc).__name__,
                exc,
                self._unwarned,
            )
            self._last_warning = now
            self._unwarned = 0

    async def ping(self) -> bool:
        """Whether the store answers a PING within the timeout (at start, to warn once);
        the breaker is left as it is."""
        with trio.move_on_after(self._timeout_s):
            try:
                await self._client.execute("PING")
            except _STORE_ERRORS:
                return False
            return True
        return False

    @property
    def breaker_open(self) -> bool:
        """True while calls fail fast: from a failure until a probe succeeds."""
        return self._open

    async def probe(self) -> bool:
        """Once the breaker's wait is over, PING the store; success closes the breaker,
        failure keeps it open for another `breaker_s`. True if the breaker is closed."""
        if not self._open:
            return True
        if self._probing or trio.current_time() < self._open_until:
            return False
        self._probing = True
        try:
            await self._guarded(self._client.execute("PING"), self._now())
        except StoreDown:
            return False
        finally:
            self._probing = False
        self._open = False
        return True

    def _degraded(self, key_id: str, limits: KeyLimits, est_tokens: int) -> Admission:
        """Fail open for rate limits, closed for budgets."""
        if limits.needs_budget:
            self.stats.fail_closed += 1
            self.stats.refused += 1
            raise budget_unavailable()
        self.stats.fail_open += 1
        self.stats.admitted += 1
        return Admission(key_id=key_id, est_tokens=est_tokens, degraded=True)

    # --------------------------------------------------------------------- admit

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
        """One script call checks and reserves everything (two more on first sight of a
        budgeted key: the ledger seed and its load)."""
        ttl_ms = (
            self._reservation_ttl_ms
            if reservation_ttl_s is None
            else max(1, round(reservation_ttl_s * 1000))
        )
        try:
            est_tokens, worst_cost_micros = check_request(limits, est_tokens, worst_cost_micros)
        except GatewayError:
            self.stats.refused += 1
            raise
        if limits.unlimited:
            self.stats.admitted += 1
            return unlimited_admission(key_id, est_tokens)
        needs_budget = limits.needs_budget
        args = (
            to_ms(now),
            limits.rpm if limits.rpm is not None else -1,
            limits.tpm if limits.tpm is not None else -1,
            est_tokens,
            1 if needs_budget else 0,
            limits.spend_limit_micros if limits.spend_limit_micros is not None else -1,
            limits.spend_period or "-",
            period_start(limits.spend_period, now),
            1 if limits.prepaid else 0,
            worst_cost_micros if needs_budget else 0,
            self._ttl_ms,
            rid := (reservation_id or new_reservation_id()) if needs_budget else "",
            ttl_ms,
        )
        # While the script call is out, its outcome is unknown: if it fails, times out
        # or is cancelled, the script may still run (when a stalled Redis resumes) and
        # reserve, so a compensating release is queued for the reservation id.
        in_flight = False
        try:
            for attempt in range(_SEED_ATTEMPTS + 1):
                epoch = self._seeding.epoch(key_id)  # before the call: see SingleFlight
                in_flight = True
                reply = await self._call(self._admit, key_id, args, now)
                in_flight = False
                if reply_int(reply[0]) != _NEED_SEED:
                    break
                if attempt == _SEED_ATTEMPTS:
                    raise InternalError("The key's budget could not be loaded.")
                await self._seeding.run(key_id, epoch, self._seed, key_id, limits, now)
        except StoreDown as exc:
            if in_flight and exc.sent and rid:
                self._cancel(key_id, rid, worst_cost_micros, now, ttl_ms)
            return self._degraded(key_id, limits, est_tokens)
        except BaseException:
            if in_flight and rid:
                self._cancel(key_id, rid, worst_cost_micros, now, ttl_ms)
            raise
        try:
            admission = self._decode_admit(
                reply, key_id, limits, est_tokens, worst_cost_micros, now, rid
            )
        except GatewayError:
            self.stats.refused += 1
            raise
        self.stats.admitted += 1
        return admission

    def _cancel(self, key_id: str, rid: str, worst: int, now: float, ttl_ms: int) -> None:
        """Queue the release of a reservation whose admission's reply was lost (its
        marker, which stops a late admission from reserving, lives as long as that
        admission's reservation would)."""
        admission = Admission(
            key_id=key_id, est_tokens=0, reserved_micros=worst, reservation_id=rid
        )
        self._defer(_Settlement(admission, 0, 0, now, cancel=True, reservation_ttl_ms=ttl_ms))

    async def _seed(self, key_id: str, limits: KeyLimits, now: float) -> None:
        await self._load_or_raise(key_id, await self._seeder(key_id, limits, now), now)

    def _decode_admit(
        self,
        reply: Sequence[object],
        key_id: str,
        limits: KeyLimits,
        est_tokens: int,
        worst: int,
        now: float,
        rid: str,
    ) -> Admission:
        code = reply_int(reply[0])
        if code == _OVER_SPEND:
            raise spend_limit_error(limits, reply_int(reply[1]), reply_int(reply[2]), worst, now)
        if code == _NO_CREDIT:
            raise credit_error(reply_int(reply[1]), reply_int(reply[2]), worst)
        if code not in (0, _RATE):  # _CANCELLED: only a reused reservation id gets it
            raise InternalError(f"Unexpected reply from the limit store: {reply!r}")
        rq, tk = reply_int(reply[1]), reply_int(reply[2])
        if code == _RATE:
            raise rate_limited_error(
                limits, est_tokens, rq if rq >= 0 else None, tk if tk >= 0 else None
            )
        gen = reply_text(reply[3]) or None
        return Admission(
            key_id=key_id,
            est_tokens=est_tokens,
            tpm=limits.tpm,
            reserved_micros=worst if gen is not None else 0,
            budget_gen=gen,
            spend_period=limits.spend_period,
            requests=rate_window(limits.rpm, rq) if limits.rpm is not None else None,
            tokens=rate_window(limits.tpm, tk) if limits.tpm is not None else None,
            reservation_id=rid if gen is not None else None,
        )

    # -------------------------------------------------------------------- settle

    async def settle(
        self,
        admission: Admission,
        actual_tokens: int,
        actual_cost_micros: int,
        now: float,
    ) -> None:
        """Correct the reservation; on a store failure queue it for a later retry."""
        if actual_tokens < 0 or actual_cost_micros < 0:
            raise ValueError("actual_tokens and actual_cost_micros must be >= 0")
        item = _Settlement(admission, actual_tokens, actual_cost_micros, now)
        if not self._has_work(item):
            return
        if self._client.congested():
            # A burst (thousands of streams ending at once when a client dies) would
            # queue for connections past the timeout, read as Redis down and open the
            # breaker: budgets would fail closed for everyone. The flusher sends it
            # shortly; until then its reservation counts, which errs on the safe side.
            self._defer(item)
            return
        if not await self._try_settle(item, now):
            return
        drained = 0
        while self._pending and drained < _PENDING_DRAIN:
            if not await self._try_settle(self._pending.popleft(), now, requeue_front=True):
                break
            drained += 1

    @staticmethod
    def _has_work(item: _Settlement) -> bool:
        a = item.admission
        if item.cancel:
            return True
        if a.degraded:
            return False
        tokens = a.tpm is not None and a.tokens is not None and item.actual_tokens != a.est_tokens
        return tokens or a.budget_gen is not None

    async def _try_settle(
        self, item: _Settlement, now: float, *, requeue_front: bool = False
    ) -> bool:
        a = item.admission
        tpm = a.tpm if a.tpm is not None and a.tokens is not None and not item.cancel else -1
        args = (
            to_ms(item.now),
            tpm,
            min(item.actual_tokens, MAX_MICROS) - a.est_tokens if tpm > 0 else 0,
            a.budget_gen or "",
            a.reserved_micros,
            item.actual_cost_micros,
            a.spend_period or "-",
            period_start(a.spend_period, item.now),
            self._ttl_ms,
            a.reservation_id or "",
            "c" if item.cancel else "s",
            item.reservation_ttl_ms or self._reservation_ttl_ms,
        )
        try:
            await self._call(self._settle, a.key_id, args, now)
        except StoreDown:
            if requeue_front:
                self._pending.appendleft(item)
            else:
                self._defer(item)
            return False
        return True

    def _defer(self, item: _Settlement) -> None:
        """Queue a settlement for retry; past the bound the oldest is dropped (its
        reservation then stops counting at its expiry; the ledger has its cost)."""
        if len(self._pending) >= _PENDING_MAX:
            self._pending.popleft()
            self.stats.settle_dropped += 1
        self._pending.append(item)
        self.stats.settle_deferred += 1

    async def flush(self, now: float | None = None) -> int:
        """Retry the queued settlements in order until one fails (the breaker permitting);
        returns how many are still queued."""
        while self._pending:
            t = self._now() if now is None else now
            if not await self._try_settle(self._pending.popleft(), t, requeue_front=True):
                break
        return len(self._pending)

    async def run_flusher(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Background task: probe the store while the breaker is open (so no request
        has to), and retry queued settlements (and releases of lost admissions) once it
        is closed, so that they do not wait for the next settlement."""
        self._probers += 1
        try:
            task_status.started()
            while True:
                if self._open:  # probe as soon as the breaker allows
                    await trio.sleep_until(max(self._open_until, trio.current_time() + 0.01))
                else:  # flush now and then; a trip wakes this up at once
                    with trio.move_on_after(max(min(self._breaker_s, 1.0), 0.05)):
                        await self._tripped.wait()
                    self._tripped = trio.Event()
                if await self.probe() and self._pending:
                    await self.flush()
        finally:
            self._probers -= 1

    def _now(self) -> float:
        """The callers' clock (they pass `now`), advanced by the time since the last call."""
        now, at = self._clock
        return now + max(0.0, trio.current_time() - at)

    async def drain(self, timeout_s: float = 5.0) -> int:
        """At shutdown: retry every queued settlement once more, ignoring the breaker,
        shielded from cancellation and bounded by `timeout_s`; returns how many could not
        be sent (they stop counting at their reservations' expiry)."""
        with trio.move_on_after(timeout_s, shield=True):
            if self._pending:
                self._open = False
                await self.flush()
        return len(self._pending)

    @property
    def pending_settlements(self) -> int:
        """Settlements waiting for the store to come back."""
        return len(self._pending)

    # ------------------------------------------------------------- seed, topup, status

    async def _load_or_raise(self, key_id: str, seed: BudgetSeed, now: float) -> bool:
        window = seed.window if self.reconciler.enabled else None
        args = [
            gen := new_generation(),
            seed.period or "-",
            seed.period_start,
            seed.spent_micros,
            "" if seed.credit_micros is None else seed.credit_micros,
            self._ttl_ms,
            seed.last_topup_id,
            *window_args(window, self.reconciler.window_s),
        ]
        changed = reply_int(await self._call(self._load, key_id, args, now))
        if changed == 2 and window is not None:
            self.reconciler.opened(key_id, gen, window)
        return changed > 0

    async def _send_reconcile(self, key_id: str, args: Sequence[object], now: float) -> Any:
        try:
            return await self._call(self._reconcile, key_id, args, now)
        except StoreDown:
            raise Unreachable("Redis is unreachable") from None

    async def load(self, key_id: str, seed: BudgetSeed, now: float) -> bool:
        """Seed the key's budget where Redis lacks it; 503 if Redis is unreachable."""
        try:
            return await self._load_or_raise(key_id, seed, now)
        except StoreDown:
            raise budget_unavailable() from None

    async def topup(self, key_id: str, micros: int, topup_id: int | None = None) -> bool:
        """Add a top-up to the cached credit, once per id (see `LimitBackend.topup`);
        503 if Redis is unreachable."""
        if not -MAX_MICROS <= micros <= MAX_MICROS:
            raise ValueError("a topup must be within +-1e15 micros")
        args = [micros, "" if topup_id is None else topup_id, _PENDING_TOPUP_TTL_MS]
        try:
            with trio.fail_after(self._timeout_s):
                done: object = await self._topup(keys=[self.redis_key(key_id)], args=args)
        except _STORE_ERRORS:
            self.stats.store_errors += 1
            raise budget_unavailable() from None
        return reply_int(done) == 1

    async def check(self, timeout_s: float) -> str | None:
        """PING Redis, whatever the breaker says (readiness asks for the truth now); None
        if it answered within `timeout_s`, else why not."""
        try:
            with trio.fail_after(timeout_s):
                await self._client.execute("PING")
        except trio.TooSlowError:
            return f"Redis did not answer a PING within {timeout_s:g} s"
        except _STORE_ERRORS as e:
            return f"Redis: {e}"
        return None

    async def status(
        self, key_id: str, now: float, limits: KeyLimits | None = None
    ) -> dict[str, object]:
        """The key's live state for the admin API; 503 if Redis is unreachable."""
        try:
            with trio.fail_after(self._timeout_s):
                reply: list[Any] = await self._status(keys=self._keys(key_id), args=[to_ms(now)])
        except _STORE_ERRORS:
            self.stats.store_errors += 1
            raise budget_unavailable() from None
        fields, expired = reply[0], reply_int(reply[1])
        h = {reply_text(fields[i]): reply_text(fields[i + 1]) for i in range(0, len(fields), 2)}
        state = KeyState(
            requests=RateState(int(h.get("rt", 0)), int(h.get("rc", 0))),
            tokens=RateState(int(h.get("tt", 0)), int(h.get("tc", 0))),
        )
        if "g" in h:
            pk = h.get("pk", "-")
            period: SpendPeriod | None = (
                "day" if pk == "day" else "month" if pk == "month" else None
            )
            state.budget = BudgetState(
                gen=h["g"],
                period=period,
                period_start=int(h.get("ps", 0)),
                spent_micros=int(h.get("sp", 0)),
                reserved_micros=max(0, int(h.get("rs", 0)) - expired),
                credit_micros=int(h["cr"]) if "cr" in h else None,
                topup_id=int(h.get("ti", 0)),
            )
        return status_dict(key_id, state, now, limits)


@asynccontextmanager
async def open_redis_backend(
    url: str,
    *,
    seeder: Seeder = zero_seed,
    prefix: str = "gw:lim:",
    timeout_s: float = 0.2,
    breaker_s: float = 1.0,
    warn_every_s: float = 30.0,
    idle_ttl_s: float = 86_400.0,
    reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
    drain_timeout_s: float = 5.0,
    max_connections: int = 64,
    rows: RowReader | None = None,
) -> AsyncIterator[RedisLimitBackend]:
    """A backend on a fresh client for `url`, open for the context's lifetime.

    The client does not retry on its own (the breaker decides) and connects within
    `timeout_s`. Entering does not need Redis to be up. While open, background tasks
    retry queued settlements and reconcile seeds with the ledger (`rows`); on exit
    the settlements are drained (shielded, at most `drain_timeout_s`) before the
    client closes.
    """
    client = RedisClient(url, connect_timeout_s=timeout_s, max_connections=max_connections)
    backend = RedisLimitBackend(
        client,
        seeder=seeder,
        prefix=prefix,
        timeout_s=timeout_s,
        breaker_s=breaker_s,
        warn_every_s=warn_every_s,
        idle_ttl_s=idle_ttl_s,
        reservation_ttl_s=reservation_ttl_s,
        rows=rows,
    )
    # The flusher's nursery wraps whatever the body raises in an ExceptionGroup; hand
    # the caller its own exception back unwrapped.
    raised: BaseException | None = None
    try:
        async with client, trio.open_nursery() as nursery:
            await nursery.start(backend.run_flusher)
            await nursery.start(backend.reconciler.run)
            try:
                yield backend
            except BaseException as exc:
                raised = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
                left = await backend.drain(drain_timeout_s)
                if left:
                    log.warning(
                        "limit store (Redis): %d queued settlements not sent at shutdown; "
                        "their reservations stop counting when they expire",
                        left,
                    )
    except BaseExceptionGroup as group:
        if raised is not None and only(group) is raised:
            raise raised from raised.__cause__
        raise
