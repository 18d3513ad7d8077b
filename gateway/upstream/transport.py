"""What every upstream transport provides, and the one failure the Relay may retry.

A transport only does I/O: it opens one HTTP exchange and hands back the status,
the headers and the body piece by piece. Deadlines, retries and translation belong
to `relay.Relay`. Implementations: `h11_pool.H11Transport` (the default: a lean
HTTP/1.1 pool on trio), `httpx_transport.HttpxTransport` (httpx: honours proxy
environment variables) and `local.LocalTransport` (the in-process mock).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from gateway.errors import GatewayError
from gateway.providers.base import CallContext, UpstreamRequest


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # lower-case names

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        ...


class Transport(Protocol):
    def open(
        self, req: UpstreamRequest, ctx: CallContext
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """One exchange; leaving the context closes or recycles its connection."""
        ...

    async def aclose(self) -> None: ...


class Retryable(Exception):
    """A failure before any response header: the request did not reach the model."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error
