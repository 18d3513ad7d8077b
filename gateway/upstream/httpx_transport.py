"""Upstream transport on httpx, for deployments that need its extras.

Chosen per provider with `transport = "httpx"`: it honours the HTTP_PROXY /
HTTPS_PROXY / NO_PROXY environment variables and netrc, which the default
`h11_pool.H11Transport` does not. It costs more CPU per request (see
docs/performance.md). HTTP/1.1 only: httpx never resets an HTTP/2 stream, so an
abandoned generation would run on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import trio

from gateway.config import ProviderConfig
from gateway.errors import UpstreamConnectionError, UpstreamConnectTimeout, UpstreamError
from gateway.providers.base import CallContext, UpstreamRequest
from gateway.upstream.transport import out_of_resources


class _HttpxResponse:
    __slots__ = ("_iter", "headers", "status")

    def __init__(self, resp: httpx.Response) -> None:
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers
        self._iter = resp.aiter_raw()

    async def aclose(self) -> None:
        await self._iter.aclose()  # type: ignore[attr-defined]

    async def next_chunk(self) -> bytes | None:
        try:
            return await self._iter.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.TransportError as e:
            raise UpstreamConnectionError(
                f"The upstream connection failed mid-response ({type(e).__name__}).",
                code="upstream_connection_lost",
                sent=True,
            ) from None


class HttpxTransport:
    """A pooled HTTP/1.1 client for one provider."""

    def __init__(self, p: ProviderConfig) -> None:
        self._name = p.name
        self._client = httpx.AsyncClient(
            # Bodies are relayed as raw bytes (aiter_raw): ask for them uncompressed.
            headers={"accept-encoding": "identity"},
            http1=True,
            http2=False,
            follow_redirects=False,
            timeout=httpx.Timeout(None, connect=p.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=p.max_connections,
                max_keepalive_connections=p.max_connections,
                keepalive_expiry=30.0,
            ),
        )

    @asynccontextmanager
    async def open(self, req: UpstreamRequest, ctx: CallContext) -> AsyncIterator[_HttpxResponse]:
        request = self._client.build_request("POST", req.url, headers=req.headers, content=req.body)
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.ConnectTimeout:
            raise UpstreamConnectTimeout(
                f"Timed out connecting to the upstream '{self._name}'.", code="upstream_timeout"
            ) from None
        except (
            httpx.ConnectError,
            httpx.WriteError,
            httpx.RemoteProtocolError,
            httpx.ReadError,
        ) as e:
            if (own := out_of_resources(e)) is not None:
                raise own from None
            # httpx reads the response only after the whole request was written: a
            # failure while reading means the upstream may have started on it.
            raise UpstreamConnectionError(
                f"Could not reach the upstream '{self._name}' ({type(e).__name__}).",
                code="upstream_unreachable",
                sent=not isinstance(e, httpx.ConnectError | httpx.WriteError),
            ) from None
        except httpx.TransportError as e:
            raise UpstreamError(
                f"The request to the upstream '{self._name}' failed ({type(e).__name__}).",
                code="upstream_unreachable",
            ) from None
        wrapped = _HttpxResponse(resp)
        try:
            yield wrapped
        finally:
            with trio.CancelScope(shield=True):
                await wrapped.aclose()
                await resp.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def prune_idle(self) -> None:
        """httpx expires idle connections itself, when its pool is next used."""

    def connections(self) -> None:
        """httpx does not say how many connections its pool holds."""
        return None
