"""POST /v1/chat/completions, the hot route, in raw ASGI: one request, start to end.

It names no provider: everything vendor-specific is behind a Relay. Every failure
leaves as an OpenAI-shaped error body; a bug of ours is logged with the request id
and answered with a plain 500, never a traceback.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import trio

from gateway.api.asgi import (
    JSON_HEADERS,
    ClientGone,
    Receive,
    Scope,
    Send,
    SSEWriter,
    header,
    processing_ms,
    read_body,
    send_bytes,
    send_error,
    until_disconnect,
)
from gateway.auth.principal import Principal
from gateway.billing.accounting import Accounting, admit, offloaded_counter
from gateway.config import Config
from gateway.errors import (
    GatewayError,
    InternalError,
)
from gateway.openai.body import parse_body
from gateway.openai.validate import validate_chat_request
from gateway.providers.base import CallContext, Deployment
from gateway.providers.common import media_url_params
from gateway.state import Gateway, Snapshot
from gateway.upstream.relay import Outcome, Relay

log = logging.getLogger("gateway")


def read_request(raw: bytes) -> dict[str, Any]:
    """Parse and validate a body (JSON limits included): a 400 naming what is wrong.
    O(size): runs off the event loop for big bodies (gateway/offload.py)."""
    return validate_chat_request(parse_body(raw))


def response_format_type(body: dict[str, Any]) -> str | None:
    """The client's structured-output mode, if any ("text" counts as none)."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return kind if kind in ("json_schema", "json_object") else None


def request_deadline_s(config: Config, relay: Relay) -> float:
    """The longest an admitted request can still run: fetching its media (all URLs
    share twice the per-URL timeout) and the relay's total deadline. Its budget
    reservation must outlive it (billing.limits.budget.reservation_ttl_s)."""
    return 2 * config.media.timeout_s + relay.timeouts.total_s


REFUSALS = frozenset({401, 402, 403, 429})  # refused before admission: counted for usage


def count_refusal(
    gw: Gateway,
    error: GatewayError,
    principal: Principal | None,
    model: str | None,
    dep: Deployment | None,
) -> None:
    """A request refused before admission, counted for usage reports (billing/refusals.py)."""
    gw.refusals.count(
        status=error.http_status,
        code=error.code or error.type,
        now=time.time(),
        key_id=principal.key_id if principal else None,
        key_name=principal.name if principal else None,
        model=model,
        provider=dep.provider_name if dep else None,
    )


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def chat_completions(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/chat/completions on the config current at its start, to its end (a
    reload meanwhile changes nothing for it; gateway/state.py)."""
    since = time.perf_counter()
    snap = gw.acquire()
    try:
        await _chat(gw, snap, since, scope, receive, send)
    finally:
        gw.release(snap)


async def _chat(
    gw: Gateway, snap: Snapshot, since: float, scope: Scope, receive: Receive, send: Send
) -> None:
    """Auth, validate, route, admit, relay, settle."""
    config = snap.config
    request_id = "chatcmpl-" + os.urandom(12).hex()
    extra = [(b"x-request-id", request_id.encode())]
    writer: SSEWriter | None = None
    principal: Principal | None = None  # what is known of the request, for a refusal
    model: str | None = None
    dep: Deployment | None = None
    account: Accounting | None = None
    streamed: Outcome | None = None  # filled in by the relay as the stream goes
    failure: GatewayError | None = None
    try:
        principal = snap.auth.authenticate(header(scope, b"authorization"))
        server = config.server
        raw = await read_body(scope, receive, server.max_body_bytes)
        size = len(raw)
        body = await gw.offload.run(size, read_request, raw)
        del raw  # the parsed body is all that is needed now
        model = body["model"]
        snap.auth.authorize_model(principal, model)
        dep = snap.router.resolve(model, principal.may_use)
        relay = snap.relays[dep.provider_name]
        stream = body.get("stream") is True
        ctx = CallContext(
            deployment=dep,
            stream=stream,
            include_usage=stream and wants_usage(body),
            request_id=request_id,
            created=int(time.time()),
            response_format=response_format_type(body),
            request_bytes=size,
        )
        acct, body = await admit(  # 429/402 first
            ledger=gw.ledger,
            limiter=gw.limiter,
            default_output_tokens=config.state.default_output_tokens,
            principal=principal,
            dep=dep,
            body=body,
            request_id=request_id,
            deadline_s=request_deadline_s(config, relay),
            count=offloaded_counter(gw.offload, size),
        )
        account = acct
        extra += acct.headers
        urls = relay.provider.media_urls(body, ctx)
        if urls:
            params = media_url_params(body)
            ctx.media = await snap.fetcher.fetch_all([(u, params.get(u, "messages")) for u in urls])
        upstream_request = await gw.offload.run(size, relay.provider.build_request, body, ctx)
        if stream:
            sse = writer = SSEWriter(send, extra, since)
            progress = streamed = Outcome()

            async def settle_stream(outcome: Outcome) -> None:
                await acct.finish(outcome.usage, outcome.error, events=outcome.events)

            async def work() -> None:
                await relay.stream(upstream_request, ctx, sse.write, settle_stream, progress)
                await sse.end()

        else:

            async def work() -> None:
                completion = await relay.complete(upstream_request, ctx)
                await acct.finish(completion.usage, None)
                head = [*JSON_HEADERS, *extra, processing_ms(since)]
                await send_bytes(send, 200, completion.body, head)

        await until_disconnect(receive, work, gw.shutdown)
    except ClientGone:
        return
    except Exception as e:
        if isinstance(e, GatewayError):
            failure = e
            if account is None and e.http_status in REFUSALS:
                count_refusal(gw, e, principal, model, dep)
        else:
            log.exception("internal error in request %s", request_id)
            failure = InternalError(f"The gateway failed unexpectedly (request id {request_id}).")
        settled = account is not None and account.done  # the stream's last event is out
        if account is not None:  # the row is journaled before the client hears the end
            await account.finish(None, failure, events=streamed.events if streamed else 0)
        if writer is not None and writer.started:  # a shutdown (or a bug) mid-stream
            if not settled:
                await writer.write(failure.sse_event())
            await writer.end()
        else:
            await send_error(send, failure, [*extra, processing_ms(since)])
    finally:
        if account is not None and not account.done:
            # Failed before the upstream answered, or the client went away (its
            # request was cancelled), or the shutdown cut it: settle what is known,
            # shielded from that cancel.
            gone = "shutting_down" if gw.shutdown.stopping else "client_gone"
            with trio.CancelScope(shield=True):
                await account.finish(
                    None,
                    failure,
                    events=streamed.events if streamed else 0,
                    status=None if failure else gone,
                )
