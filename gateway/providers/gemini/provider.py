"""The Gemini API (generateContent) as a provider (`kind = "gemini"`).

Requests go to `{base_url}/models/{model}:generateContent`, or
`:streamGenerateContent?alt=sse` when streaming, with the deployment's key in
`x-goog-api-key` (never the client's Authorization).

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

import orjson

from gateway.config import GeminiOptions
from gateway.errors import GatewayError, UpstreamError
from gateway.providers.base import (
    JSON,
    CallContext,
    Capabilities,
    Completion,
    Deployment,
    UpstreamRequest,
)
from gateway.providers.common import SHAPE_ERRORS, encode_body, load_json_object
from gateway.providers.gemini.contents import media_url
from gateway.providers.gemini.errors import gemini_error
from gateway.providers.gemini.request import build_payload
from gateway.providers.gemini.response import completion
from gateway.providers.gemini.stream import GeminiStreamTranslator

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta"

_JSON_HEADERS: Final = {"content-type": "application/json", "accept": "application/json"}
_STREAM_HEADERS: Final = {"content-type": "application/json", "accept": "text/event-stream"}


class GeminiProvider:
    """Provider for `kind = "gemini"`: the Gemini API's generateContent."""

    kind = "gemini"

    def capabilities(self, deployment: Deployment) -> Capabilities:
        return Capabilities()  # responseSchema enforces json_schema upstream

    def media_urls(self, body: JSON, ctx: CallContext) -> list[str]:
        """http(s) URLs of image and file parts, unless `fetch_media` is off."""
        if not ctx.deployment.options_of(GeminiOptions).fetch_media:
            return []
        urls: list[str] = []
        for msg in body["messages"]:
            content = msg.get("content")
            if msg.get("role") != "user" or not isinstance(content, list):
                continue
            for part in content:
                url = media_url(part)
                if url is not None and url not in urls:
                    urls.append(url)
        return urls

    def build_request(self, body: JSON, ctx: CallContext) -> UpstreamRequest:
        dep = ctx.deployment
        payload = build_payload(body, ctx)
        model = dep.upstream_model.removeprefix("models/")
        action = ":streamGenerateContent?alt=sse" if ctx.stream else ":generateContent"
        base = (dep.base_url or DEFAULT_BASE_URL).rstrip("/")
        headers = dict(_STREAM_HEADERS if ctx.stream else _JSON_HEADERS)
        if dep.api_key:
            headers["x-goog-api-key"] = dep.api_key
        headers.update(dep.headers)
        return UpstreamRequest(
            url=f"{base}/models/{quote(model, safe='-._~')}{action}",
            headers=headers,
            body=encode_body(payload),
            stream=ctx.stream,
            payload=payload,
        )

    def parse_response(self, body: bytes, ctx: CallContext) -> Completion:
        try:
            return completion(load_json_object(body), ctx)
        except SHAPE_ERRORS:
            raise UpstreamError("Gemini returned a response of an unexpected shape.") from None

    def new_stream_translator(self, ctx: CallContext) -> GeminiStreamTranslator:
        return GeminiStreamTranslator(ctx)

    def map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        try:
            obj = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            text = body[:200].decode("utf-8", "replace").strip()
            obj = {"error": {"message": text or f"HTTP {status}"}}
        return gemini_error(obj, status, headers)
