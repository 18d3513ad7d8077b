"""Shared helpers of the Anthropic provider tests: contexts, messages, tools, translation."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.fakes.anthropic_rules import check_request
from gateway.config import AnthropicOptions
from gateway.errors import (
    InvalidRequest,
)
from gateway.providers.anthropic.provider import AnthropicProvider
from gateway.providers.anthropic.request import translate_request
from gateway.providers.base import CallContext, Deployment, Media

FIXTURES = Path(__file__).parent.parent.parent / "fixtures" / "anthropic"
P = AnthropicProvider()
MODEL = "claude-sonnet-4-5-20250929"
CLIENT_MODEL = "claude"  # the deployment's model id: what answers name
REQUEST_ID = "chatcmpl-test"
CREATED = 1730000000

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def data_url(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64,{b64(raw)}"


def ctx(
    stream: bool = False,
    include_usage: bool = False,
    media: dict[str, Media] | None = None,
    response_format: str | None = None,
    **options: Any,
) -> CallContext:
    deployment = Deployment(
        model_id=CLIENT_MODEL,
        provider_name="anthropic",
        kind="anthropic",
        upstream_model=MODEL,
        api_key="sk-ant-upstream",
        options=AnthropicOptions(**{k: v for k, v in options.items() if k != "max_output_tokens"}),
        max_output_tokens=options.get("max_output_tokens"),
    )
    return CallContext(
        deployment, stream, include_usage, REQUEST_ID, CREATED, media or {}, response_format
    )


def user(content: Any = "hi") -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(cid: str, name: str = "get_weather", arguments: str = '{"city":"Paris"}') -> Any:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant_calls(*calls: Any, content: Any = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def tool(cid: str, content: Any = "sunny") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": cid, "content": content}


def fn_tool(name: str, parameters: Any = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, **extra}
    if parameters is not None:
        spec["parameters"] = parameters
    return {"type": "function", "function": spec}


WEATHER = fn_tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = fn_tool("get_time")


def translate(c: CallContext | None = None, **body: Any) -> dict[str, Any]:
    """The Anthropic body for an OpenAI body; it must pass the strict fake's checks."""
    body.setdefault("model", "claude")
    body.setdefault("messages", [user()])
    out = translate_request(body, c or ctx())
    check_request(out)
    return out


def refused(c: CallContext | None = None, **body: Any) -> InvalidRequest:
    body.setdefault("model", "claude")
    body.setdefault("messages", [user()])
    with pytest.raises(InvalidRequest) as info:
        translate_request(body, c or ctx())
    return info.value


def parse(name: str, c: CallContext | None = None) -> tuple[dict[str, Any], Any]:
    completion = P.parse_response((FIXTURES / name).read_bytes(), c or ctx())
    return orjson.loads(completion.body), completion.usage
