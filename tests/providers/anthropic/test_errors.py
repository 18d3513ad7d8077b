"""Anthropic errors: recorded error bodies and events in, the gateway's errors out."""

from __future__ import annotations

import pytest

from gateway.errors import (
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.providers.anthropic.helpers import (
    FIXTURES,
    P,
)

# ---------------------------------------------------------------- errors

ERRORS: list[tuple[str, int, dict[str, str], type[GatewayError], int, str | None]] = [
    ("error_400.json", 400, {}, UpstreamRejected, 400, "invalid_request_error"),
    ("error_400_prompt_too_long.json", 400, {}, UpstreamRejected, 400, "context_length_exceeded"),
    ("error_401.json", 401, {}, UpstreamRejected, 401, "upstream_auth_failed"),
    ("error_402.json", 402, {}, UpstreamRejected, 402, "upstream_billing_error"),
    ("error_403.json", 403, {}, UpstreamRejected, 403, "upstream_auth_failed"),
    ("error_404.json", 404, {}, UpstreamRejected, 404, "model_not_found"),
    ("error_413.json", 413, {}, UpstreamRejected, 413, "request_too_large"),
    ("error_429.json", 429, {"retry-after": "17"}, RateLimited, 429, "rate_limit_exceeded"),
    ("error_500.json", 500, {}, UpstreamError, 502, "api_error"),
    ("error_504.json", 504, {}, UpstreamTimeout, 504, "upstream_timeout"),
    ("error_529.json", 529, {"retry-after": "3"}, UpstreamUnavailable, 503, "overloaded_error"),
]


@pytest.mark.parametrize(
    ("name", "status", "headers", "cls", "wire", "code"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_error_mapping(
    name: str,
    status: int,
    headers: dict[str, str],
    cls: type[GatewayError],
    wire: int,
    code: str | None,
) -> None:
    e = P.map_error(status, headers, (FIXTURES / name).read_bytes())
    assert type(e) is cls
    assert e.http_status == wire and e.code == code
    assert set(e.to_dict()["error"]) == {"message", "type", "param", "code"}


def test_429_keeps_retry_after_and_the_message() -> None:
    e = P.map_error(429, {"retry-after": "17"}, (FIXTURES / "error_429.json").read_bytes())
    assert e.headers["retry-after"] == "17"
    assert e.message.startswith("This request would exceed the rate limit")


def test_4xx_keep_the_upstream_message_and_auth_failures_do_not() -> None:
    e = P.map_error(400, {}, (FIXTURES / "error_400.json").read_bytes())
    assert e.message == "messages.1.content.0: text content blocks must be non-empty"
    assert e.type == "invalid_request_error"
    auth = P.map_error(401, {}, (FIXTURES / "error_401.json").read_bytes())
    assert "x-api-key" not in auth.message


@pytest.mark.parametrize("raw", [b"<html>502 Bad Gateway</html>", b"", b"[]"])
def test_error_bodies_that_are_not_anthropic_errors(raw: bytes) -> None:
    e = P.map_error(502, {}, raw)
    assert isinstance(e, UpstreamError) and e.http_status == 502
    assert e.message
