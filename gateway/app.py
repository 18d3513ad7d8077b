"""App factory: the ASGI app that serves a `Gateway` (gateway/state.py), and its lifespan.

`GatewayApp` is the ASGI entry: every HTTP request gets a record and an id first
(observability/: the `x-request-id` on every response, the access line, the metrics
and the span once it has ended), then CORS when `[server] cors_origins` is set
(api/cors.py: preflights answered, allowed origins named on every response), then
admission control (api/overload.py: an overloaded worker sheds new requests with 503,
health checks and scrapes aside), then the hot route goes straight to
`api.chat.chat_completions`, the Responses API's routes to
`api.responses.responses_route`, and every other request to Quart (the web console
too, gateway/console/, when an admin key is set).
The lifespan is ours: it opens the state, runs the background work (key cache
refresh, ledger writer, the loop-lag probe) in a nursery it owns for the server's
lifetime, and drains it at shutdown (structured concurrency). The built-in server
also tells it when draining starts and when the grace is over (`serve.Draining`).
With several workers it also writes this worker's metrics for the others' scrapes
(observability/metrics.py). Start, ready, drain and stop are logged once each.
`reload` re-reads the config file and swaps it in for new requests (SIGHUP).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import trio
from quart_trio import QuartTrio

from gateway.api.asgi import Message, Receive, Scope, Send, error_headers, send_bytes, send_error
from gateway.api.chat import chat_completions
from gateway.api.cors import Cors
from gateway.api.overload import Admission
from gateway.api.quart_app import make_quart_app
from gateway.api.responses import is_responses_path, responses_route
from gateway.billing.limits.redis import RedisLimitBackend, open_redis_backend
from gateway.config import Config, ConfigError, embedded_config, load_config
from gateway.config.environment import CONFIG_ENV, DEV_ADMIN_KEY_ENV, DEV_KEY_ENV
from gateway.config.reload import reloaded
from gateway.console.routes import add_console
from gateway.errors import InvalidRequest, MethodNotAllowed
from gateway.observability import logs
from gateway.observability.metrics import (
    DIR_ENV,
    SNAPSHOT_EVERY_S,
    Metrics,
    write_snapshot,
)
from gateway.observability.record import RequestRecord
from gateway.state import Gateway

CHAT_PATH = "/v1/chat/completions"
# A probe or a scrape must see the truth, overloaded or not.
NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
GC_THRESHOLDS = (700, 10, 100)  # CPython's defaults but the third, 10 (set at start-up, below)

log = logging.getLogger("gateway")


class GatewayApp:
    """ASGI entry: the hot route in raw ASGI, everything else through Quart."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.quart: QuartTrio = make_quart_app(gateway, self.sample_metrics)
        if gateway.config.state.admin_key:
            add_console(self.quart, gateway)
        self._quart_asgi: Any = self.quart  # Quart types its ASGI arguments narrowly
        server = gateway.config.server
        self.admission = Admission(
            server.max_in_flight, server.max_loop_lag_ms, server.max_loop_busy_percent
        )
        refusal = self.admission.refusal
        self._shed = (refusal.body(), error_headers(refusal))  # rendered once
        self.cors = Cors(server.cors_origins) if server.cors_origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            else:
                await self._quart_asgi(scope, receive, send)
            return
        observer = self.gateway.observer
        rec, token = observer.begin(scope)
        try:
            await self._dispatch(scope, receive, send, rec)
        except BaseException:
            if rec.status == 0:
                rec.status = 500  # the server answers for an app that failed
            raise
        finally:
            observer.end(rec, token)

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, rec: RequestRecord
    ) -> None:
        cors = self.cors
        if cors is not None and (allow := cors.allow(scope)) is not None:
            if cors.is_preflight(scope):
                rec.status = 204
                await cors.preflight(scope, send, allow)
                return
            send = cors.wrap(send, allow)
        path = scope["path"]
        if path in NEVER_SHED:
            await self._quart(scope, receive, send, rec)
            return
        admission = self.admission
        if not admission.admit():
            rec.fail(admission.refusal)
            rec.status = 503
            body, headers = self._shed
            await send_bytes(send, 503, body, [*headers, _id_header(rec)])
            return
        try:
            if path == CHAT_PATH:
                if scope["method"] == "POST":
                    await chat_completions(self.gateway, scope, receive, send, rec)
                else:
                    method = scope["method"]
                    error = MethodNotAllowed(f"Method {method} is not allowed on {CHAT_PATH}.")
                    rec.fail(error)
                    rec.status = error.http_status
                    await send_error(send, error, [(b"allow", b"POST"), _id_header(rec)])
            elif is_responses_path(path):
                await responses_route(self.gateway, scope, receive, send, rec)
            else:
                await self._quart(scope, receive, send, rec)
        finally:
            admission.done()

    async def _quart(self, scope: Scope, receive: Receive, send: Send, rec: RequestRecord) -> None:
        """A cold route, through Quart. Quart decodes the query as UTF-8 and fails on
        anything else with a 500; the built-in server refuses such targets already,
        this holds behind any server. The response gets the request's id and its
        status goes to the record."""
        id_header = _id_header(rec)
        if not scope["query_string"].isascii():
            error = InvalidRequest("Non-ASCII bytes in the request target: percent-encode them.")
            rec.fail(error)
            rec.status = error.http_status
            await send_error(send, error, [id_header])
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                rec.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        await self._quart_asgi(scope, receive, tagged)

    # -- what the built-in server tells of a shutdown (gateway.server.serve.Draining) --

    async def reload(self) -> bool:
        """Re-read the config file and serve it to new requests (running ones finish on
        theirs). A config that does not load, or changes what needs a restart, is
        refused in one log line and the running one stays. True if swapped."""
        gw = self.gateway
        old = gw.current
        try:
            config, _ = await trio.to_thread.run_sync(reloaded, old.config)
        except ConfigError as e:
            log.error(
                "config reload refused, still serving the config loaded at %s: %s",
                time.strftime("%H:%M:%S", time.localtime(old.loaded_at)),
                e,
            )
            return False
        snap = gw.swap(config)
        log.info(
            "config reloaded from %s: %d providers, %d models, %d config keys (generation %d)",
            config.source,
            len(config.providers),
            len(config.models),
            len(config.keys),
            snap.generation,
        )
        return True

    def drain_started(self) -> None:
        """/readyz answers 503 from now on, while connections are still accepted."""
        self.gateway.shutdown.draining = True
        logs.event(
            log,
            logging.INFO,
            "draining",
            in_flight=self.admission.in_flight,
            drain_delay_s=self.gateway.config.server.drain_delay_s,
            graceful_timeout_s=self.gateway.config.server.graceful_timeout_s,
        )

    def grace_ended(self) -> None:
        """End every request still running, each with a final answer of its own."""
        running = len(self.gateway.shutdown.running)
        logs.event(log, logging.WARNING, "grace over: ending the requests still running",
                   requests=running)  # fmt: skip
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
                backend = await stack.enter_async_context(
                    open_redis_backend(
                        state.redis_url,
                        seeder=gw.seed_budget,
                        timeout_s=state.redis_timeout_s,
                        rows=gw.ledger_rows,  # a seed under traffic is reconciled with these
                    )
                )
                gw.limiter = backend
                await _warn_if_unreachable(backend, state.redis_timeout_s)
            if not await self._serve(receive, send):
                return
        logs.event(log, logging.INFO, "stopped")
        await send({"type": "lifespan.shutdown.complete"})

    async def _serve(self, receive: Receive, send: Send) -> bool:
        """The server's lifetime; False if startup failed (already reported)."""
        gw = self.gateway
        try:
            async with trio.open_nursery() as background:
                try:
                    await gw.start(background)
                    await background.start(self.admission.probe)
                    metrics_dir = os.environ.get(DIR_ENV)
                    if metrics_dir and gw.observer.metrics is not None:
                        background.start_soon(self._write_metrics, Path(metrics_dir))
                    async with trio.open_nursery() as quart_tasks:
                        self.quart.nursery = quart_tasks
                        await self.quart.startup()
                        # What startup built (config, tokenizers, routes) lives as long as the
                        # process: out of the collector's sight, a full collection no longer
                        # walks it and stalls every request for ~15 ms (docs/performance.md).
                        gc.freeze()
                        # A full collection walks every live stream's objects (~140 each)
                        # and finds nothing there (a stream's life makes no cyclic
                        # garbage): with thousands of streams it paused the loop ~0.2-0.6 s
                        # several times while they opened. Ten times rarer; young
                        # collections, which free cycles that die young, are unchanged.
                        gc.set_threshold(*GC_THRESHOLDS)
                        await send({"type": "lifespan.startup.complete"})
                        logs.event(log, logging.INFO, "ready")
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

    def sample_metrics(self, metrics: Metrics) -> None:
        """This worker's gauges and its own counters, as they are now."""
        gw = self.gateway
        admission = self.admission
        metrics.sample("gateway_in_flight_requests", admission.in_flight)
        metrics.sample("gateway_shed_requests", admission.shed)
        if admission.max_lag_s is not None:
            metrics.sample("gateway_event_loop_lag_seconds", admission.lag_s)
        if admission.max_busy is not None:
            metrics.sample("gateway_event_loop_busy_ratio", admission.busy)
        metrics.sample("gateway_ledger_backlog_rows", gw.ledger.backlog_rows)
        metrics.sample("gateway_ledger_flush_failures", gw.ledger.flush_failures)
        stats = gw.limiter.stats
        metrics.sample("gateway_limits_store_errors", stats.store_errors)
        metrics.sample("gateway_limits_fail_open", stats.fail_open)
        metrics.sample("gateway_limits_fail_closed", stats.fail_closed)
        if isinstance(gw.limiter, RedisLimitBackend):
            metrics.sample("gateway_limits_breaker_open", int(gw.limiter.breaker_open))
            windows = gw.limiter.reconciler.open_windows
            metrics.sample("gateway_limits_reconcile_windows", windows)
        for name, relay in gw.current.relays.items():
            counts = relay.transport.connections()
            if counts is not None:
                busy, idle = counts
                metrics.sample("gateway_upstream_connections", busy, (name, "busy"))
                metrics.sample("gateway_upstream_connections", idle, (name, "idle"))

    async def _write_metrics(self, directory: Path) -> None:
        """Several workers: this one's totals in `directory` every second, for the
        scrapes the others answer; at the end, once more, without the gauges."""
        metrics = self.gateway.observer.metrics
        assert metrics is not None
        try:
            while True:
                self.sample_metrics(metrics)
                await trio.to_thread.run_sync(write_snapshot, directory, metrics.snapshot())
                await trio.sleep(SNAPSHOT_EVERY_S)
        finally:
            metrics.clear_gauges()
            with contextlib.suppress(OSError):
                write_snapshot(directory, metrics.snapshot())


async def _warn_if_unreachable(backend: RedisLimitBackend, timeout_s: float) -> None:
    """One warning at start when Redis does not answer (not at the first request)."""
    if not await backend.ping():
        logs.event(
            log,
            logging.WARNING,
            "limits store (Redis) unreachable at start: rate limits fail open and budgeted "
            "keys get 503 until it answers",
            timeout_s=timeout_s,
        )


def _id_header(rec: RequestRecord) -> tuple[bytes, bytes]:
    return (b"x-request-id", rec.request_id.encode())


def create_app(config: Config) -> GatewayApp:
    return GatewayApp(Gateway(config))


def setup_logging(config: Config | None = None) -> None:
    """Log lines to stderr as the environment and `config` say (observability/logs.py);
    called again once the config is known. Worker processes start with no handlers."""
    if config is None:
        logs.configure_from_env(None, "info")
    else:
        logs.configure_from_env(config.server.log_format, config.server.log_level)


def app_from_env() -> GatewayApp:
    """The app a worker process loads: config path or dev key from the env."""
    path = os.environ.get(CONFIG_ENV)
    config = (
        load_config(path)
        if path
        else embedded_config(os.environ[DEV_KEY_ENV], os.environ.get(DEV_ADMIN_KEY_ENV))
    )
    setup_logging(config)
    return create_app(config)
