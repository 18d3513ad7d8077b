"""POST /v1/chat/completions, the hot route, in raw ASGI.

The machinery every model route shares (auth, limits, routing, the chain of
attempts, settlement, the error contract) is in model_call.py; a chat request adds
only its validation, and sends the body to each provider as it is.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.api.asgi import Receive, Scope, Send
from gateway.api.model_call import (
    header_text,
    request_deadline_s,
    response_format_type,
    route_headers,
    serve_model_call,
    wants_usage,
)
from gateway.auth.principal import Principal
from gateway.errors import GatewayError
from gateway.observability.record import RequestRecord
from gateway.openai.body import parse_body
from gateway.openai.validate import validate_chat_request
from gateway.providers.base import Completion
from gateway.state import Gateway, Snapshot
from gateway.upstream.router import Plan
from gateway.upstream.surface import Surface

__all__ = [
    "ChatCall",
    "chat_completions",
    "header_text",
    "read_request",
    "request_deadline_s",
    "response_format_type",
    "route_headers",
    "wants_usage",
]


def read_request(raw: bytes) -> dict[str, Any]:
    """Parse and validate a body (JSON limits included): a 400 naming what is wrong.
    O(size): runs off the event loop for big bodies (gateway/offload.py)."""
    return validate_chat_request(parse_body(raw))


class ChatCall:
    """A chat completions request: its body is already what the chain runs on."""

    __slots__ = ("request_id",)

    def __init__(self) -> None:
        self.request_id = "chatcmpl-" + os.urandom(12).hex()

    def read(self, raw: bytes) -> dict[str, Any]:
        return read_request(raw)

    async def prepare(
        self, gw: Gateway, snap: Snapshot, principal: Principal, body: dict[str, Any], plan: Plan
    ) -> dict[str, Any]:
        return body

    def surface(self, body: dict[str, Any]) -> Surface | None:
        return None

    async def answered(self, completion: Completion) -> bytes:
        return completion.body

    async def settled(self, error: GatewayError | None) -> None:
        return None

    def stream_failure(self, error: GatewayError) -> bytes:
        return error.sse_event()


async def chat_completions(
    gw: Gateway, scope: Scope, receive: Receive, send: Send, rec: RequestRecord
) -> None:
    """POST /v1/chat/completions: auth, validate, route, admit, relay, settle."""
    await serve_model_call(gw, scope, receive, send, rec, ChatCall())
