"""Raw ASGI plumbing for the hot route: body reading, responses, disconnect watch.

`POST /v1/chat/completions` is served straight from ASGI, in front of Quart, so the
hot path pays for no framework routing or request objects; everything else goes
through Quart (see app.py). Header values and bodies are bytes; constants are
pre-encoded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import trio

from gateway.errors import GatewayError, GatewayUnavailable, InvalidRequest, PayloadTooLarge
from gateway.observability.record import RequestRecord
from gateway.state import Shutdown
from gateway.upstream.pump import WriteNow

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
WriteBody = Callable[[bytes], Awaitable[None]]

# The built-in server's extensions (gateway/server/serve.py): a streamed body piece in
# one framed write, with no ASGI message (other servers lack it and get `send`), and
# the same write done without awaiting (`WriteNow`: None if it all went out, else an
# awaitable for the rest); and a callback when the client goes away, with no task
# waiting on `receive` for it.
BODY_EXTENSION = "gateway.body"
BODY_NOW_EXTENSION = "gateway.body_now"
GONE_EXTENSION = "gateway.gone"
WatchGone = Callable[[Callable[[], None]], Callable[[], None] | None]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # ask nginx-like proxies not to buffer the stream
]


def processing_ms(started: float) -> tuple[bytes, bytes]:
    """`openai-processing-ms` as OpenAI sends it: the milliseconds from the request's
    arrival (`time.perf_counter()` then) to its response head."""
    return (b"openai-processing-ms", b"%d" % round((time.perf_counter() - started) * 1000))


def body_writer(scope: Scope) -> WriteBody | None:
    """The server's direct body write (`BODY_EXTENSION`), if it has one."""
    extensions = scope.get("extensions")
    return extensions.get(BODY_EXTENSION) if extensions else None


def body_writer_now(scope: Scope) -> WriteNow | None:
    """The server's direct body write without awaiting (`BODY_NOW_EXTENSION`), if any:
    for the pieces after a streamed response's first, once its head is out."""
    extensions = scope.get("extensions")
    return extensions.get(BODY_NOW_EXTENSION) if extensions else None


class ClientGone(Exception):
    """The client closed the connection before the request was read."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes (413). Its deadline is
    the server's, on every route (`[server] body_timeout_s`, docs/reliability.md R9): past
    it this hears http.disconnect (ClientGone) and the server answers 408."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.") from None
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        if not message.get("more_body", False):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> None:
    """A complete response in two ASGI messages."""
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_headers(error: GatewayError, extra: Iterable[tuple[bytes, bytes]] = ()) -> Headers:
    out = list(JSON_HEADERS)
    out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items())
    out.extend(extra)
    return out


async def send_error(
    send: Send, error: GatewayError, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """An OpenAI-shaped error response with the error's status and headers."""
    await send_bytes(send, error.http_status, error.body(), error_headers(error, extra))


class SSEWriter:
    """Writes a streamed response; the 200 and its headers go out with the first bytes
    (`since`: the request's arrival, for openai-processing-ms; `record`: the request's
    record, which notes its time to first token). After the first write, the server's
    direct body write is used when it has one (`body`, see `body_writer`)."""

    __slots__ = ("_body", "_extra", "_record", "_send", "_since", "ended", "started")

    def __init__(
        self,
        send: Send,
        extra: Headers,
        since: float,
        record: RequestRecord | None = None,
        body: WriteBody | None = None,
    ) -> None:
        self._send = send
        self._extra = extra
        self._since = since
        self._record = record
        self._body = body
        self.started = False
        self.ended = False

    async def write(self, data: bytes) -> None:
        if self.started:
            if self._body is not None:
                await self._body(data)
            else:
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
            return
        self.started = True
        if self._record is not None:
            self._record.first_byte = time.monotonic()
            self._record.status = 200
        headers = [*SSE_HEADERS, *self._extra, processing_ms(self._since)]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def write_last(self, data: bytes) -> None:
        """`data`, then the end of the response: one write for both after the head."""
        if not self.started:
            await self.write(data)
            await self.end()
            return
        self.ended = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def end(self) -> None:
        if self.started and not self.ended:
            self.ended = True
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


def shutting_down() -> GatewayUnavailable:
    return GatewayUnavailable(
        "The gateway is shutting down and ended this request; retry it.", code="shutting_down"
    )


async def until_disconnect(
    scope: Scope, receive: Receive, work: Callable[[], Awaitable[None]], shutdown: Shutdown
) -> None:
    """Run `work`, cancelling it if the client disconnects first, or when the worker's
    graceful shutdown is over (then this raises `shutting_down`, so that the request
    ends with a final answer, docs/reliability.md R10).

    Cancelling `work` closes its upstream request, so an abandoned generation stops
    (docs/reliability.md R6). An exception from `work` is re-raised as itself, not wrapped
    in an exception group. The built-in server calls back when the client goes
    (`GONE_EXTENSION`); elsewhere a task waits on `receive` for http.disconnect.
    """
    if shutdown.stopping:
        raise shutting_down()
    extensions = scope.get("extensions")
    watch_gone: WatchGone | None = extensions.get(GONE_EXTENSION) if extensions else None
    if watch_gone is not None:
        client_gone = False
        with trio.CancelScope() as cancel:

            def on_gone() -> None:
                nonlocal client_gone
                client_gone = True
                cancel.cancel()

            stop = watch_gone(on_gone)
            if stop is not None:
                shutdown.running.add(cancel)
                try:
                    await work()
                    return
                finally:
                    stop()
                    shutdown.running.discard(cancel)
        if stop is not None:  # cancelled: the client went, or the shutdown's grace ended
            if not client_gone and shutdown.stopping:
                raise shutting_down()
            return
    failure: Exception | None = None
    finished = gone = False
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        shutdown.running.add(nursery.cancel_scope)
        try:
            await work()
            finished = True
        except Exception as e:
            failure = e
        finally:
            shutdown.running.discard(nursery.cancel_scope)
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if not finished and not gone and shutdown.stopping:
        raise shutting_down()
