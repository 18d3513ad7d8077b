"""One request to a model, start to end, for every route that calls one: chat
completions (chat.py) and the Responses API (responses.py).

Auth, the body (413, 408), validation, the model's scope and the request's own
fallbacks, the route plan, admission (429/402, the pending ledger row), the chain of
attempts, settlement before the last event, and the error contract are the same for
every such route; what differs is a `ModelCall`: how its body is read, the chat-shaped
body the machinery runs on, the surface its attempts speak (upstream/surface.py), and
what is done with the answer once it is settled (the Responses API stores it).

It names no provider: the router plans the deployments a request may try, and the
chain (gateway/upstream/chain.py) makes the attempts, each through its provider's
relay. Every failure leaves as an OpenAI-shaped error body; a bug of ours is logged
with the request id and answered with a plain 500, never a traceback. Responses say
which deployment served and after how many attempts (`x-gateway-deployment`,
`x-gateway-attempts`; docs/routing.md), streams and errors too. It fills in the
request's record (observability/record.py: key, model, deployment, usage, status) for
the access line, the metrics and the span written once it has ended.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol
from urllib.parse import quote

import trio

from gateway.api.asgi import (
    JSON_HEADERS,
    ClientGone,
    Receive,
    Scope,
    Send,
    SSEWriter,
    body_writer,
    body_writer_now,
    header,
    processing_ms,
    read_body,
    send_bytes,
    send_error,
    until_disconnect,
)
from gateway.auth.principal import Authenticator, Principal, presented_key_id
from gateway.billing.accounting import Accounting, admit, offloaded_counter
from gateway.config import Config
from gateway.errors import AuthenticationFailed, GatewayError, InternalError
from gateway.observability.record import RequestRecord
from gateway.providers.base import Completion, Deployment
from gateway.state import Gateway, Snapshot
from gateway.upstream.chain import Chain
from gateway.upstream.relay import Outcome, Relay
from gateway.upstream.router import Plan
from gateway.upstream.surface import Surface

log = logging.getLogger("gateway")

JSON = dict[str, Any]


class ModelCall(Protocol):
    """What one route's request does differently from another's."""

    request_id: str  # the gateway's id for it, e.g. "chatcmpl-..."; the ledger's key

    def read(self, raw: bytes) -> JSON:
        """Parse and validate the body (a 400 naming the field); O(size): runs off the
        event loop for big bodies."""
        ...

    async def prepare(
        self, gw: Gateway, snap: Snapshot, principal: Principal, body: JSON, plan: Plan
    ) -> JSON:
        """The chat-shaped body billing counts and the chain runs on (`body` is the
        read one, without its `models`; `snap` the config the request runs on)."""
        ...

    def surface(self, body: JSON) -> Surface | None:
        """How the attempts build and read upstream calls for the admitted `body`;
        None: chat completions, the body as it is."""
        ...

    async def answered(self, completion: Completion) -> bytes:
        """The JSON body of a non-streamed answer, after it was settled."""
        ...

    async def settled(self, error: GatewayError | None) -> None:
        """A stream was settled (with `error`, it failed): before its last event."""
        ...

    def stream_failure(self, error: GatewayError) -> bytes:
        """The last event of a stream the gateway itself ended (a shutdown, a bug)."""
        ...


def response_format_type(body: JSON) -> str | None:
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


def authenticate(
    auth: Authenticator, authorization: bytes | None, rec: RequestRecord | None
) -> Principal:
    """The request's principal, named in its record (a failure by the public id of the
    key presented, never any of its secret), or AuthenticationFailed."""
    try:
        principal = auth.authenticate(authorization)
    except AuthenticationFailed:
        if rec is not None:
            rec.key_id = presented_key_id(authorization)
        raise
    if rec is not None:
        rec.key_id, rec.key_name = principal.key_id, principal.name
    return principal


def note_deployment(rec: RequestRecord, dep: Deployment) -> None:
    """The record names the deployment being tried (the last one, once it has ended)."""
    rec.provider = dep.provider_name
    rec.deployment = dep.model_id
    rec.provider_kind = dep.kind
    rec.response_model = dep.upstream_model


def wants_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def header_text(text: str) -> bytes:
    """`text` as a header value: as is when printable ASCII, else percent-encoded (a
    PROVIDER/MODEL id comes from the client and may hold anything)."""
    if text.isascii() and text.isprintable():
        return text.encode()
    return quote(text, safe="/@:=&.-_~+!*'(),;$").encode()


def route_headers(dep: Deployment, attempts: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-gateway-deployment", header_text(dep.model_id)),
        (b"x-gateway-attempts", b"%d" % attempts),
    ]


async def serve_model_call(
    gw: Gateway, scope: Scope, receive: Receive, send: Send, rec: RequestRecord, call: ModelCall
) -> None:
    """One request to a model on the config current at its start, to its end (a reload
    meanwhile changes nothing for it; gateway/state.py)."""
    since = time.perf_counter()
    snap = gw.acquire()
    try:
        await _serve(gw, snap, since, scope, receive, send, rec, call)
    finally:
        gw.release(snap)


async def _serve(
    gw: Gateway,
    snap: Snapshot,
    since: float,
    scope: Scope,
    receive: Receive,
    send: Send,
    rec: RequestRecord,
    call: ModelCall,
) -> None:
    """Auth, read, route, admit, relay, settle: one request to a model."""
    config = snap.config
    request_id = rec.completion_id = call.request_id
    extra = [(b"x-request-id", rec.request_id.encode())]
    writer: SSEWriter | None = None
    principal: Principal | None = None  # what is known of the request, for a refusal
    model: str | None = None
    dep: Deployment | None = None
    account: Accounting | None = None
    streamed: Outcome | None = None  # filled in by the relay as the stream goes
    failure: GatewayError | None = None
    try:
        principal = authenticate(snap.auth, header(scope, b"authorization"), rec)
        server = config.server
        raw = await read_body(scope, receive, server.max_body_bytes)
        size = len(raw)
        body = await gw.offload.run(size, call.read, raw)
        del raw  # the parsed body is all that is needed now
        model = rec.model = body["model"]
        snap.auth.authorize_model(principal, model)
        fallbacks = body.pop("models", None)  # the request's own fallbacks: never sent upstream
        if fallbacks is not None:
            for i, fallback in enumerate(fallbacks):
                snap.auth.authorize_model(principal, fallback, f"models[{i}]")
        plan = snap.router.plan(model, trio.current_time(), fallbacks, principal.may_use)
        dep = plan.deployments[0]
        note_deployment(rec, dep)
        body = await call.prepare(gw, snap, principal, body, plan)
        stream = rec.stream = body.get("stream") is True
        first = snap.relays[dep.provider_name]  # its deadline is the request's
        acct, body = await admit(  # 429/402 first
            ledger=gw.ledger,
            limiter=gw.limiter,
            default_output_tokens=config.state.default_output_tokens,
            principal=principal,
            dep=dep,
            reach=plan.deployments[1:],
            model=model,
            body=body,
            request_id=request_id,
            x_request_id=rec.request_id,
            deadline_s=request_deadline_s(config, first),
            count=offloaded_counter(gw.offload, size),
        )
        account = acct
        extra += acct.headers
        routed_at = len(extra)

        def on_attempt(dep: Deployment, attempts: int) -> None:
            # Before the attempt: the row charges the deployment that answers, and a
            # stream's headers (sent with its first byte) name it.
            acct.served(dep, attempts)
            extra[routed_at:] = route_headers(dep, attempts)
            note_deployment(rec, dep)

        run = Chain(
            router=snap.router,
            plan=plan,
            relays=snap.relays,
            fetcher=snap.fetcher,
            body=body,
            stream=stream,
            include_usage=stream and wants_usage(body),
            request_id=request_id,
            created=int(time.time()),
            response_format=response_format_type(body),
            on_attempt=on_attempt,
            offload=gw.offload,
            request_bytes=size,
            surface=call.surface(body),
        )
        if stream:
            sse = writer = SSEWriter(send, extra, since, rec, body_writer(scope))
            progress = streamed = Outcome()

            async def settle_stream(outcome: Outcome) -> None:
                await acct.finish(outcome.usage, outcome.error, events=outcome.events)
                await call.settled(outcome.error)

            async def work() -> None:
                # The pump writes the pieces after the first (the head is out by then).
                await run.stream_to(
                    sse.write, settle_stream, progress, body_writer_now(scope), sse.write_last
                )
                await sse.end()  # a no-op once the last event ended it

        else:

            async def work() -> None:
                completion = await run.complete()
                await acct.finish(completion.usage, None)
                answer = await call.answered(completion)
                rec.status = 200
                head = [*JSON_HEADERS, *extra, processing_ms(since)]
                await send_bytes(send, 200, answer, head)

        await until_disconnect(scope, receive, work, gw.shutdown)
    except ClientGone:
        return
    except Exception as e:
        if isinstance(e, GatewayError):
            failure = e
            if account is None and e.http_status in REFUSALS:
                count_refusal(gw, e, principal, model, dep)
        else:
            log.exception("internal error in request %s", rec.request_id)
            failure = InternalError(
                f"The gateway failed unexpectedly (request id {rec.request_id})."
            )
        rec.fail(failure)
        settled = account is not None and account.done  # the stream's last event is out
        if account is not None:  # the row is journaled before the client hears the end
            await account.finish(None, failure, events=streamed.events if streamed else 0)
        if writer is not None and writer.started:  # a shutdown (or a bug) mid-stream
            if not settled:
                with trio.CancelScope(shield=True):
                    await call.settled(failure)
                await writer.write(call.stream_failure(failure))
            await writer.end()
        else:
            rec.status = failure.http_status
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
            if failure is None:
                rec.error_code = gone
        if streamed is not None and streamed.error is not None and rec.error is None:
            rec.fail(streamed.error)  # failed after the first byte: the status stays 200
        if account is not None and account.final is not None:
            row = account.final
            rec.usage(row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.cost_micros)
