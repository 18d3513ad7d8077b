"""Anthropic error bodies and `error` events -> the gateway's error tree.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.errors import GatewayError
from gateway.providers.base import JSON
from gateway.providers.common import upstream_status_error

# Anthropic error types (B6) -> the HTTP status they come with, for errors in a stream.
ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_from(status: int, obj: object, headers: Mapping[str, str] | None) -> GatewayError:
    """The gateway error for an Anthropic error body `{"type":"error","error":{...}}`."""
    err = obj.get("error") if isinstance(obj, dict) else None
    etype = err.get("type") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str) or not message:
        message = f"The upstream reported an error (HTTP {status})."
    code = etype if isinstance(etype, str) else None
    error_type = "invalid_request_error"
    if status == 404:
        code = "model_not_found"
    elif status == 413:
        code = "request_too_large"
    elif status == 402:
        error_type = "billing_error"
    elif status == 400 and "prompt is too long" in message:
        code = "context_length_exceeded"
    return upstream_status_error(status, message, error_type=error_type, code=code, headers=headers)


def stream_error(obj: JSON) -> GatewayError:
    """An `error` event after the 200: mapped as if it had come with its usual status."""
    err = obj.get("error")
    etype = err.get("type") if isinstance(err, dict) else None
    status = ERROR_STATUS.get(etype, 502) if isinstance(etype, str) else 502
    return error_from(status, obj, None)
