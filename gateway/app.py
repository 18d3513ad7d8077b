"""App factory: builds the gateway's state once and the ASGI app that serves it.

`Gateway` holds everything a request needs (config, router, authenticator, one
relay per provider, the key store, the limiter, the usage ledger). `GatewayApp` is
the ASGI entry: the hot route goes straight to `routes.chat_completions`, every
other request goes to Quart, and the lifespan is ours: it opens the state, runs the
background work (key cache refresh, ledger writer) in a nursery it owns for the
server's lifetime, and drains it at shutdown (structured concurrency, DESIGN.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
from pathlib import Path
from typing import Any

import trio
from quart_trio import QuartTrio

from gateway import tokens
from gateway.admin import admin_digest, make_admin_blueprint
from gateway.asgi import Receive, Scope, Send, send_error
from gateway.auth import Authenticator, StaticKeyStore
from gateway.config import Config, embedded_config, load_config
from gateway.errors import MethodNotAllowed
from gateway.fetch import MediaFetcher
from gateway.ledger import Ledger
from gateway.limits import BudgetSeed, KeyLimits, LimitBackend
from gateway.limits_memory import MemoryLimitBackend
from gateway.limits_redis import open_redis_backend
from gateway.providers.registry import provider_for
from gateway.relay import Relay, Timeouts, make_transport
from gateway.router import Router
from gateway.routes import chat_completions, make_quart_app
from gateway.store import ManagedKeyStore, Topup
from gateway.store.sqlite import AsyncSqlite, SqliteStore

CHAT_PATH = "/v1/chat/completions"
CONFIG_ENV = "GATEWAY_CONFIG"  # path of the TOML config, for worker processes
DEV_KEY_ENV = "GATEWAY_DEV_KEY"  # the dev key of the embedded defaults
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("gateway")


class Gateway:
    """The state shared by every request of one worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.router = Router(config)
        self.relays: dict[str, Relay] = {}
        for name, p in config.providers.items():
            provider = provider_for(p.kind)
            self.relays[name] = Relay(make_transport(p, provider), Timeouts.of(p), provider)
        self.fetcher = MediaFetcher(config.media)
        state = config.state
        Path(state.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        self.db = AsyncSqlite(SqliteStore(state.sqlite_path))
        self.ledger = Ledger(self.db, state.journal, fsync=state.fsync)
        self.limiter: LimitBackend = MemoryLimitBackend(seeder=self.seed_budget)
        self.keys = ManagedKeyStore(self.db, on_topup=self._on_topup)
        self.auth = Authenticator([StaticKeyStore(config.keys), self.keys])
        self.admin_digest = admin_digest(state.admin_key) if state.admin_key else None
        self.ready = False
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
        self.ready = True

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


class GatewayApp:
    """ASGI entry: the hot route in raw ASGI, everything else through Quart."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.quart: QuartTrio = make_quart_app(gateway)
        if gateway.admin_digest is not None:
            self.quart.register_blueprint(
                make_admin_blueprint(
                    gateway.db,
                    gateway.keys,
                    gateway.admin_digest,
                    ledger=gateway.ledger,
                    limit_status=lambda key_id, now: gateway.limiter.status(key_id, now),
                )
            )
        self._quart_asgi: Any = self.quart  # Quart types its ASGI arguments narrowly

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH:
            if scope["method"] == "POST":
                await chat_completions(self.gateway, scope, receive, send)
            else:
                error = MethodNotAllowed(f"Method {scope['method']} is not allowed on {CHAT_PATH}.")
                await send_error(send, error, [(b"allow", b"POST")])
            return
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._quart_asgi(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Startup, the server's lifetime, shutdown: the state's whole life in one place."""
        gw = self.gateway
        await receive()  # lifespan.startup
        state = gw.config.state
        # The Redis client (a task group of its own) must be opened and closed by this
        # task, around everything that uses it.
        async with contextlib.AsyncExitStack() as stack:
            if state.redis_url:
                gw.limiter = await stack.enter_async_context(
                    open_redis_backend(
                        state.redis_url, seeder=gw.seed_budget, timeout_s=state.redis_timeout_s
                    )
                )
            if not await self._serve(receive, send):
                return
        await send({"type": "lifespan.shutdown.complete"})

    async def _serve(self, receive: Receive, send: Send) -> bool:
        """The server's lifetime; False if startup failed (already reported)."""
        gw = self.gateway
        try:
            async with trio.open_nursery() as background:
                try:
                    await gw.start(background)
                    async with trio.open_nursery() as quart_tasks:
                        self.quart.nursery = quart_tasks
                        await self.quart.startup()
                        # What startup built (config, tokenizers, routes) lives as long as the
                        # process: out of the collector's sight, a full collection no longer
                        # walks it and stalls every request for ~15 ms (docs/performance.md).
                        gc.freeze()
                        await send({"type": "lifespan.startup.complete"})
                        await receive()  # lifespan.shutdown
                        await self.quart.shutdown()
                except Exception as e:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return False
                finally:
                    background.cancel_scope.cancel()  # stop the refresher and the writer
        finally:
            await gw.aclose()
        return True


def create_app(config: Config) -> GatewayApp:
    return GatewayApp(Gateway(config))


def setup_logging() -> None:
    """Log to stderr, once per process (worker processes start with no handlers)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # httpx logs every request at INFO: noise, and a cost on the hot path.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def app_from_env() -> GatewayApp:
    """The app a hypercorn worker process loads: config path or dev key from the env."""
    setup_logging()
    path = os.environ.get(CONFIG_ENV)
    if path:
        return create_app(load_config(path))
    return create_app(embedded_config(os.environ[DEV_KEY_ENV]))
