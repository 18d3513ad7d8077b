"""Gemini error bodies and in-stream errors -> the gateway's error tree (docs/providers.md).

Pure module: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from gateway.errors import GatewayError
from gateway.providers.common import upstream_status_error

# HTTP status -> the OpenAI error code D8 gives it (401 and 403 are the gateway's own
# key refused: `upstream_status_error` keeps the status, code `upstream_auth_failed`).
_ERROR_CODES: Final = {
    404: "model_not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
}
# google.rpc status -> HTTP status, for in-stream errors that carry no usable code.
_RPC_STATUS: Final = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# --------------------------------------------------------------------------- errors


def _error_parts(obj: object) -> tuple[str, str | None, list[Any], int | None]:
    """message, rpc status, details and code of a Gemini error body (object or array)."""
    if isinstance(obj, list) and obj:
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, str):
        return err, None, [], None
    if not isinstance(err, dict):
        return "Gemini reported an error.", None, [], None
    message = err.get("message")
    status = err.get("status")
    details = err.get("details")
    code = err.get("code")
    return (
        message if isinstance(message, str) and message else "Gemini reported an error.",
        status if isinstance(status, str) else None,
        details if isinstance(details, list) else [],
        code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


def _retry_delay(details: list[Any]) -> str | None:
    """`retry-after` seconds from a google.rpc.RetryInfo detail ("37s", "1.5s")."""
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    seconds = float(delay[:-1])
                except ValueError:
                    return None
                if math.isfinite(seconds) and seconds >= 0:
                    return str(max(1, math.ceil(seconds)))
    return None


def gemini_error(
    obj: object, status: int | None, headers: Mapping[str, str] | None
) -> GatewayError:
    """Map a Gemini error body to the gateway's error tree (docs/wire-formats.md C7, D8)."""
    message, rpc, details, code = _error_parts(obj)
    if status is None:
        status = code if code is not None and 400 <= code < 600 else _RPC_STATUS.get(rpc or "", 502)
    if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details):
        status = 401  # Gemini says 400; it is the gateway's key being refused
    # D8: OpenAI's codes where it has one, else the google.rpc status (UNAVAILABLE, ...).
    error_code = _ERROR_CODES.get(status, rpc)
    if status == 400 and "exceeds the maximum number of tokens" in message:
        error_code = "context_length_exceeded"
    kept = dict(headers or {})
    if status == 429 and not any(k.lower() == "retry-after" for k in kept):
        delay = _retry_delay(details)
        if delay is not None:
            kept["retry-after"] = delay
    return upstream_status_error(status, "Gemini: " + message, code=error_code, headers=kept)
