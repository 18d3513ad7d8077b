"""Shared helpers of the Gemini provider tests: contexts, requests, stream translation."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson

from gateway.config import GeminiOptions
from gateway.openai.sse import SSEDecoder
from gateway.openai.validate import validate_chat_request
from gateway.providers.base import CallContext, Deployment, Media
from gateway.providers.gemini.provider import GeminiProvider
from gateway.providers.gemini.request import build_payload
from tests.providers.streams import client_bytes

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "gemini"
P = GeminiProvider()
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
PNG = base64.b64encode(PNG_BYTES).decode()
PDF = base64.b64encode(b"%PDF-1.4 minimal").decode()
JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
WEBP_BYTES = b"RIFF\x10\x00\x00\x00WEBPVP8 "
GIF_BYTES = b"GIF89a\x01\x00\x01\x00"
HEIC_BYTES = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
WAV = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
GIF = base64.b64encode(b"GIF89a\x01\x00").decode()
SIG1 = orjson.loads((FIXTURES / "tool_call.json").read_bytes())["candidates"][0]["content"][
    "parts"
][0]["thoughtSignature"]


def ctx(
    stream: bool = False,
    include_usage: bool = False,
    media: dict[str, Media] | None = None,
    upstream_model: str = "gemini-2.5-flash",
    **options: Any,
) -> CallContext:
    deployment = Deployment(
        model_id="gem",
        provider_name="google",
        kind="gemini",
        upstream_model=upstream_model,
        base_url="",
        api_key="AIza-upstream",
        options=GeminiOptions(**{k: v for k, v in options.items() if k != "max_output_tokens"}),
        max_output_tokens=options.get("max_output_tokens"),
    )
    return CallContext(deployment, stream, include_usage, "chatcmpl-test", 1730000000, media or {})


def user(content: Any = "hi") -> dict[str, Any]:
    return {"role": "user", "content": content}


def req(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"model": "gem", "messages": list(messages) or [user()], **fields}
    return validate_chat_request(body)


def payload(body: dict[str, Any], c: CallContext | None = None) -> dict[str, Any]:
    return build_payload(body, c or ctx())


def call(call_id: str, name: str = "get_weather", args: str = '{"city":"Paris"}') -> Any:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def tool(call_id: str, content: Any = "sunny") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def weather_tool(**extra: Any) -> dict[str, Any]:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    return {"type": "function", "function": {"name": "get_weather", "parameters": params, **extra}}


def translate(data: bytes, c: CallContext, pieces: list[bytes] | None = None) -> tuple[bytes, Any]:
    """The client's bytes for `data` (or `pieces`), and the translator."""
    t = P.new_stream_translator(c)
    return client_bytes(t, pieces if pieces is not None else [data]), t


def events(out: bytes) -> list[Any]:
    return [e.data if e.data == b"[DONE]" else orjson.loads(e.data) for e in SSEDecoder().feed(out)]


def deltas(out: bytes) -> list[tuple[int, dict[str, Any], str | None]]:
    """(index, delta, finish_reason) of every choice chunk, in order."""
    return [
        (c["index"], c["delta"], c["finish_reason"])
        for e in events(out)
        if isinstance(e, dict) and "choices" in e
        for c in e["choices"]
    ]
