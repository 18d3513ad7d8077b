"""The built-in offline model as a provider (`kind = "mock"`).

Pure module: no I/O.
"""

from __future__ import annotations

from gateway.config import MockOptions
from gateway.providers.base import JSON, CallContext, Capabilities, Deployment, UpstreamRequest
from gateway.providers.mock.reply import MockReply, respond
from gateway.providers.openai import OpenAIProvider, normalise_request


class MockProvider(OpenAIProvider):
    """Provider for `kind = "mock"`: answered in-process by `respond`.

    It speaks OpenAI's wire format, so responses, streams and errors go through the
    OpenAI translator like those of a real upstream; `upstream.local.LocalTransport` serves the
    reply's parts with their delays instead of a socket.
    """

    kind = "mock"

    def capabilities(self, deployment: Deployment) -> Capabilities:
        return Capabilities(json_schema="emulated")  # it generates an instance of the schema

    def speaks_responses(self, dep: Deployment) -> bool:
        return False  # answered in chat completions' format only: always bridged

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        payload = normalise_request(body, ctx)
        return UpstreamRequest(
            url="mock://local/v1/chat/completions",
            headers={},
            body=b"",
            stream=ctx.stream,
            payload=payload,
        )

    def respond(self, req: UpstreamRequest, ctx: CallContext) -> MockReply:
        assert req.payload is not None
        return respond(
            req.payload,
            ctx.deployment.options_of(MockOptions),
            created=ctx.created,
            request_id=ctx.request_id,
        )
