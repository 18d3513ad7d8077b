"""Shared pieces of the Responses API unit tests: contexts, skeletons, running streams."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.config import AnthropicOptions, GeminiOptions
from gateway.errors import GatewayError
from gateway.providers.anthropic.provider import AnthropicProvider
from gateway.providers.base import CallContext, Deployment, Provider
from gateway.providers.gemini.provider import GeminiProvider
from gateway.providers.openai import OpenAIProvider
from gateway.responses.objects import skeleton
from gateway.responses.stream import ResponsesStream

RESPONSE_ID = "resp_" + "ab" * 24
CREATED = 1_730_000_000

DEPLOYMENTS: dict[str, tuple[Provider, Deployment]] = {
    "openai": (
        OpenAIProvider(),
        Deployment(model_id="gpt", provider_name="openai", kind="openai", upstream_model="gpt-x"),
    ),
    "anthropic": (
        AnthropicProvider(),
        Deployment(
            model_id="claude",
            provider_name="anthropic",
            kind="anthropic",
            upstream_model="claude-sonnet-4-5",
            options=AnthropicOptions(reasoning_output=True),
        ),
    ),
    "gemini": (
        GeminiProvider(),
        Deployment(
            model_id="gemini",
            provider_name="gemini",
            kind="gemini",
            upstream_model="gemini-2.5-flash",
            options=GeminiOptions(reasoning_output=True),
        ),
    ),
}


def context(vendor: str = "openai", stream: bool = True) -> CallContext:
    return CallContext(
        deployment=DEPLOYMENTS[vendor][1],
        stream=stream,
        include_usage=False,
        request_id=RESPONSE_ID,
        created=CREATED,
    )


def new_skeleton(**request: Any) -> dict[str, Any]:
    return skeleton({"model": "gpt", **request}, RESPONSE_ID, CREATED, True)


def translator(vendor: str = "openai", **request: Any) -> ResponsesStream:
    provider = DEPLOYMENTS[vendor][0]
    return ResponsesStream(provider.new_stream_translator(context(vendor)), new_skeleton(**request))


def run(t: ResponsesStream, pieces: Iterable[bytes]) -> tuple[bytes, GatewayError | None]:
    """The client's bytes as the relay makes them: content, then the last event(s) once
    settled. With an error before any content there are none: the relay raises it."""
    out = [t.feed(piece) for piece in pieces]
    if t.error is None:
        out.append(t.close())
    body = b"".join(out)
    error = t.error
    if error is not None and not body:
        return b"", error
    t.final(error)  # what the route stores, before the last event
    return body + t.last_event(error), error
