"""The ASGI lifespan protocol, run for the built-in server in a task of its own."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["ASGI_VERSION", "ASGIApp", "Lifespan"]

log = logging.getLogger("gateway.server.serve")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}


class Lifespan:
    """Startup before the first connection, shutdown after the last one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.to_app_send, self.to_app_recv = trio.open_memory_channel[dict[str, Any]](2)
        self.started = trio.Event()
        self.stopped = trio.Event()
        self.failure: str | None = None
        self.supported = True

    async def run(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": ASGI_VERSION}, self._receive, self._send)
        except Exception:
            if not self.started.is_set():
                log.info("the app does not speak the ASGI lifespan protocol; serving anyway")
                self.supported = False
            else:
                log.exception("the app's lifespan failed")
        finally:
            self.started.set()
            self.stopped.set()

    async def _receive(self) -> dict[str, Any]:
        return await self.to_app_recv.receive()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = message.get("message", "") or "startup failed"
            self.started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.stopped.set()

    async def startup(self) -> None:
        await self.to_app_send.send({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failure is not None:
            raise RuntimeError(f"the app failed to start: {self.failure}")

    async def shutdown(self, timeout_s: float) -> None:
        if not self.supported or self.stopped.is_set():
            return
        with trio.move_on_after(timeout_s):
            await self.to_app_send.send({"type": "lifespan.shutdown"})
            await self.stopped.wait()
