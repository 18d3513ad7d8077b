"""Every route but the hot one, on Quart: models, health, the admin API, error pages.

These are cold paths, so a framework's conveniences cost nothing that matters.
Quart's 60 s RESPONSE_TIMEOUT and BODY_TIMEOUT are off (left on, they silently cut
long responses); every error leaves in the OpenAI shape, never HTML.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway.api.admin import admin_digest, make_admin_blueprint
from gateway.api.asgi import processing_ms
from gateway.api.health import Readiness, health
from gateway.api.metrics import add_metrics_route
from gateway.api.model_call import authenticate
from gateway.errors import (
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
)
from gateway.observability.metrics import Metrics
from gateway.observability.record import current_request
from gateway.state import Gateway, Snapshot
from gateway.upstream.router import Route

log = logging.getLogger("gateway")


def model_object(route: Route, created: int) -> dict[str, Any]:
    return {
        "id": route.id,
        "object": "model",
        "created": created,
        "owned_by": route.owner,
    }


def make_quart_app(gw: Gateway, sample: Callable[[Metrics], None] | None = None) -> QuartTrio:
    """The Quart app for every route but the hot one (and the admin API when enabled);
    `sample` sets the worker's gauges before a scrape of /metrics."""
    app = QuartTrio("gateway")
    # Quart's 60 s defaults would silently cut long responses; our deadlines rule.
    app.config.update(
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=None,
        MAX_CONTENT_LENGTH=gw.config.server.max_body_bytes,
    )
    # Werkzeug answers `//x` and `/x/` with a 308 to `http://<Host header>/x`: an open
    # redirect for whoever writes the Host header. Paths match as sent, or are not found.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    started = int(time.time())

    @app.before_request
    async def arrived() -> None:
        g.arrived = time.perf_counter()

    @app.after_request
    async def processing_time(response: Response) -> Response:
        """`openai-processing-ms` on the OpenAI routes, as OpenAI sends it."""
        if request.path.startswith("/v1/") and hasattr(g, "arrived"):
            name, value = processing_ms(g.arrived)
            response.headers[name.decode()] = value.decode()
        return response

    def respond(obj: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(obj), status=status, content_type="application/json")

    def principal(snap: Snapshot) -> Any:
        auth = request.headers.get("authorization")
        header = auth.encode("latin-1") if auth else None
        rec = current_request()
        return authenticate(snap.auth, header, rec)

    @app.get("/v1/models")
    async def list_models() -> Response:
        snap = gw.current  # one config for the whole answer
        who = principal(snap)
        data = [model_object(r, started) for r in snap.router.configured if who.may_use(r.id)]
        return respond({"object": "list", "data": data})

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        snap = gw.current
        who = principal(snap)
        if not who.may_use(model_id):
            raise snap.router.not_found(model_id, who.may_use)
        return respond(model_object(snap.router.route(model_id, visible=who.may_use), started))

    @app.get("/healthz")
    async def healthz() -> Response:
        return respond(health())

    readiness = Readiness(gw)

    @app.get("/readyz")
    async def readyz() -> Response:
        status, body = await readiness.answer()
        return respond(body, status)

    @app.errorhandler(GatewayError)
    async def gateway_error(e: GatewayError) -> Response:
        rec = current_request()
        if rec is not None:
            rec.fail(e)
        resp = Response(e.body(), status=e.http_status, content_type="application/json")
        resp.headers.update(e.headers)
        return resp

    @app.errorhandler(HTTPException)
    async def http_error(e: HTTPException) -> Response:
        code = e.code or 500
        err: GatewayError
        if code == 404:
            err = NotFound(f"Unknown path: {request.method} {request.path}")
        elif code == 405:
            err = MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}.")
        else:
            err = GatewayError(
                e.description or "HTTP error", status=code, error_type="invalid_request_error"
            )
        return await gateway_error(err)

    @app.errorhandler(Exception)
    async def internal_error(e: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return await gateway_error(InternalError("The gateway failed unexpectedly."))

    add_metrics_route(app, gw, sample or (lambda metrics: None))
    if gw.config.state.admin_key:
        app.register_blueprint(
            make_admin_blueprint(
                gw.db,
                gw.keys,
                admin_digest(gw.config.state.admin_key),
                ledger=gw.ledger,
                refusals=gw.refusals,
                limit_status=lambda key_id, now, limits: gw.limiter.status(key_id, now, limits),
            )
        )
    return app
