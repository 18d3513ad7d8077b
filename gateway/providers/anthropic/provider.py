"""The Anthropic Messages API as a provider (`kind = "anthropic"`).

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson

from gateway.config import AnthropicOptions
from gateway.errors import GatewayError, UpstreamError
from gateway.providers.anthropic.errors import error_from, stream_error
from gateway.providers.anthropic.request import image_urls, translate_request
from gateway.providers.anthropic.response import completion
from gateway.providers.anthropic.stream import AnthropicStreamTranslator
from gateway.providers.base import (
    JSON,
    CallContext,
    Capabilities,
    Completion,
    Deployment,
    UpstreamRequest,
)
from gateway.providers.common import encode_body, load_json_object

DEFAULT_BASE_URL: Final = "https://api.anthropic.com/v1"


class AnthropicProvider:
    """Provider for `kind = "anthropic"`: the Anthropic Messages API."""

    kind = "anthropic"

    def capabilities(self, deployment: Deployment) -> Capabilities:
        """No audio input; json_schema through a forced tool unless `structured_output`
        is "native"."""
        native = deployment.options_of(AnthropicOptions).structured_output == "native"
        return Capabilities(audio=False, json_schema="native" if native else "emulated")

    def media_urls(self, body: JSON, ctx: CallContext) -> list[str]:
        if not ctx.deployment.options_of(AnthropicOptions).fetch_media:
            return []  # Anthropic fetches image URLs itself
        return list(dict.fromkeys(image_urls(body)))

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        dep = ctx.deployment
        payload = translate_request(body, ctx)
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if ctx.stream else "application/json",
            "anthropic-version": ctx.deployment.options_of(AnthropicOptions).api_version,
        }
        if dep.api_key:
            headers["x-api-key"] = dep.api_key
        headers.update(dep.headers)
        base_url = (dep.base_url or DEFAULT_BASE_URL).rstrip("/")
        return UpstreamRequest(
            url=base_url + "/messages",
            headers=headers,
            body=encode_body(payload),
            stream=ctx.stream,
            payload=payload,
        )

    def parse_response(self, body: bytes, ctx: CallContext) -> Completion:
        obj = load_json_object(body)
        if obj.get("type") == "error":
            raise stream_error(obj)
        if obj.get("type") != "message" or not isinstance(obj.get("content"), list):
            raise UpstreamError("The upstream response is not an Anthropic message.")
        out = completion(obj, ctx)
        return Completion(body=orjson.dumps(out), usage=out["usage"])

    def new_stream_translator(self, ctx: CallContext) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(ctx)

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        try:
            obj = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            text = body[:200].decode("utf-8", "replace").strip()
            obj = {"error": {"message": text}} if text else None
        return error_from(status, obj, headers)
