"""Admission and settlement of one request: limits, budget, and its ledger rows.

`admit` counts the prompt, reserves the request, its tokens (prompt + output cap)
and its worst-case cost with the limiter (429 / 402 before anything is sent
upstream), and journals a `pending` ledger row. `Accounting.finish` runs exactly
once: it turns the usage the upstream reported (or, when there is none, an estimate
from the number of events streamed) into the actual cost, settles the reservation, and journals
the final row. For streams it runs just before the last event goes out, so the row
is durable before the client hears that the request ended (docs/reliability.md R15, R23).

A routed request may reach several deployments (docs/routing.md): the reservation
covers the most expensive one it may reach, and the row charges the one that answered,
at its price, with how many attempts it took (`served`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import trio

from gateway.auth.principal import Principal
from gateway.billing.ledger import Ledger
from gateway.billing.limits.budget import reservation_ttl_s
from gateway.billing.limits.core import Admission, LimitBackend, rate_limit_headers
from gateway.billing.spend import Usage, cost_micros, usage_from_openai, worst_case_micros
from gateway.errors import GatewayError
from gateway.offload import Offload
from gateway.providers.base import JSON, Deployment
from gateway.store.records import UsageRow
from gateway.tokens import count as tokens
from gateway.tokens.count import tokenizer_for
from gateway.tokens.tables import is_built, load_encoding

PromptCounter = Callable[[JSON, str | None], Awaitable[int]]
"""Counts a body's prompt tokens for a model (off the event loop for a big body)."""


_BUILDING = trio.Lock()  # one encoding built at a time (each is tens of MB)


async def tokenizer_ready(model: str | None) -> None:
    """Build the encoding counting for `model` uses, in a worker thread, if it is not
    built yet: the tables load when a request first needs them (~0.35 s and 46 MB for
    o200k_base), not at startup, and never on the event loop."""
    name = tokenizer_for(model).encoding
    if not is_built(name):
        async with _BUILDING:
            if not is_built(name):
                await trio.to_thread.run_sync(load_encoding, name)


async def count_inline(body: JSON, model: str | None) -> int:
    """The counter for callers without an offload pool: on the calling task."""
    await tokenizer_ready(model)
    return tokens.count_prompt_tokens(body, model)


def offloaded_counter(offload: Offload, size: int) -> PromptCounter:
    """The counter for a request whose body was `size` bytes: off the event loop when
    big (gateway/offload.py); the count itself is bounded (tokens.count.EXACT_CHARS)."""

    async def count(body: JSON, model: str | None) -> int:
        await tokenizer_ready(model)
        return await offload.run(size, tokens.count_prompt_tokens, body, model)

    return count


def output_cap(body: JSON, default: int) -> int:
    """The most output tokens a request can produce, for the reservation."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


class Accounting:
    """One admitted request's reservation and ledger rows."""

    __slots__ = (
        "_body",
        "_count",
        "_ledger",
        "_limiter",
        "_prompt_tokens",
        "admission",
        "attempts",
        "created",
        "deployment",
        "done",
        "final",
        "headers",
        "key_id",
        "key_name",
        "model",
        "request_id",
        "started",
        "worst_micros",
        "x_request_id",
    )

    def __init__(
        self,
        *,
        ledger: Ledger,
        limiter: LimitBackend,
        principal: Principal,
        dep: Deployment,
        request_id: str,
        body: JSON,
        prompt_tokens: int | None = None,
        worst_micros: int = 0,
        admission: Admission | None = None,
        model: str | None = None,
        count: PromptCounter = count_inline,
        x_request_id: str | None = None,
    ) -> None:
        self._ledger = ledger
        self._count = count
        self._limiter = limiter
        self._body = body
        self._prompt_tokens = prompt_tokens  # None: not counted (yet)
        self.key_id = principal.key_id
        self.model = dep.model_id if model is None else model  # the id the client asked for
        self.deployment = dep  # the deployment that served (or was tried last)
        self.attempts = 1
        self.key_name = principal.name
        self.request_id = request_id
        self.x_request_id = x_request_id  # its x-request-id (request_id: the completion id)
        self.worst_micros = worst_micros
        self.admission = admission
        self.headers = rate_limit_headers(admission) if admission is not None else []
        self.created = time.time()
        self.started = time.monotonic()
        self.done = False
        self.final: UsageRow | None = None  # the final row, once journaled

    async def prompt_tokens(self) -> int:
        """The prompt's token count, counted only when something needs it: admission of a
        limited key, or a request that ended without usage from the upstream."""
        if self._prompt_tokens is None:
            self._prompt_tokens = await self._count(self._body, self.deployment.upstream_model)
        return self._prompt_tokens

    def served(self, dep: Deployment, attempts: int) -> None:
        """The deployment that answered (or failed last), after `attempts` attempts: the
        row names it and charges its price."""
        self.deployment = dep
        self.attempts = attempts

    def _row(self, usage: Usage, cost: int, status: str) -> UsageRow:
        return UsageRow(
            request_id=self.request_id,
            key_id=self.key_id,
            model=self.model,
            provider=self.deployment.provider_name,
            deployment=self.deployment.model_id,
            attempts=self.attempts,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cost_micros=cost,
            status=status,
            latency_ms=round((time.monotonic() - self.started) * 1000),
            created_at=self.created,
            x_request_id=self.x_request_id,
            key_name=self.key_name,
        )

    async def open(self) -> None:
        """Journal the pending row: a crash before `finish` bills the reserved worst case.
        If that fails (disk full...), release the reservation before the error goes on."""
        try:
            await self._ledger.record(
                self._row(Usage(self._prompt_tokens or 0, 0), self.worst_micros, "pending")
            )
        except BaseException:
            self.done = True
            if self.admission is not None:
                with trio.CancelScope(shield=True):
                    await self._limiter.settle(self.admission, 0, 0, time.time())
            raise

    async def finish(
        self,
        usage_obj: Any,
        error: GatewayError | None,
        *,
        events: int = 0,
        status: str | None = None,
    ) -> None:
        """Journal the final row, then settle: once, and shielded, so that a client going
        away (or a shutdown) in the middle cannot leave a reservation or lose the row.

        `events` is the number of data events streamed to the client (the stream
        translator counts them): the estimate of output tokens when the upstream
        reported no usage, a stream cut short for instance.
        """
        if self.done:
            return
        self.done = True
        with trio.CancelScope(shield=True):
            await self._finish(usage_obj, error, events, status)

    async def _finish(
        self, usage_obj: Any, error: GatewayError | None, events: int, status: str | None
    ) -> None:
        usage = usage_from_openai(usage_obj)
        if usage is None:
            # No usage from the upstream: nothing sent means nothing generated; else
            # about one token per streamed content event (role and finish events aside).
            out = max(0, events - 2)
            usage = Usage(await self.prompt_tokens() if events or error is None else 0, out)
        cost = cost_micros(self.deployment.price, usage)
        if status is None:
            status = "ok" if error is None else (error.code or error.type)
        row = self.final = self._row(usage, cost, status)
        try:
            await self._ledger.record(row)
        finally:
            if self.admission is not None:
                await self._limiter.settle(self.admission, usage.total_tokens, cost, time.time())


async def admit(
    *,
    ledger: Ledger,
    limiter: LimitBackend,
    default_output_tokens: int,
    principal: Principal,
    dep: Deployment,
    body: JSON,
    request_id: str,
    reach: Sequence[Deployment] = (),
    model: str | None = None,
    deadline_s: float | None = None,
    count: PromptCounter = count_inline,
    x_request_id: str | None = None,
) -> tuple[Accounting, JSON]:
    """Check the key's limits and budget (429/402) and open the request's accounting.

    Returns the accounting and the body to send upstream. For a key with a budget,
    that body carries the reserved output cap explicitly (`max_completion_tokens`) when
    the client set none, so the upstream cannot produce more than was reserved; the
    reservation covers every choice of `n`. `default_output_tokens` is what a request
    that sets no max tokens reserves. `deadline_s` is the longest the request can run
    from here (its provider's `total_timeout_s` and what comes before the upstream
    call): its budget reservation counts that long plus a margin, so it cannot expire
    while the request runs (None: the limiter's default). `count` counts the prompt
    (the route passes one that counts a big body off the event loop).

    `dep` is the first deployment the request goes to; `reach` the others it may
    fall over to: the reservation covers the most expensive of them all. `model` is
    the id the client asked for (default: `dep`'s). `x_request_id`:
    the request's id as its response header says, kept in its ledger rows.
    """
    books = partial(
        Accounting,
        ledger=ledger,
        limiter=limiter,
        principal=principal,
        dep=dep,
        request_id=request_id,
        model=model,
        count=count,
        x_request_id=x_request_id,
    )
    limits = principal.limits
    if principal.key_id is None or limits is None or limits.unlimited:
        # Nothing to reserve: the prompt is counted later, only if the upstream reports
        # no usage (counting costs 50-90 us a request).
        account = books(body=body)
        await account.open()
        return account, body
    prompt = await count(body, dep.upstream_model)
    asked = output_cap(body, default_output_tokens)
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    cap = worst = 0
    for d in (dep, *reach):
        d_cap = min(asked, d.max_output_tokens) if d.max_output_tokens else asked
        cap = max(cap, d_cap)
        worst = max(worst, worst_case_micros(d.price, prompt, d_cap * choices))
    if limits.needs_budget and not any(
        body.get(f) is not None for f in ("max_completion_tokens", "max_tokens")
    ):
        body = {**body, "max_completion_tokens": cap}
    ttl = None if deadline_s is None else reservation_ttl_s(deadline_s)
    admission = await limiter.admit(
        principal.key_id,
        limits,
        prompt + cap * choices,
        worst,
        time.time(),
        reservation_ttl_s=ttl,
        reservation_id=request_id,  # the ledger's id: a reconcile matches the two
    )
    account = books(
        body=body,
        prompt_tokens=prompt,
        worst_micros=worst,
        admission=admission,
    )
    await account.open()
    return account, body
