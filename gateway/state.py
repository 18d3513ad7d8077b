"""The state one worker process serves requests from.

`Gateway` holds what lives as long as the process (the key cache, the limiter, the
usage ledger, the refusal counts, the store) and `current`, the `Snapshot` built from
one config: the router, the config keys, one relay per provider, the media fetcher. A reload
(`swap`) builds a new snapshot and swaps it whole, so a request that took its snapshot
once at its start (`acquire`) runs on one config to its end, streams included, while
new requests see the new one. Relays a new config does not change are carried over
(their connection pools stay warm); the others close once the last request holding
them is done. `gateway.app` builds the Gateway and owns its lifetime (start,
background work, drain).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from gateway.auth.cache import ManagedKeyStore
from gateway.auth.principal import Authenticator, StaticKeyStore
from gateway.billing.ledger import Ledger
from gateway.billing.limits.budget import (
    DEFAULT_RESERVATION_TTL_S,
    RECONCILE_LOOKBACK_S,
    BudgetSeed,
    seed_from_view,
)
from gateway.billing.limits.core import LimitBackend
from gateway.billing.limits.memory import MemoryLimitBackend
from gateway.billing.refusals import Refusals
from gateway.config import Config, ObservabilityConfig, StateConfig
from gateway.errors import GatewayUnavailable
from gateway.observability.metrics import Metrics
from gateway.observability.observer import Observer
from gateway.observability.traces import NO_TRACER, Tracer
from gateway.offload import Offload
from gateway.providers.registry import provider_for
from gateway.store.base import AsyncStore, RowQuery
from gateway.store.records import KeyLimits, StoreError, Topup, UsageRow
from gateway.store.responses import ResponseStore, SqliteResponses, SqliteResponseTable
from gateway.store.sqlite import AsyncSqlite, SqliteStore
from gateway.upstream.media_fetch import MediaFetcher
from gateway.upstream.relay import Relay, Timeouts
from gateway.upstream.router import Router
from gateway.upstream.transports import make_transport

PRUNE_EVERY_S = 5.0  # idle upstream connections past their expiry close within this
PRUNE_RESPONSES_EVERY_S = 3600.0  # stored responses past their retention are deleted so often
DAY_S = 86400.0

log = logging.getLogger("gateway")


class Shutdown:
    """The worker's stop as requests see it (docs/reliability.md R10): `draining` from SIGTERM
    on (readiness says no), then `stopping` once the grace is over, when every request
    still running is ended at once, each with a final answer of its own.

    A request registers the cancel scope of its upstream work while it runs (a set
    add and discard: nothing on the hot path beyond that).
    """

    __slots__ = ("draining", "running", "stopping")

    def __init__(self) -> None:
        self.draining = False
        self.stopping = False
        self.running: set[trio.CancelScope] = set()

    def stop(self) -> None:
        """End every registered request's work now (each one answers for itself)."""
        self.draining = self.stopping = True
        for scope in list(self.running):
            scope.cancel()


def make_tracer(config: ObservabilityConfig) -> Tracer:
    """The no-op tracer, or the OpenTelemetry one when traces are on (the `otel` extra
    is imported only then)."""
    if not config.traces:
        return NO_TRACER
    from gateway.observability.otel import OtelTracer

    return OtelTracer(config)


def make_store(state: StateConfig) -> AsyncStore:
    """The durable store `[state]` names, not yet connected: PostgreSQL when
    `postgres_url` is set (the `postgres` extra is imported only then), else SQLite."""
    if state.postgres_url:
        from gateway.store.postgres import AsyncPostgres, PostgresStore

        pg = PostgresStore(
            state.postgres_url,
            pool_size=state.postgres_pool_size,
            timeout_s=state.postgres_timeout_s,
        )
        return AsyncPostgres(pg, concurrency=state.postgres_pool_size)
    Path(state.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    return AsyncSqlite(SqliteStore(state.sqlite_path))


def make_responses(state: StateConfig, db: AsyncStore) -> ResponseStore:
    """Where the Responses API's stored responses live: in the same store as keys and
    the ledger. On PostgreSQL a table there, on the store's own pool, so that every
    machine knows every stored response; else a table of their own in the SQLite file."""
    if state.postgres_url:
        from gateway.store.pg_responses import PostgresResponses
        from gateway.store.postgres import AsyncPostgres

        assert isinstance(db, AsyncPostgres)
        return PostgresResponses(db)
    return SqliteResponses(SqliteResponseTable(state.sqlite_path))


@dataclass(eq=False, slots=True)
class Snapshot:
    """What requests read, built from one config and never changed: swapped whole by
    a reload. `users` counts the requests holding it (`Gateway.acquire`)."""

    config: Config
    router: Router
    auth: Authenticator
    relays: Mapping[str, Relay]
    fetcher: MediaFetcher
    generation: int  # 1 for the config the process started with, +1 per reload
    loaded_at: float  # unix seconds
    users: int = field(default=0, compare=False)
    retired: bool = field(default=False, compare=False)


class Gateway:
    """The state shared by every request of one worker process."""

    def __init__(self, config: Config) -> None:
        obs = config.observability
        metrics = (
            Metrics([*config.models, *config.routed], per_key=obs.metrics_per_key)
            if obs.metrics
            else None
        )
        self.observer = Observer(obs, metrics=metrics, tracer=make_tracer(obs))
        self.offload = Offload()  # the O(size) steps of big requests, off the event loop
        state = config.state
        self.db = make_store(state)
        self.ledger = Ledger(self.db, state.journal, fsync=state.fsync)
        self.refusals = Refusals(self.db)  # requests refused before admission, counted
        self.responses = make_responses(state, self.db)
        self.limiter: LimitBackend = MemoryLimitBackend(seeder=self.seed_budget)
        self.keys = ManagedKeyStore(self.db, on_topup=self._on_topup)
        self.current = self._snapshot(config, None)
        self._retired: list[Snapshot] = []  # swapped out, some request may still hold them
        self._idle = trio.Event()  # set when a retired snapshot's last request ends
        self.ready = False
        self.shutdown = Shutdown()
        self._closed = False

    @property
    def responses_retention_s(self) -> float:
        """How long stored responses are kept (`[responses] retention_days`, reloadable)."""
        return self.current.config.responses.retention_days * DAY_S

    @property
    def config(self) -> Config:
        """The current config. A request reads its own snapshot's instead (`acquire`)."""
        return self.current.config

    # -- snapshots: what a reload swaps ---------------------------------------------

    def _snapshot(self, config: Config, previous: Snapshot | None) -> Snapshot:
        """A snapshot of `config`, reusing the relays (and the media fetcher) of
        `previous` whose settings did not change."""
        relays: dict[str, Relay] = {}
        for name, p in config.providers.items():
            if previous is not None and previous.config.providers.get(name) == p:
                relays[name] = previous.relays[name]
                continue
            provider = provider_for(p.kind)
            transport = make_transport(p, provider, self.offload)
            relays[name] = Relay(transport, Timeouts.of(p), provider)
        if previous is not None and previous.config.media == config.media:
            fetcher = previous.fetcher
        else:
            fetcher = MediaFetcher(config.media)
        router = Router(config)
        if previous is not None:  # passive health and load outlive a reload
            router.health, router.load = previous.router.health, previous.router.load
        return Snapshot(
            config=config,
            router=router,
            auth=Authenticator([StaticKeyStore(config.keys), self.keys]),
            relays=relays,
            fetcher=fetcher,
            generation=1 if previous is None else previous.generation + 1,
            loaded_at=time.time(),
        )

    def acquire(self) -> Snapshot:
        """The current snapshot, held by one request until `release`."""
        snap = self.current
        snap.users += 1
        return snap

    def release(self, snap: Snapshot) -> None:
        snap.users -= 1
        if snap.retired and snap.users == 0:
            self._idle.set()

    def swap(self, config: Config) -> Snapshot:
        """Serve `config` to every request from now on; the requests running finish on
        the snapshot they hold. The caller has checked that `config` may replace the
        current one (gateway.config.reload)."""
        old = self.current
        self.current = self._snapshot(config, old)
        if self.observer.metrics is not None:
            self.observer.metrics.configure([*config.models, *config.routed])
        old.retired = True
        self._retired.append(old)
        if old.users == 0:
            self._idle.set()
        return self.current

    async def _close_retired(self) -> None:
        """Close what retired snapshots held and nobody uses any more (for ever, in the
        lifespan's nursery)."""
        while True:
            await self._idle.wait()
            self._idle = trio.Event()
            idle = [s for s in self._retired if s.users == 0]
            self._retired = [s for s in self._retired if s.users > 0]
            await self._close_unused(idle, [self.current, *self._retired])

    @staticmethod
    async def _close_unused(gone: list[Snapshot], live: list[Snapshot]) -> None:
        """Close the relays and fetchers of `gone` that no snapshot of `live` shares."""
        kept = {id(r) for s in live for r in s.relays.values()}
        kept.update(id(s.fetcher) for s in live)
        closed: set[int] = set()
        for snap in gone:
            for relay in snap.relays.values():
                if id(relay) not in kept and id(relay) not in closed:
                    closed.add(id(relay))
                    await relay.transport.aclose()
            if id(snap.fetcher) not in kept and id(snap.fetcher) not in closed:
                closed.add(id(snap.fetcher))
                await snap.fetcher.aclose()

    async def seed_budget(self, key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        """The limiter's seed from the ledger, read on one snapshot: spend in the period,
        credit with the id of the last top-up it includes (so that the key cache's
        report of that top-up is not counted again), and the `SeedWindow` a shared
        limiter reconciles with later. A ledger that cannot be read (PostgreSQL away)
        refuses the request with 503 `budget_unavailable`, as an unreachable Redis
        does: spend is never guessed."""
        since = now - RECONCILE_LOOKBACK_S
        q = RowQuery(
            period=limits.spend_period,
            now=now,
            since=since,
            pending_since=now - DEFAULT_RESERVATION_TTL_S,
            credit=limits.prepaid,
        )
        try:
            view = await self.ledger.budget_view(key_id, q)
        except StoreError as e:
            log.warning("budget of key %s not loaded from the ledger: %s", key_id, e)
            raise GatewayUnavailable(
                "The key's budget cannot be loaded from the ledger store, so the request is "
                "refused rather than risk overspending. Retry shortly.",
                code="budget_unavailable",
            ) from None
        return seed_from_view(limits, now, view, since)

    async def ledger_rows(
        self, key_id: str, since: float | None, request_ids: tuple[str, ...], now: float
    ) -> tuple[UsageRow, ...]:
        """A key's ledger rows created since `since` (None: none by time), and those of
        `request_ids`, with the rows journaled here merged in: what a reconcile compares
        the limiter with."""
        q = RowQuery(period=None, now=now, since=since, request_ids=request_ids, credit=False)
        return (await self.ledger.budget_view(key_id, q)).rows

    async def _on_topup(self, topup: Topup) -> None:
        # Each top-up counts once, however many workers' caches report it.
        await self.limiter.topup(topup.key_id, topup.micros, topup.topup_id)

    async def start(self, nursery: trio.Nursery) -> None:
        """Open the state and start the background work in `nursery`."""
        await self.db.start()
        await self.ledger.start()
        await nursery.start(self.keys.run_refresher)
        nursery.start_soon(self.db.watch_keys, self.keys.wake)
        await nursery.start(self.ledger.run_writer)
        await nursery.start(self.refusals.run_writer)
        nursery.start_soon(self._prune_idle_connections)
        nursery.start_soon(self._close_retired)
        nursery.start_soon(self._prune_stored_responses)
        self.ready = True

    async def _prune_idle_connections(self) -> None:
        """Close expired idle upstream connections on a timer: a pool is otherwise only
        pruned when next used, and after a burst its descriptors would stay open until
        then (docs/reliability.md R7)."""
        while True:
            await trio.sleep(PRUNE_EVERY_S)
            for snap in (self.current, *self._retired):
                for relay in snap.relays.values():
                    relay.transport.prune_idle()

    async def _prune_stored_responses(self) -> None:
        """Delete stored responses past their retention, now and then every hour (reads
        ignore them already: this only gives the space back)."""
        while True:
            try:
                await self.responses.prune(time.time() - self.responses_retention_s)
            except StoreError:
                log.exception("pruning stored responses failed; trying again later")
            await trio.sleep(PRUNE_RESPONSES_EVERY_S)

    async def aclose(self) -> None:
        """Drain the ledger and close everything; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        with trio.CancelScope(shield=True):
            await self._close_unused([self.current, *self._retired], [])
            await self.ledger.aclose()
            await self.responses.aclose()
            await self.db.aclose()
            # The SDK's export thread sends what is left (bounded by its own timeout).
            await trio.to_thread.run_sync(self.observer.tracer.shutdown)
