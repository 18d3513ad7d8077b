"""The state one worker process serves requests from: built once from the config.

`Gateway` holds everything a request needs (config, router, authenticator, one relay
per provider, the key cache, the limiter, the usage ledger, the media fetcher). The
routes read it; `gateway.app` builds it and owns its lifetime (start, background
work, drain).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import trio

from gateway.auth.cache import ManagedKeyStore
from gateway.auth.principal import Authenticator, StaticKeyStore
from gateway.billing.ledger import Ledger
from gateway.billing.limits.budget import BudgetSeed
from gateway.billing.limits.core import LimitBackend
from gateway.billing.limits.memory import MemoryLimitBackend
from gateway.config import Config
from gateway.offload import Offload
from gateway.providers.registry import provider_for
from gateway.store.records import KeyLimits, StoreError, Topup
from gateway.store.responses import ResponseStore, SqliteResponses, SqliteResponseTable
from gateway.store.sqlite import AsyncSqlite, SqliteStore
from gateway.tokens import count as tokens
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


class Gateway:
    """The state shared by every request of one worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
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
        # Stored responses of the Responses API: a table of their own in the same file.
        self.responses: ResponseStore = SqliteResponses(SqliteResponseTable(state.sqlite_path))
        self.responses_retention_s = config.responses.retention_days * DAY_S
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
        nursery.start_soon(self._prune_stored_responses)
        self.ready = True

    async def _prune_idle_connections(self) -> None:
        """Close expired idle upstream connections on a timer: a pool is otherwise only
        pruned when next used, and after a burst its descriptors would stay open until
        then (docs/reliability.md R7)."""
        while True:
            await trio.sleep(PRUNE_EVERY_S)
            for relay in self.relays.values():
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
            for relay in self.relays.values():
                await relay.transport.aclose()
            await self.fetcher.aclose()
            await self.ledger.aclose()
            await self.responses.aclose()
            await self.db.aclose()
