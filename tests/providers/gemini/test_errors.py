"""Gemini errors: recorded error bodies in, the gateway's errors out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import (
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.gemini.schema import clean_schema
from tests.providers.gemini.helpers import (
    FIXTURES,
    P,
    ctx,
    events,
    translate,
)

# ================================================================ errors

ERRORS: list[tuple[str, int, type[GatewayError], int, str | None]] = [
    ("error_400.json", 400, UpstreamRejected, 400, "INVALID_ARGUMENT"),
    ("error_400_precondition.json", 400, UpstreamRejected, 400, "FAILED_PRECONDITION"),
    ("error_400_context.json", 400, UpstreamRejected, 400, "context_length_exceeded"),
    ("error_400_api_key_invalid.json", 400, UpstreamRejected, 401, "upstream_auth_failed"),
    ("error_403.json", 403, UpstreamRejected, 403, "upstream_auth_failed"),
    ("error_404.json", 404, UpstreamRejected, 404, "model_not_found"),
    ("error_429.json", 429, RateLimited, 429, "rate_limit_exceeded"),
    ("error_500.json", 500, UpstreamError, 502, "INTERNAL"),
    ("error_503.json", 503, UpstreamUnavailable, 503, "UNAVAILABLE"),
    ("error_504.json", 504, UpstreamTimeout, 504, "upstream_timeout"),
]


@pytest.mark.parametrize(("name", "status", "cls", "out_status", "code"), ERRORS)
def test_error_mapping(
    name: str, status: int, cls: type[GatewayError], out_status: int, code: str | None
) -> None:
    err = P.map_error(status, {}, (FIXTURES / name).read_bytes())
    assert type(err) is cls
    assert err.http_status == out_status
    assert err.code == code
    if code == "upstream_auth_failed":
        assert "API key" not in err.message  # the upstream's words about our key stay home


@pytest.mark.parametrize(
    ("status", "rpc", "message", "code"),
    [
        (400, "INVALID_ARGUMENT", "Invalid JSON payload.", "INVALID_ARGUMENT"),
        (404, "NOT_FOUND", "Requested entity was not found.", "model_not_found"),
        (413, None, "Request payload size exceeds the limit.", "request_too_large"),
        (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", "rate_limit_exceeded"),
        (500, "INTERNAL", "An internal error has occurred.", "INTERNAL"),
        (503, "UNAVAILABLE", "The model is overloaded.", "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED", "Deadline expired.", "upstream_timeout"),
    ],
)
def test_error_codes_follow_D8_in_answers_and_streams(
    status: int, rpc: str | None, message: str, code: str
) -> None:
    err: dict[str, Any] = {"code": status, "message": message}
    if rpc is not None:
        err["status"] = rpc
    body = orjson.dumps({"error": err})
    assert P.map_error(status, {}, body).code == code
    out, t = translate(b"data: " + body + b"\r\n\r\n", ctx(stream=True))
    assert t.error is not None and t.error.code == code
    assert events(out)[-1]["error"]["code"] == code


def test_429_retry_after_from_header_or_retry_info() -> None:
    body = (FIXTURES / "error_429.json").read_bytes()
    assert P.map_error(429, {}, body).headers["retry-after"] == "37"
    assert P.map_error(429, {"retry-after": "5"}, body).headers["retry-after"] == "5"


def test_error_bodies_that_are_arrays_or_not_json() -> None:
    array = b'[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]'
    err = P.map_error(400, {}, array)
    assert err.http_status == 400 and "bad" in err.message
    html = P.map_error(502, {}, b"<html>Bad Gateway</html>")
    assert html.http_status == 502 and "Bad Gateway" in html.message


def test_schema_cleaner_shares_unchanged_subschemas() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert clean_schema(schema) is schema
    with_ref = {"properties": {"a": {"$ref": "#/x", "title": "t"}, "b": {"type": "string"}}}
    cleaned = clean_schema(with_ref)
    assert cleaned["properties"]["a"] == {"$ref": "#/x"}
    assert cleaned["properties"]["b"] is with_ref["properties"]["b"]
