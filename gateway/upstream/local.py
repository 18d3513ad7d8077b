"""The in-process transport: a provider that answers itself (the mock), served as if
over a socket, so that its replies take the same path through translation, deadlines
and accounting as a real upstream's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

import trio

from gateway.offload import Offload
from gateway.providers.base import CallContext, UpstreamRequest


@runtime_checkable
class LocalProvider(Protocol):
    """A provider that answers in-process (the mock) instead of over HTTP."""

    def respond(self, req: UpstreamRequest, ctx: CallContext) -> LocalReply: ...


class LocalReply(Protocol):
    status: int
    headers: dict[str, str]
    parts: list[tuple[float, bytes]]  # (seconds to wait, bytes to send)


class _LocalResponse:
    __slots__ = ("_parts", "_pos", "headers", "status")

    def __init__(self, reply: LocalReply) -> None:
        self.status = reply.status
        self.headers: Mapping[str, str] = reply.headers
        self._parts = reply.parts
        self._pos = 0

    async def next_chunk(self) -> bytes | None:
        if self._pos >= len(self._parts):
            return None
        delay, data = self._parts[self._pos]
        self._pos += 1
        if delay > 0:
            await trio.sleep(delay)
        return data


class LocalTransport:
    """Serves a LocalProvider's replies with their timing, as if over a socket. The
    reply of a big request is built in `offload`'s threads (it reads the whole body)."""

    def __init__(self, provider: LocalProvider, offload: Offload | None = None) -> None:
        self._provider = provider
        self._offload = offload or Offload()
        self._warm = False  # a reply was built
        self._warming = trio.Lock()

    @asynccontextmanager
    async def open(self, req: UpstreamRequest, ctx: CallContext) -> AsyncIterator[_LocalResponse]:
        yield _LocalResponse(await self._reply(req, ctx))

    async def _reply(self, req: UpstreamRequest, ctx: CallContext) -> LocalReply:
        """The first reply is built in a worker thread, one at a time: it loads the
        tokenizer tables the mock splits its text with (~0.35 s), never on the loop."""
        if not self._warm:
            async with self._warming:
                if not self._warm:
                    reply = await trio.to_thread.run_sync(self._provider.respond, req, ctx)
                    self._warm = True
                    return reply
        return await self._offload.run(ctx.request_bytes, self._provider.respond, req, ctx)

    async def aclose(self) -> None:
        return None

    def prune_idle(self) -> None:
        """Nothing is pooled."""

    def connections(self) -> None:
        """Nothing is pooled."""
        return None
