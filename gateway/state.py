"""The state one worker process serves requests from: built once from the config.

`Gateway` holds everything a request needs (config, router, authenticator, one relay
per provider, the key cache, the limiter, the usage ledger, the media fetcher). The
routes read it; `gateway.app` builds it and owns its lifetime (start, background
work, drain).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio

from gateway.auth.cache import ManagedKeyStore
from gateway.auth.principal import Authenticator, StaticKeyStore
from gateway.billing.ledger import Ledger
from gateway.billing.limits.budget import BudgetSeed
from gateway.billing.limits.core import LimitBackend
from gateway.billing.limits.memory import MemoryLimitBackend
from gateway.config import Config, ObservabilityConfig
from gateway.observability.metrics import Metrics
from gateway.observability.observer import Observer
from gateway.observability.traces import NO_TRACER, Tracer
from gateway.offload import Offload
from gateway.providers.registry import provider_for
from gateway.store.records import KeyLimits, Topup
from gateway.store.sqlite import AsyncSqlite, SqliteStore
from gateway.tokens import count as tokens
from gateway.upstream.media_fetch import MediaFetcher
from gateway.upstream.relay import Relay, Timeouts
from gateway.upstream.router import Router
from gateway.upstream.transports import make_transport

PRUNE_EVERY_S = 5.0  # idle upstream connections past their expiry close within this


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


class Gateway:
    """The state shared by every request of one worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        obs = config.observability
        metrics = Metrics(config.models, per_key=obs.metrics_per_key) if obs.metrics else None
        self.observer = Observer(obs, metrics=metrics, tracer=make_tracer(obs))
        self.router = Router(config)
        self.offload = Offload()  # the O(size) steps of big requests, off the event loop
        self.relays: dict[str, Relay] = {}
        for name, p in config.providers.items():
            provider = provider_for(p.kind)
            transport = make_transport(p, provider, self.offload)
            self.relays[name] = Relay(transport, Timeouts.of(p), provider)
        self.fetcher = MediaFetcher(config.media)
        state = config.state
        Path(state.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        self.db = AsyncSqlite(SqliteStore(state.sqlite_path))
        self.ledger = Ledger(self.db, state.journal, fsync=state.fsync)
        self.limiter: LimitBackend = MemoryLimitBackend(seeder=self.seed_budget)
        self.keys = ManagedKeyStore(self.db, on_topup=self._on_topup)
        self.auth = Authenticator([StaticKeyStore(config.keys), self.keys])
        self.ready = False
        self.shutdown = Shutdown()
        self._closed = False

    async def seed_budget(self, key_id: str, limits: KeyLimits, now: float) -> BudgetSeed:
        """The limiter's seed from the ledger, with the id of the last top-up its credit
        includes, so that the key cache's report of that top-up is not counted again."""
        seed = await self.ledger.seed(key_id, limits, now)
        if limits.prepaid:
            balance, last_topup = await self.ledger.credit_snapshot(key_id)
            seed = dataclasses.replace(seed, credit_micros=balance, last_topup_id=last_topup)
        return seed

    async def _on_topup(self, topup: Topup) -> None:
        # Each top-up counts once, however many workers' caches report it.
        await self.limiter.topup(topup.key_id, topup.micros, topup.topup_id)

    async def start(self, nursery: trio.Nursery) -> None:
        """Open the state and start the background work in `nursery`."""
        tokens.preload()  # build the tokenizers now, not in the first request
        await self.ledger.start()
        await nursery.start(self.keys.run_refresher)
        await nursery.start(self.ledger.run_writer)
        nursery.start_soon(self._prune_idle_connections)
        self.ready = True

    async def _prune_idle_connections(self) -> None:
        """Close expired idle upstream connections on a timer: a pool is otherwise only
        pruned when next used, and after a burst its descriptors would stay open until
        then (docs/reliability.md R7)."""
        while True:
            await trio.sleep(PRUNE_EVERY_S)
            for relay in self.relays.values():
                relay.transport.prune_idle()

    async def aclose(self) -> None:
        """Drain the ledger and close everything; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        with trio.CancelScope(shield=True):
            for relay in self.relays.values():
                await relay.transport.aclose()
            await self.fetcher.aclose()
            await self.ledger.aclose()
            await self.db.aclose()
            # The SDK's export thread sends what is left (bounded by its own timeout).
            await trio.to_thread.run_sync(self.observer.tracer.shutdown)
