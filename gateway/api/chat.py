"""POST /v1/chat/completions, the hot route, in raw ASGI: one request, start to end.

It names no provider: the router plans the deployments a request may try, and the
chain (gateway/upstream/chain.py) makes the attempts, each through its provider's
relay. Every failure leaves as an OpenAI-shaped error body; a bug of ours is logged
with the request id and answered with a plain 500, never a traceback. Responses say
which deployment served and after how many attempts (`x-gateway-deployment`,
`x-gateway-attempts`; docs/routing.md), streams and errors too.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from urllib.parse import quote

import orjson
import trio

from gateway.api.asgi import (
    JSON_HEADERS,
    ClientGone,
    Receive,
    Scope,
    Send,
    SSEWriter,
    header,
    read_body,
    send_bytes,
    send_error,
    until_disconnect,
)
from gateway.billing.accounting import Accounting, admit
from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
)
from gateway.openai.validate import validate_chat_request
from gateway.providers.base import Deployment
from gateway.state import Gateway
from gateway.upstream.chain import Chain
from gateway.upstream.relay import Outcome

log = logging.getLogger("gateway")


def parse_json_body(raw: bytes) -> Any:
    """The parsed body, or a 400 that says what is wrong with it."""
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({e.msg}, at byte {e.pos})."
        ) from None


def response_format_type(body: dict[str, Any]) -> str | None:
    """The client's structured-output mode, if any ("text" counts as none)."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return kind if kind in ("json_schema", "json_object") else None


def wants_usage(body: dict[str, Any]) -> bool:
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


async def chat_completions(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/chat/completions: auth, validate, route, admit, relay, settle."""
    request_id = "chatcmpl-" + os.urandom(12).hex()
    extra = [(b"x-request-id", request_id.encode())]
    writer: SSEWriter | None = None
    account: Accounting | None = None
    streamed: Outcome | None = None  # filled in by the relay as the stream goes
    failure: GatewayError | None = None
    try:
        principal = gw.auth.authenticate(header(scope, b"authorization"))
        server = gw.config.server
        raw = await read_body(scope, receive, server.max_body_bytes, server.body_timeout_s)
        body = parse_json_body(raw)
        validate_chat_request(body)
        model = body["model"]
        gw.auth.authorize_model(principal, model)
        fallbacks = body.pop("models", None)  # the request's own fallbacks: never sent upstream
        if fallbacks is not None:
            for i, fallback in enumerate(fallbacks):
                gw.auth.authorize_model(principal, fallback, f"models[{i}]")
        plan = gw.router.plan(model, trio.current_time(), fallbacks)
        stream = body.get("stream") is True
        acct, body = await admit(  # 429/402 first
            ledger=gw.ledger,
            limiter=gw.limiter,
            default_output_tokens=gw.config.state.default_output_tokens,
            principal=principal,
            dep=plan.deployments[0],
            reach=plan.deployments[1:],
            model=model,
            body=body,
            request_id=request_id,
        )
        account = acct
        extra += acct.headers
        routed_at = len(extra)

        def on_attempt(dep: Deployment, attempts: int) -> None:
            # Before the attempt: the row charges the deployment that answers, and a
            # stream's headers (sent with its first byte) name it.
            acct.served(dep, attempts)
            extra[routed_at:] = route_headers(dep, attempts)

        run = Chain(
            router=gw.router,
            plan=plan,
            relays=gw.relays,
            fetcher=gw.fetcher,
            body=body,
            stream=stream,
            include_usage=stream and wants_usage(body),
            request_id=request_id,
            created=int(time.time()),
            response_format=response_format_type(body),
            on_attempt=on_attempt,
        )
        if stream:
            sse = writer = SSEWriter(send, extra)
            progress = streamed = Outcome()

            async def settle_stream(outcome: Outcome) -> None:
                await acct.finish(outcome.usage, outcome.error, events=outcome.events)

            async def work() -> None:
                await run.stream_to(sse.write, settle_stream, progress)
                await sse.end()

        else:

            async def work() -> None:
                completion = await run.complete()
                await acct.finish(completion.usage, None)
                await send_bytes(send, 200, completion.body, JSON_HEADERS + extra)

        await until_disconnect(receive, work)
    except ClientGone:
        return
    except GatewayError as e:
        failure = e
        if account is not None:  # the row is journaled before the client hears the end
            await account.finish(None, e, events=streamed.events if streamed else 0)
        await send_error(send, e, extra)
    except Exception:
        log.exception("internal error in request %s", request_id)
        failure = InternalError(f"The gateway failed unexpectedly (request id {request_id}).")
        if account is not None:
            await account.finish(None, failure, events=streamed.events if streamed else 0)
        if writer is not None and writer.started:
            await writer.write(failure.sse_event())
            await writer.end()
        else:
            await send_error(send, failure, extra)
    finally:
        if account is not None and not account.done:
            # Failed before the upstream answered, or the client went away (its
            # request was cancelled): settle what is known, shielded from that cancel.
            with trio.CancelScope(shield=True):
                await account.finish(
                    None,
                    failure,
                    events=streamed.events if streamed else 0,
                    status=None if failure else "client_gone",
                )
