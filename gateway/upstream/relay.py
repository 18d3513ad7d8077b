"""Upstream calls: deadlines, retries, cancellation and translation around a transport.

One pooled HTTP/1.1 transport per provider (upstream/transport.py; HTTP/1.1 because closing
the connection is how an abandoned generation stops). The built-in mock is served
in-process by `LocalTransport`, so it takes the same path through translation as a
real upstream.

Deadlines are ours, enforced with trio cancel scopes (a read timeout measures gaps,
not totals): first byte (response headers, streams only), idle gap between chunks,
and one total deadline around everything; connecting is bounded by the transport. A request is
retried only where it cannot have reached the model: a refused or reset connection
before any response header (docs/reliability.md R1), at most twice, inside the total
deadline. Nothing is retried after a byte went downstream.

Transports raise only gateway errors (each maps its own client's exceptions); the
relay maps upstream error bodies through the provider. Each attempt is opened through
`observed.observed`: counted, traced, and given the request's id for the upstream.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from gateway.config import ProviderConfig
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.openai.sse import DONE
from gateway.providers.base import JSON, CallContext, Completion, Provider, UpstreamRequest
from gateway.upstream.observed import observed
from gateway.upstream.transport import Retryable, Transport, UpstreamResponse

MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a non-streamed upstream body larger than this is refused
MAX_ERROR_BYTES = 256 * 1024  # we read at most this much of an upstream error body
MAX_ATTEMPTS = 3  # one try plus two retries, for failures before any response header


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The relay's deadlines (connecting is bounded by the transport itself)."""

    first_byte_s: float
    idle_s: float
    total_s: float

    @classmethod
    def of(cls, p: ProviderConfig) -> Timeouts:
        return cls(p.first_byte_timeout_s, p.idle_timeout_s, p.total_timeout_s)


# ---------------------------------------------------------------- the relay


@dataclass(slots=True)
class Outcome:
    """How a relayed stream ended, for accounting: usage, the error if any, what went out."""

    usage: JSON | None = None
    error: GatewayError | None = None
    started: bool = False  # bytes went downstream
    events: int = 0  # data events the translator produced (the last event aside)


Write = Callable[[bytes], Awaitable[None]]
Finish = Callable[["Outcome"], Awaitable[None]]


class Relay:
    """Sends one call upstream and hands back the OpenAI-shaped result."""

    def __init__(self, transport: Transport, timeouts: Timeouts, provider: Provider) -> None:
        self.transport = transport
        self.timeouts = timeouts
        self.provider = provider

    @asynccontextmanager
    async def _open(
        self, req: UpstreamRequest, ctx: CallContext, deadline: float
    ) -> AsyncIterator[UpstreamResponse]:
        """Open the upstream response (headers received), retrying what is safe to retry.

        A non-2xx answer is read (bounded) and raised as the provider's mapped error.
        """
        # A non-streamed answer's headers come after the whole generation: only the
        # total deadline bounds it.
        first_byte_s = self.timeouts.first_byte_s if req.stream else math.inf
        attempt = 0
        while True:
            attempt += 1
            with trio.CancelScope(deadline=min(deadline, trio.current_time() + first_byte_s)) as cs:
                try:
                    async with observed(self.transport, req, ctx) as resp:
                        if resp.status >= 300:
                            body = await _read_bounded(resp, MAX_ERROR_BYTES)
                            raise self.provider.map_error(resp.status, resp.headers, body)
                        cs.deadline = math.inf  # the caller owns the deadlines from here
                        yield resp
                        return
                except Retryable as r:
                    if attempt >= MAX_ATTEMPTS or trio.current_time() >= deadline:
                        raise r.error from None
                    await trio.sleep(0.05 * attempt)
                    continue
            if cs.cancelled_caught:
                raise UpstreamTimeout(
                    "The upstream did not answer in time.", code="upstream_timeout"
                )

    async def complete(self, req: UpstreamRequest, ctx: CallContext) -> Completion:
        """A non-streamed call: the translated completion, or a raised GatewayError."""
        deadline = trio.current_time() + self.timeouts.total_s
        with trio.CancelScope(deadline=deadline) as cs:
            async with self._open(req, ctx, deadline) as resp:
                body = await _read_bounded(resp, MAX_RESPONSE_BYTES, strict=True)
            return self.provider.parse_response(body, ctx)
        assert cs.cancelled_caught
        raise UpstreamTimeout("The upstream did not finish in time.", code="upstream_timeout")

    async def stream(
        self,
        req: UpstreamRequest,
        ctx: CallContext,
        write: Write,
        on_finish: Finish | None = None,
        outcome: Outcome | None = None,
    ) -> Outcome:
        """A streamed call: the translator's content goes to `write` as it arrives.

        Raises GatewayError only while nothing has been written, so the caller can
        still answer with a proper status. After the first write a failure becomes a
        final error event, the stream ends without `[DONE]`, and it is reported in the
        returned Outcome. `on_finish` runs once, with the final usage, just before the
        last event (`[DONE]` or the error) goes out: what it records is durable before
        the client is told the request ended (docs/reliability.md R23). The translator
        never produces that last event; this method alone writes it
        (providers/base.py, `StreamTranslator`). `outcome`, when given, is the one
        filled in, so a caller whose request is cancelled midway still sees it.
        """
        t = self.timeouts
        outcome = Outcome() if outcome is None else outcome
        translator = self.provider.new_stream_translator(ctx)
        deadline = trio.current_time() + t.total_s
        settled = False  # on_finish was called
        ended = False  # the last event is being written

        async def end(error: GatewayError | None) -> None:
            """Settle, then write the last event; before any content, raise instead."""
            nonlocal settled, ended
            if error is not None and not outcome.started:
                raise error  # failed before any content was sent: answer with a real status
            outcome.usage = translator.usage
            outcome.error = error
            outcome.events = translator.events
            if on_finish is not None and not settled:
                settled = True
                await on_finish(outcome)
            ended = True
            outcome.started = True
            await write(DONE if error is None else error.sse_event())

        # The idle deadline moves at most every `step` seconds: setting a cancel
        # scope's deadline costs more than translating a chunk.
        step = min(1.0, t.idle_s / 10)
        try:
            with trio.CancelScope(deadline=deadline) as total:
                async with self._open(req, ctx, deadline) as resp:
                    with trio.CancelScope() as idle:
                        moved = -math.inf
                        while True:
                            now = trio.current_time()
                            if now - moved >= step:
                                idle.deadline = now + t.idle_s
                                moved = now
                            chunk = await resp.next_chunk()
                            if chunk is not None:
                                data = translator.feed(chunk)
                                if data:
                                    outcome.started = True
                                    await write(data)
                                if translator.error is None and not translator.finished:
                                    continue
                            # The end: EOF, the upstream said it finished, or it failed.
                            if translator.error is None:
                                data = translator.close()  # may find the stream truncated
                                if data:
                                    outcome.started = True
                                    await write(data)
                            await end(translator.error)
                            break
                    if idle.cancelled_caught:
                        raise UpstreamTimeout(
                            f"The upstream sent nothing for about {t.idle_s:g} s.",
                            code="upstream_timeout",
                        )
            if total.cancelled_caught:
                raise UpstreamTimeout(
                    f"The upstream did not finish within {t.total_s:g} s.",
                    code="upstream_timeout",
                )
        except GatewayError as e:
            if not outcome.started:
                raise
            if not ended:  # a deadline, the transport or on_finish failed mid-stream
                await end(e)
        finally:
            outcome.events = translator.events
        return outcome


async def _read_bounded(resp: UpstreamResponse, limit: int, *, strict: bool = False) -> bytes:
    """The whole body, at most `limit` bytes (more: an error if strict, else cut)."""
    parts: list[bytes] = []
    size = 0
    while (chunk := await resp.next_chunk()) is not None:
        size += len(chunk)
        if size > limit:
            if strict:
                raise UpstreamError(
                    f"The upstream response exceeded {limit} bytes.", code="upstream_too_large"
                )
            break
        parts.append(chunk)
    return b"".join(parts)
