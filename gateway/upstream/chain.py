"""One request's attempts through its route plan: retries, failover, backoff, health.

`Chain.run` tries the plan's deployments in order, wrapping around while attempts are
left, and returns the first answer. Per attempt it builds the upstream request from
the client's original body for that deployment's provider (a fallback from OpenAI to
Claude sends a Claude request), fetching the media that provider needs (each URL once
per request), then hands it to the deployment's relay. Between attempts:

- a failure that may not be retried (retry.py: an answer about the request itself, a
  non-streamed request that may have been answered, a total deadline) is raised at
  once, from the deployment that produced it;
- every attempt after the first spends one retry of the model's budget
  (retry_budget.py); none left: the last failure is raised;
- trying a deployment again waits a full-jitter backoff, or its Retry-After when longer;
  a Retry-After longer than `max_retry_after_s` drops the deployment from this request
  instead of waiting; a wait that would pass the deadline ends the chain;
- outcomes feed passive health (health.py) and the load the strategies read.

A deployment whose provider cannot express the request (`build_request` refuses it),
or whose media cannot be fetched, is skipped without an attempt; if none could take
it, the first refusal is raised. Once a byte went downstream the chain returns
whatever the relay made of the stream: nothing is retried after that (R3).

Every attempt shares the request's one total deadline: the first deployment's
`total_timeout_s` from the start, and no attempt runs past its own provider's. The
client's disconnect cancels the whole chain at once, backoff waits included
(structured concurrency: the chain lives in the request's task).
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import trio

from gateway.errors import GatewayError, InvalidRequest, UpstreamUnavailable
from gateway.offload import Offload
from gateway.providers.base import (
    JSON,
    CallContext,
    Completion,
    Deployment,
    Media,
    UpstreamRequest,
)
from gateway.upstream.media_fetch import MediaFetcher
from gateway.upstream.pump import WriteNow
from gateway.upstream.relay import Finish, Outcome, Relay, Write
from gateway.upstream.retry import backoff_s, failure_kind, hurts_health, retry_after_s, retryable
from gateway.upstream.router import Plan, Router
from gateway.upstream.surface import ChatSurface, Surface

T = TypeVar("T")
Call = Callable[[Relay, UpstreamRequest, CallContext, float], Awaitable[T]]


class Chain:
    """The attempts of one request; `deployment` and `attempts` say where it ended."""

    __slots__ = (
        "_fetcher",
        "_media",
        "_offload",
        "_relays",
        "_router",
        "_started",
        "_surface",
        "attempts",
        "created",
        "deadline",
        "deployment",
        "include_usage",
        "on_attempt",
        "plan",
        "rand",
        "request_bytes",
        "request_id",
        "response_format",
        "stream",
    )

    def __init__(
        self,
        *,
        router: Router,
        plan: Plan,
        relays: Mapping[str, Relay],
        fetcher: MediaFetcher | None,
        body: JSON,
        stream: bool,
        include_usage: bool,
        request_id: str,
        created: int,
        response_format: str | None,
        on_attempt: Callable[[Deployment, int], None] | None = None,
        rand: Callable[[], float] = random.random,
        offload: Offload | None = None,
        request_bytes: int = 0,
        surface: Surface | None = None,
    ) -> None:
        self._router = router
        self.plan = plan
        self._relays = relays
        self._fetcher = fetcher
        # The client API the request speaks: chat completions (the body as it is) unless
        # the route says otherwise (upstream/surface.py).
        self._surface: Surface = ChatSurface(body) if surface is None else surface
        self._media: dict[str, Media] = {}
        self.stream = stream
        self.include_usage = include_usage
        self.request_id = request_id
        self.created = created
        self.response_format = response_format
        self.on_attempt = on_attempt
        self.rand = rand
        self._offload = offload  # translates a big body off the event loop
        self.request_bytes = request_bytes
        self.attempts = 0
        self._started = 0.0  # when the current attempt started
        self.deployment: Deployment = plan.deployments[0]
        self.deadline = math.inf  # the request's one total deadline, from `run`'s start

    async def complete(self) -> Completion:
        """A non-streamed request: the translated completion of the deployment that
        answered."""
        surface = self._surface

        async def call(
            relay: Relay, req: UpstreamRequest, ctx: CallContext, until: float
        ) -> Completion:
            return await relay.complete(req, ctx, deadline=until, reading=surface)

        return await self.run(call)

    async def stream_to(
        self,
        write: Write,
        on_finish: Finish | None = None,
        outcome: Outcome | None = None,
        write_now: WriteNow | None = None,
        write_last: Write | None = None,
    ) -> Outcome:
        """A streamed request: its content goes to `write` (see `Relay.stream`, and for
        `write_now` and `write_last`), from the first attempt that gets as far as
        sending any."""
        progress = Outcome() if outcome is None else outcome
        surface = self._surface
        sink, last = write, write_last
        if self.plan.route.strategy == "latency":
            sink, last = self._timing(write), None  # every write through the timing

        async def call(
            relay: Relay, req: UpstreamRequest, ctx: CallContext, until: float
        ) -> Outcome:
            progress.usage = progress.error = None
            return await relay.stream(
                req,
                ctx,
                sink,
                on_finish,
                outcome=progress,
                deadline=until,
                reading=surface,
                write_now=write_now,
                write_last=last,
            )

        return await self.run(call)

    def _timing(self, write: Write) -> Write:
        """`write`, noting the time to the first event of each attempt for `latency`."""
        load = self._router.load
        seen = [0]

        async def timed(data: bytes) -> None:
            if seen[0] != self.attempts:
                seen[0] = self.attempts
                load.observe(self.deployment.model_id, trio.current_time() - self._started)
            await write(data)

        return timed

    async def _prepare(self, dep: Deployment) -> tuple[Relay, CallContext, UpstreamRequest]:
        """The relay, context and upstream request of an attempt at `dep`; raises the
        provider's refusal (InvalidRequest) if it cannot take the request."""
        relay = self._relays[dep.provider_name]
        ctx = CallContext(
            deployment=dep,
            stream=self.stream,
            include_usage=self.include_usage,
            request_id=self.request_id,
            created=self.created,
            response_format=self.response_format,
            request_bytes=self.request_bytes,
        )
        provider = relay.provider
        surface = self._surface
        urls = surface.media_urls(provider, ctx)
        if urls:
            missing = [u for u in urls if u not in self._media]
            if missing and self._fetcher is not None:
                params = surface.media_params()
                fetched = await self._fetcher.fetch_all(
                    [(u, params.get(u, "messages")) for u in missing]
                )
                self._media.update(fetched)
            ctx.media = {u: self._media[u] for u in urls if u in self._media}
        if self._offload is None:
            return relay, ctx, surface.build(provider, ctx)
        req = await self._offload.run(self.request_bytes, surface.build, provider, ctx)
        return relay, ctx, req

    async def run(self, call: Call[T]) -> T:
        """Try the plan until an attempt answers; raise what ended it otherwise."""
        plan = self.plan
        policy = plan.policy
        deps = plan.deployments
        router = self._router
        health = router.health
        load = router.load
        now = trio.current_time()
        self.deadline = now + self._relays[deps[0].provider_name].timeouts.total_s
        plan.budget.request(now)
        # Made on the first failure: an answer at the first attempt needs none of them.
        skip: set[str] = _NONE  # not to be tried again by this request
        tries: dict[str, int] = {}  # failed attempts per deployment, for the backoff
        not_before: dict[str, float] = {}  # Retry-After per deployment
        last: GatewayError | None = None  # the last retryable failure
        refusal: InvalidRequest | None = None  # the first provider that could not take it
        pos = 0
        while self.attempts < policy.max_attempts:
            if len(deps) == 1 and not skip:
                dep = deps[0]
            else:
                picked = _pick(deps, pos, skip, health.available, trio.current_time())
                if picked is None:
                    break
                pos, dep = picked
            key = dep.model_id
            try:
                relay, ctx, req = await self._prepare(dep)
            except InvalidRequest as e:
                refusal = refusal or e
                skip = _with(skip, key)
                continue
            if ctx.media:
                now = trio.current_time()  # fetching took time
            if self.attempts:
                now = trio.current_time()
                wait = not_before.get(key, now) - now
                if key in tries:
                    wait = max(wait, backoff_s(tries[key], policy.backoff_base_ms, self.rand()))
                if now + wait >= self.deadline or not plan.budget.try_retry(now):
                    break
                if wait > 0:
                    await trio.sleep(wait)
                    now = trio.current_time()
            self.attempts += 1
            self.deployment = dep
            if self.on_attempt is not None:
                self.on_attempt(dep, self.attempts)
            probe = health.start(key, now)
            load.started(key)
            self._started = now
            try:
                until = min(self.deadline, now + relay.timeouts.total_s)
                result = await call(relay, req, ctx, until)
            except GatewayError as e:
                now = trio.current_time()
                kind = failure_kind(e)
                hint = retry_after_s(e.headers) if kind == "status" else None
                if hurts_health(kind, e):
                    eject_for = hint if e.upstream_status == 429 else None
                    health.failure(key, now, policy, eject_for)
                elif kind == "status":
                    health.success(key, now)  # it answered: it is up
                elif probe:
                    health.release(key)
                if not retryable(kind, e, stream=self.stream, policy=policy):
                    raise
                last = e
                tries[key] = tries.get(key, 0) + 1
                if hint is not None:
                    if hint > policy.max_retry_after_s:
                        skip = _with(skip, key)  # do not wait that long: move on
                    else:
                        not_before[key] = now + hint
                continue
            except BaseException:
                if probe:
                    health.release(key)
                raise
            finally:
                load.ended(key)
            done = trio.current_time()
            error = result.error if isinstance(result, Outcome) else None
            if error is not None and (error.http_status >= 500 or error.http_status == 429):
                health.failure(key, done, policy)  # broke mid-stream: not retried (R3)
            else:
                health.success(key, done)
                if not isinstance(result, Outcome):
                    load.observe(key, done - now)
            return result
        if last is not None:
            raise last
        if refusal is not None:
            raise refusal
        raise UpstreamUnavailable(
            "No deployment of this model could take the request.", code="no_deployment"
        )


_NONE: set[str] = set()  # an empty skip set, shared: `_with` copies before adding


def _with(skip: set[str], key: str) -> set[str]:
    """`skip` with `key` in it (a set of the request's own once it has a member)."""
    if skip is _NONE:
        return {key}
    skip.add(key)
    return skip


def _pick(
    deps: Sequence[Deployment],
    pos: int,
    skip: set[str],
    available: Callable[[str, float], bool],
    now: float,
) -> tuple[int, Deployment] | None:
    """The next deployment from `pos` on, wrapping around: the first that is not skipped
    and not ejected, else the first not skipped; with the position after it."""
    n = len(deps)
    fallback: tuple[int, Deployment] | None = None
    for k in range(n):
        i = (pos + k) % n
        dep = deps[i]
        if dep.model_id in skip:
            continue
        if n == 1 or available(dep.model_id, now):
            return i + 1, dep
        if fallback is None:
            fallback = (i + 1, dep)
    return fallback
