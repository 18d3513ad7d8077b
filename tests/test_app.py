"""The app's start-up (gateway/app.py) as the collector sees it."""

from __future__ import annotations

import gc
from functools import partial
from pathlib import Path

import trio

from gateway.app import GC_THRESHOLDS
from gateway.server.serve import ServerOptions, serve
from tests.api.test_overload import gateway_app


async def test_started_the_worker_freezes_what_start_up_built_and_makes_full_collections_rare(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Start-up's objects are out of the collector's sight, and the full collection,
    which walks every live stream's objects for cycles a stream no longer makes, runs
    ten times less often than CPython's default (docs/performance.md)."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        app = gateway_app(tmp_path)
        await nursery.start(partial(serve, app, "127.0.0.1", 0, ServerOptions()))
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[2] == 100
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
