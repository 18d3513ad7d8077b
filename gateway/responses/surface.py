"""The Responses API as a surface of the routing chain (gateway/upstream/surface.py).

Per attempt, the deployment decides: an upstream that serves the Responses API
itself (`NativeResponses.speaks_responses`) gets the Responses request (native.py);
every other one gets the chat completions request of the bridge (to_chat.py), or,
when the bridge cannot carry the request, the bridge's refusal, so the chain moves on
to a deployment that can or answers with that 400. Either way the answer comes back
as the gateway's Responses object or events, and `response` holds the final object
for the route to store.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.errors import GatewayError, InternalError
from gateway.providers.base import (
    CallContext,
    Completion,
    Deployment,
    NativeResponses,
    Provider,
    StreamTranslator,
    UpstreamRequest,
)
from gateway.responses.complete import response_from_chat
from gateway.responses.native import NativeStream, native_payload, parse_native
from gateway.responses.stream import ResponsesStream
from gateway.responses.to_chat import Bridge

JSON = dict[str, Any]


def speaks_responses(provider: Provider, dep: Deployment) -> bool:
    """Whether a request to `dep` goes to its upstream as a Responses request."""
    return isinstance(provider, NativeResponses) and provider.speaks_responses(dep)


class ResponsesSurface:
    """One Responses request's way through the chain: its bridge and native forms."""

    __slots__ = ("_current", "bridge", "items", "request", "response", "skeleton")

    def __init__(
        self, request: JSON, items: Sequence[JSON], bridge: Bridge, skeleton: JSON
    ) -> None:
        self.request = request  # the validated client body
        self.items = items  # the whole input: history, then the request's own
        self.bridge = bridge  # its chat form; the route puts the admitted body in
        self.skeleton = skeleton  # the response object before any output
        self.response: JSON | None = None  # the final response object, once known
        self._current: ResponsesStream | NativeStream | None = None  # the attempt's stream

    # ---------------------------------------------------------------- the request

    def media_urls(self, provider: Provider, ctx: CallContext) -> list[str]:
        if speaks_responses(provider, ctx.deployment):
            return []  # the upstream fetches them
        return provider.media_urls(self.bridge.body, ctx)

    def media_params(self) -> dict[str, str]:
        return self.bridge.media

    def build(self, provider: Provider, ctx: CallContext) -> UpstreamRequest:
        if speaks_responses(provider, ctx.deployment):
            assert isinstance(provider, NativeResponses)
            cap = self.bridge.body.get("max_completion_tokens")
            payload = native_payload(
                self.request,
                self.items,
                ctx.deployment.upstream_model,
                ctx.stream,
                cap if isinstance(cap, int) else None,
            )
            return provider.responses_request(payload, ctx)
        if self.bridge.refusal is not None:
            raise self.bridge.refusal
        return provider.build_request(self.bridge.body, ctx)

    # ---------------------------------------------------------------- the answer

    def parse(self, provider: Provider, body: bytes, ctx: CallContext) -> Completion:
        if speaks_responses(provider, ctx.deployment):
            self.response, completion = parse_native(body, self.skeleton)
            return completion
        chat = provider.parse_response(body, ctx)
        self.response = response_from_chat(orjson.loads(chat.body), self.skeleton)
        return Completion(orjson.dumps(self.response), chat.usage)

    def translator(self, provider: Provider, ctx: CallContext) -> StreamTranslator:
        current: ResponsesStream | NativeStream
        if speaks_responses(provider, ctx.deployment):
            current = NativeStream(self.skeleton)
        else:
            current = ResponsesStream(provider.new_stream_translator(ctx), self.skeleton)
        self._current = current
        return current

    def last_event(self, translator: StreamTranslator, error: GatewayError | None) -> bytes:
        if not isinstance(translator, ResponsesStream | NativeStream):
            raise InternalError("A Responses stream was read by another translator.")
        event = translator.last_event(error)
        self.response = translator.response
        return event

    def failure_event(self, error: GatewayError) -> bytes:
        """The last events of a stream the gateway itself ended (a shutdown, a bug)."""
        if self._current is None:
            return error.sse_event()
        event = self._current.last_event(error)
        self.response = self._current.response
        return event

    def final(self, error: GatewayError | None) -> JSON | None:
        """The final response object of the stream being read (`error`: it failed), for
        storing before its last event; None if no attempt got as far as a stream."""
        if self._current is not None:
            self.response = self._current.final(error)
        return self.response
