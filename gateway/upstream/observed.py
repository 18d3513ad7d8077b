"""`observed(transport, req, ctx)`: a transport's `open`, seen as one upstream attempt.

The relay opens every attempt through this (one call per attempt): the current request
counts it, the upstream gets the request's `x-request-id` and `traceparent`, and when
the exchange ends, its outcome is counted and its span ended (observability/observer.py):

- `ok`: a 2xx response read to its end;
- `rate_limited`, `client_error`, `server_error`: a 429, another 4xx, a 5xx;
- `timeout`: a deadline passed (first byte, idle gap, total), `unreachable`: no
  response at all (refused, reset, TLS), `error`: a failure after a 2xx head;
- `cancelled`: the request was cancelled otherwise (the client left, a shutdown).

Outside of a request (a test of the relay alone) it is the transport's `open` as is.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final

import trio

from gateway.errors import GatewayError, UpstreamConnectionError
from gateway.observability.record import UpstreamAttempt, begin_attempt
from gateway.providers.base import CallContext, UpstreamRequest
from gateway.upstream.transport import Transport, UpstreamResponse

TIMEOUT_CODES: Final = frozenset({"upstream_timeout"})


def _with_headers(req: UpstreamRequest, extra: dict[str, str]) -> UpstreamRequest:
    headers = dict(req.headers)
    headers.update(extra)
    return UpstreamRequest(req.url, headers, req.body, req.stream, req.payload)


def outcome_of(status: int, exc: BaseException | None) -> tuple[str, str | None]:
    """(outcome, error code) of an attempt that got `status` (0: no response head)
    and ended with `exc`."""
    if isinstance(exc, trio.Cancelled):
        expired = trio.current_effective_deadline() <= trio.current_time()
        return ("timeout", "upstream_timeout") if expired else ("cancelled", None)
    code = None
    if isinstance(exc, GatewayError):
        code = exc.code or exc.type
        if code in TIMEOUT_CODES:
            return "timeout", code
        if isinstance(exc, UpstreamConnectionError) and not status:
            return "unreachable", code
    if status == 429:
        return "rate_limited", code
    if 400 <= status < 500:
        return "client_error", code
    if status >= 500 or 300 <= status < 400:
        return "server_error", code
    if exc is None:
        return "ok", None
    return ("error" if status else "unreachable"), code


class _Observed:
    """The async context manager of one observed exchange."""

    __slots__ = ("_attempt", "_inner")

    def __init__(self, transport: Transport, req: UpstreamRequest, ctx: CallContext) -> None:
        attempt = begin_attempt(ctx.deployment.provider_name)
        if attempt is not None:
            req = _with_headers(req, attempt.headers())
        self._attempt: UpstreamAttempt | None = attempt
        self._inner = transport.open(req, ctx)

    async def __aenter__(self) -> UpstreamResponse:
        try:
            resp = await self._inner.__aenter__()
        except BaseException as e:
            if self._attempt is not None:
                self._attempt.end(*outcome_of(0, e))
            raise
        if self._attempt is not None:
            self._attempt.status = resp.status
        return resp

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            return await self._inner.__aexit__(exc_type, exc, tb)
        finally:
            attempt = self._attempt
            if attempt is not None:
                attempt.end(*outcome_of(attempt.status, exc))


def observed(transport: Transport, req: UpstreamRequest, ctx: CallContext) -> _Observed:
    """`transport.open(req, ctx)`, counted as one attempt of the current request."""
    return _Observed(transport, req, ctx)
