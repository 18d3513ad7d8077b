"""The client-facing API a request speaks, as the chain and the relay see it.

A request reaches the providers through one of the gateway's API surfaces: chat
completions (`ChatSurface`, the default) or the Responses API (gateway/responses/). A
surface says, per attempt, how the upstream request is built from the client's body,
how an upstream answer is read back (`parse`, a stream `translator`), and what the
stream's last event is once the request is settled (`last_event`: chat's `[DONE]` or
error event). The chain and the relay ask the surface and never the route, so every
surface gets the same deadlines, retries, failover and accounting.

Pure module: no I/O.
"""

from __future__ import annotations

from typing import Protocol

from gateway.errors import GatewayError
from gateway.openai.sse import DONE
from gateway.providers.base import (
    JSON,
    CallContext,
    Completion,
    Provider,
    StreamTranslator,
    UpstreamRequest,
)
from gateway.providers.common import media_url_params


class Reading(Protocol):
    """How one attempt's answer is read back (what the relay needs)."""

    def parse(self, provider: Provider, body: bytes, ctx: CallContext) -> Completion:
        """A 2xx non-streamed upstream body as the client's answer."""
        ...

    def translator(self, provider: Provider, ctx: CallContext) -> StreamTranslator:
        """A fresh translator for one streamed attempt (providers/base.py's contract)."""
        ...

    def last_event(self, translator: StreamTranslator, error: GatewayError | None) -> bytes:
        """The stream's last event, written after the request was settled: success when
        `error` is None, else the failure (the stream then ends)."""
        ...


class Surface(Reading, Protocol):
    """A client API: how each attempt's upstream request is built, and read back."""

    def media_urls(self, provider: Provider, ctx: CallContext) -> list[str]:
        """The http(s) URLs the provider needs fetched for this request."""
        ...

    def media_params(self) -> dict[str, str]:
        """URL -> the client's field path of its first use (names a failed fetch)."""
        ...

    def build(self, provider: Provider, ctx: CallContext) -> UpstreamRequest:
        """The upstream request for `ctx.deployment`; InvalidRequest if it cannot
        express the request (the chain then skips that deployment)."""
        ...


class ChatReading:
    """Chat completions: the provider's own translation, `[DONE]` or the error event."""

    __slots__ = ()

    def parse(self, provider: Provider, body: bytes, ctx: CallContext) -> Completion:
        return provider.parse_response(body, ctx)

    def translator(self, provider: Provider, ctx: CallContext) -> StreamTranslator:
        return provider.new_stream_translator(ctx)

    def last_event(self, translator: StreamTranslator, error: GatewayError | None) -> bytes:
        return DONE if error is None else error.sse_event()


CHAT_READING = ChatReading()


class ChatSurface(ChatReading):
    """`POST /v1/chat/completions`: the validated body goes to each provider as it is."""

    __slots__ = ("body",)

    def __init__(self, body: JSON) -> None:
        self.body = body

    def media_urls(self, provider: Provider, ctx: CallContext) -> list[str]:
        return provider.media_urls(self.body, ctx)

    def media_params(self) -> dict[str, str]:
        return media_url_params(self.body)

    def build(self, provider: Provider, ctx: CallContext) -> UpstreamRequest:
        return provider.build_request(self.body, ctx)
