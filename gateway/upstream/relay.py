"""One upstream call: deadlines, cancellation and translation around a transport.

One pooled HTTP/1.1 transport per provider (upstream/transport.py; HTTP/1.1 because closing
the connection is how an abandoned generation stops). The built-in mock is served
in-process by `LocalTransport`, so it takes the same path through translation as a
real upstream.

Deadlines are ours, enforced with trio cancel scopes (a read timeout measures gaps,
not totals): first byte (response headers, streams only), idle gap between chunks,
and a total deadline, which the routing chain passes in so that every attempt of a
request shares one (docs/reliability.md R4); connecting is bounded by the transport.

The relay makes one attempt and never retries: the chain (chain.py) decides from the
error it raises, which says what happened. A transport's `UpstreamConnectionError`
says whether the request had been fully sent: a connection that broke after that may
have reached the model and generated an answer nobody will see, so it is not the
failure a refused connection is (docs/reliability.md R1). A first-byte timeout is
`UpstreamFirstByteTimeout`, and an error that is the upstream's answer carries its
`upstream_status`. Once a byte went downstream nothing is raised: the stream ends with
an error event (R3).

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
from gateway.errors import GatewayError, UpstreamError, UpstreamFirstByteTimeout, UpstreamTimeout
from gateway.providers.base import JSON, CallContext, Completion, Provider, UpstreamRequest
from gateway.upstream.idle import IdleDeadline
from gateway.upstream.observed import observed
from gateway.upstream.pump import WriteNow, pump, pumpable
from gateway.upstream.surface import CHAT_READING, Reading
from gateway.upstream.transport import Transport, UpstreamResponse

MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a non-streamed upstream body larger than this is refused
MAX_ERROR_BYTES = 256 * 1024  # we read at most this much of an upstream error body


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

    def deadline(self) -> float:
        """The total deadline of a call that starts now (trio clock)."""
        return trio.current_time() + self.timeouts.total_s

    @asynccontextmanager
    async def _open(
        self, req: UpstreamRequest, ctx: CallContext, deadline: float, scope: trio.CancelScope
    ) -> AsyncIterator[UpstreamResponse]:
        """Open the upstream response (headers received), once, under the caller's
        `scope`: its deadline is the first byte's (or `deadline`, if sooner) until the
        head has come, then `deadline`. One scope for the whole call, as each one an
        idle stream holds costs ~0.7 KB. A cancel before the head: `not_opened`.

        A non-2xx answer is read (bounded) and raised as the provider's mapped error,
        with the upstream's status on it.
        """
        # A non-streamed answer's headers come after the whole generation: only the
        # total deadline bounds it.
        first_byte_s = self.timeouts.first_byte_s if req.stream else math.inf
        scope.deadline = min(deadline, trio.current_time() + first_byte_s)
        async with observed(self.transport, req, ctx) as resp:
            if resp.status >= 300:
                body = await _read_bounded(resp, MAX_ERROR_BYTES)
                error = self.provider.map_error(resp.status, resp.headers, body)
                error.upstream_status = resp.status
                raise error
            scope.deadline = deadline
            yield resp

    def not_opened(self, req: UpstreamRequest, deadline: float) -> GatewayError:
        """The error of a call whose scope was cancelled before the response head came:
        the first byte's deadline, unless the total one had passed too."""
        if req.stream and trio.current_time() < deadline:
            return UpstreamFirstByteTimeout(
                f"The upstream sent no response within {self.timeouts.first_byte_s:g} s.",
                code="upstream_timeout",
            )
        return UpstreamTimeout("The upstream did not answer in time.", code="upstream_timeout")

    async def complete(
        self,
        req: UpstreamRequest,
        ctx: CallContext,
        deadline: float | None = None,
        reading: Reading = CHAT_READING,
    ) -> Completion:
        """A non-streamed call: the translated completion, or a raised GatewayError.

        `deadline` (trio clock) bounds the whole call; None: `total_s` from now.
        `reading` is the client API's way of reading the answer (upstream/surface.py).
        """
        deadline = self.deadline() if deadline is None else deadline
        opened = False
        with trio.CancelScope() as cs:
            async with self._open(req, ctx, deadline, cs) as resp:
                opened = True
                body = await _read_bounded(resp, MAX_RESPONSE_BYTES, strict=True)
            return reading.parse(self.provider, body, ctx)
        assert cs.cancelled_caught
        if not opened:
            raise self.not_opened(req, deadline)
        raise UpstreamTimeout("The upstream did not finish in time.", code="upstream_timeout")

    async def stream(
        self,
        req: UpstreamRequest,
        ctx: CallContext,
        write: Write,
        on_finish: Finish | None = None,
        outcome: Outcome | None = None,
        deadline: float | None = None,
        reading: Reading = CHAT_READING,
        write_now: WriteNow | None = None,
        write_last: Write | None = None,
    ) -> Outcome:
        """A streamed call: the translator's content goes to `write` as it arrives.

        Raises GatewayError only while nothing has been written, so the caller can
        still answer with a proper status (or try elsewhere). After the first write a
        failure becomes a final error event, the stream ends without `[DONE]`, and it
        is reported in the returned Outcome. `on_finish` runs once, with the final
        usage, just before the last event (`[DONE]` or the error) goes out: what it
        records is durable before the client is told the request ended (docs/reliability.md
        R23). The translator never produces that last event; this method alone writes
        it (providers/base.py, `StreamTranslator`). `outcome`, when given, is the one
        filled in, so a caller whose request is cancelled midway still sees it.
        `deadline` (trio clock) bounds the whole call; None: `total_s` from now.
        `reading` makes the translator and the last event (chat completions' by
        default, upstream/surface.py). `write_now`, the same write done at once when
        the client's socket takes it (the built-in server's), lets the content after
        the first go out from the worker's pump (upstream/pump.py), where the
        transport can read without waiting. `write_last`, when given, writes the last
        event and ends the response with it (one write where the server can).

        A failure raised before any content stands for the upstream's answer: the
        translator's error carries the status it maps to as `upstream_status`, and an
        idle gap before any content is a first-byte timeout (nothing went downstream).
        """
        t = self.timeouts
        outcome = Outcome() if outcome is None else outcome
        translator = reading.translator(self.provider, ctx)
        deadline = self.deadline() if deadline is None else deadline
        settled = False  # on_finish was called
        ended = False  # the last event is being written

        async def end(error: GatewayError | None) -> None:
            """Settle, then write the last event; before any content, raise instead."""
            nonlocal settled, ended
            if error is not None and not outcome.started:
                # Failed before any content was sent: answer with a real status.
                if error.upstream_status is None:
                    error.upstream_status = error.http_status
                raise error
            outcome.usage = translator.usage
            if error is not None:
                _drop_frames(error)
            outcome.error = error
            outcome.events = translator.events
            if on_finish is not None and not settled:
                settled = True
                await on_finish(outcome)
            ended = True
            outcome.started = True
            await (write if write_last is None else write_last)(
                reading.last_event(translator, error)
            )

        # One cancel scope bounds the call (`_open`), then the gaps and the total
        # (upstream/idle.py).
        opened = False
        try:
            with trio.CancelScope() as scope:
                async with self._open(req, ctx, deadline, scope) as resp:
                    opened = True
                    gaps = IdleDeadline(scope, deadline, t.idle_s)
                    pumped = pumpable(resp) if write_now else None
                    while True:
                        gaps.touch(trio.current_time())
                        if (
                            pumped is not None
                            and write_now is not None
                            and outcome.started
                            and await pump(pumped, translator, write_now, gaps)
                        ):
                            # Back from the pump: the body ended, a write was left
                            # for this task, or the translator finished or failed.
                            if translator.error is None and not translator.finished:
                                continue
                        else:
                            if outcome.started:
                                # Declined after the first content: it never will take
                                # it (httpx, a body framed by its length, no epoll, or
                                # the body is over); not asked again before every chunk.
                                pumped = None
                            chunk = await resp.next_chunk()
                            if chunk is not None:
                                data = translator.feed(chunk)
                                del chunk  # not held while waiting for the next one
                                if data:
                                    outcome.started = True
                                    await write(data)
                                del data
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
            if scope.cancelled_caught:
                if not opened:
                    raise self.not_opened(req, deadline)
                if trio.current_time() >= deadline:
                    raise UpstreamTimeout(
                        f"The upstream did not finish within {t.total_s:g} s.",
                        code="upstream_timeout",
                    )
                gap = UpstreamTimeout if outcome.started else UpstreamFirstByteTimeout
                raise gap(
                    f"The upstream sent nothing for about {t.idle_s:g} s.",
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


def _drop_frames(error: BaseException) -> None:
    """Drops the tracebacks of a failure kept once the stream has answered it (in the
    outcome, the request's record), and of the exceptions it was raised from: their
    frames hold the relay's state, the pump's and the writers', which hold the failure,
    and every stream cut midway would wait for the cycle collector to be freed."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        e.__traceback__ = None
        e = e.__cause__ or e.__context__


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
