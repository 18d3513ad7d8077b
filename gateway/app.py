"""App factory: the ASGI app that serves a `Gateway` (gateway/state.py), and its lifespan.

`GatewayApp` is the ASGI entry: admission control first (api/overload.py: an
overloaded worker sheds new requests with 503, health checks aside), then the hot
route goes straight to `api.chat.chat_completions`, the Responses API's routes to
`api.responses.responses_route`, and every other request to Quart.
The lifespan is ours: it opens the state, runs the background work (key cache
refresh, ledger writer, the loop-lag probe) in a nursery it owns for the server's
lifetime, and drains it at shutdown (structured concurrency). The built-in server
also tells it when draining starts and when the grace is over (`serve.Draining`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from typing import Any

import trio
from quart_trio import QuartTrio

from gateway.api.asgi import Receive, Scope, Send, error_headers, send_bytes, send_error
from gateway.api.chat import chat_completions
from gateway.api.overload import Admission
from gateway.api.quart_app import make_quart_app
from gateway.api.responses import is_responses_path, responses_route
from gateway.billing.limits.redis import open_redis_backend
from gateway.config import Config, embedded_config, load_config
from gateway.errors import InvalidRequest, MethodNotAllowed
from gateway.state import Gateway

CHAT_PATH = "/v1/chat/completions"
NEVER_SHED = frozenset({"/healthz", "/readyz"})  # a probe must see the truth, overloaded or not
CONFIG_ENV = "GATEWAY_CONFIG"  # path of the TOML config, for worker processes
DEV_KEY_ENV = "GATEWAY_DEV_KEY"  # the dev key of the embedded defaults
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("gateway")


class GatewayApp:
    """ASGI entry: the hot route in raw ASGI, everything else through Quart."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.quart: QuartTrio = make_quart_app(gateway)
        self._quart_asgi: Any = self.quart  # Quart types its ASGI arguments narrowly
        server = gateway.config.server
        self.admission = Admission(server.max_in_flight, server.max_loop_lag_ms)
        refusal = self.admission.refusal
        self._shed = (refusal.body(), error_headers(refusal))  # rendered once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            else:
                await self._quart_asgi(scope, receive, send)
            return
        path = scope["path"]
        if path in NEVER_SHED:
            await self._quart(scope, receive, send)
            return
        admission = self.admission
        if not admission.admit():
            await send_bytes(send, 503, *self._shed)
            return
        try:
            if path == CHAT_PATH:
                if scope["method"] == "POST":
                    await chat_completions(self.gateway, scope, receive, send)
                else:
                    method = scope["method"]
                    error = MethodNotAllowed(f"Method {method} is not allowed on {CHAT_PATH}.")
                    await send_error(send, error, [(b"allow", b"POST")])
            elif is_responses_path(path):
                await responses_route(self.gateway, scope, receive, send)
            else:
                await self._quart(scope, receive, send)
        finally:
            admission.done()

    async def _quart(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A cold route, through Quart. Quart decodes the query as UTF-8 and fails on
        anything else with a 500; the built-in server refuses such targets already,
        this holds behind any server."""
        if not scope["query_string"].isascii():
            error = InvalidRequest("Non-ASCII bytes in the request target: percent-encode them.")
            await send_error(send, error)
            return
        await self._quart_asgi(scope, receive, send)

    # -- what the built-in server tells of a shutdown (gateway.server.serve.Draining) --

    def drain_started(self) -> None:
        """/readyz answers 503 from now on, while connections are still accepted."""
        self.gateway.shutdown.draining = True

    def grace_ended(self) -> None:
        """End every request still running, each with a final answer of its own."""
        self.gateway.shutdown.stop()

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
                    await background.start(self.admission.probe)
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
