"""GET /metrics: the whole gateway's metrics in the Prometheus text format.

A cold route. The scraping worker samples its gauges now, then merges its totals with
the files the other workers write each second (observability/metrics.py), so any
worker answers for all of them. With `[observability] metrics_auth` it asks for the
admin key, as the admin API does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from gateway.errors import AuthenticationFailed
from gateway.observability.metrics import DIR_ENV, Metrics, merge, read_snapshots, render
from gateway.state import Gateway


async def merged_totals(metrics: Metrics) -> dict[str, dict[tuple[str, ...], Any]]:
    """This worker's totals merged with every other worker's last file: the whole
    gateway's, as a scrape reports them (and the console's Models page reads them)."""
    snapshots = [metrics.snapshot()]
    directory = os.environ.get(DIR_ENV)
    if directory:
        snapshots += await trio.to_thread.run_sync(read_snapshots, Path(directory), os.getpid())
    return merge(snapshots)


def add_metrics_route(app: QuartTrio, gw: Gateway, sample: Callable[[Metrics], None]) -> None:
    """GET /metrics on `app`, unless metrics are off; `sample` sets this worker's gauges."""
    metrics = gw.observer.metrics
    if metrics is None:
        return
    admin_key = gw.config.state.admin_key
    digest = None
    if gw.config.observability.metrics_auth and admin_key:
        digest = hashlib.sha256(admin_key.encode("utf-8")).digest()

    @app.get("/metrics")
    async def scrape() -> Response:
        if digest is not None:
            scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
            presented = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented, digest):
                raise AuthenticationFailed(
                    "/metrics needs the admin key: Authorization: Bearer ADMIN_KEY."
                )
        sample(metrics)
        body, content_type = render(await merged_totals(metrics), request.headers.get("accept"))
        return Response(body, content_type=content_type)
