"""The one error tree of the gateway, and the only place an error becomes a wire body.

Every failure the client can see is a `GatewayError` subclass. Each class fixes the
HTTP status and the OpenAI `error.type`; instances carry the message, the `param`
(the field path for validation errors), an optional `code`, and extra response
headers (`Retry-After`). Foreign exceptions (httpx, upstream bodies) are mapped to
this tree in one place per source: `relay.py` for transport failures and each
provider's `map_error` for upstream error bodies.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson


def retry_hint(headers: Mapping[str, str] | None, default_s: float | None) -> dict[str, str]:
    """`headers` with `retry-after` (whole seconds, at least 1) and `retry-after-ms` side
    by side, as OpenAI sends them (its SDKs read the ms first): each filled in from the
    other, or both from `default_s` when neither is there (None: then none). An HTTP-date
    `retry-after` is kept as it is, alone."""
    out = dict(headers or {})
    seconds = out.get("retry-after")
    millis = out.get("retry-after-ms")
    try:
        if millis is not None:
            wait_s = float(millis) / 1000
        elif seconds is not None:
            wait_s = float(seconds)
        elif default_s is not None:
            wait_s = default_s
        else:
            return out
    except ValueError:  # an HTTP-date, or nonsense
        return out
    if not math.isfinite(wait_s) or wait_s < 0:
        return out
    out.setdefault("retry-after", str(max(1, math.ceil(wait_s))))
    out.setdefault("retry-after-ms", str(max(1, math.ceil(wait_s * 1000))))
    return out


class GatewayError(Exception):
    """Base of every client-visible failure; renders as OpenAI's error object."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_server_error"
    default_code: ClassVar[str | None] = None
    # The upstream's HTTP status when the error is its answer (or the status its
    # in-stream error stands for); set by the relay, read by the retry rules.
    upstream_status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = headers or {}
        # A few classes (upstream 4xx passthrough) take their status/type per instance.
        self.http_status = status if status is not None else self.status
        self.type = error_type if error_type is not None else self.error_type

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error object: all four keys are always present."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        """JSON body for a non-streamed error response."""
        return orjson.dumps(self.to_dict())

    def sse_event(self) -> bytes:
        """Final SSE event for a failure after the stream has started (no [DONE] follows)."""
        return b"data: " + orjson.dumps(self.to_dict()) + b"\n\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.http_status}, {self.message!r}, param={self.param!r})"


class InvalidRequest(GatewayError):
    """400: the request body violates the schema; `param` names the field path."""

    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    """401: missing, malformed or unknown bearer key."""

    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class BillingError(GatewayError):
    """402: out of credit or over a spend limit (not retried by SDKs, unlike 429)."""

    status = 402
    error_type = "billing_error"


class PermissionDenied(GatewayError):
    """403: the key lacks the scope for this model or endpoint."""

    status = 403
    error_type = "permission_error"


class NotFound(GatewayError):
    """404: unknown route or object."""

    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    """404: the model id routes nowhere."""

    default_code = "model_not_found"


class MethodNotAllowed(GatewayError):
    """405: known route, wrong method."""

    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeout(GatewayError):
    """408: the client did not send its request body in time (slowloris guard)."""

    status = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class PayloadTooLarge(GatewayError):
    """413: the request body exceeds the configured maximum."""

    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    """429: RPM/TPM exceeded (ours) or the upstream's own 429; always has Retry-After
    and retry-after-ms (`retry_after_s`, unless the upstream's headers give them)."""

    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float = 1.0,
        limits: tuple[str, ...] = (),
        **kw: Any,
    ) -> None:
        headers = retry_hint(kw.pop("headers", None), retry_after_s)
        super().__init__(message, headers=headers, **kw)
        self.limits = limits  # the key's limits hit ("rpm", "tpm"); () for an upstream's 429


class InternalError(GatewayError):
    """500: a bug of ours. The message never carries internals; safe to retry."""

    status = 500
    error_type = "internal_server_error"


class GatewayUnavailable(GatewayError):
    """503: the gateway itself cannot take the request now, not the upstream: it is
    overloaded, shutting down, or a store it needs is down (`code` says which). Always
    has Retry-After and retry-after-ms; safe to retry, here or on another instance."""

    status = 503
    error_type = "gateway_unavailable_error"

    def __init__(self, message: str, *, retry_after_s: float = 1, **kw: Any) -> None:
        headers = retry_hint(kw.pop("headers", None), retry_after_s)
        super().__init__(message, headers=headers, **kw)


class UpstreamError(GatewayError):
    """502: the upstream failed, answered garbage or refused the connection."""

    status = 502
    error_type = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """503: the upstream said it is overloaded or unavailable. Its retry hint, if it gave
    one, travels as both Retry-After and retry-after-ms; none is invented."""

    status = 503

    def __init__(self, message: str, **kw: Any) -> None:
        headers = retry_hint(kw.pop("headers", None), None)
        super().__init__(message, headers=headers, **kw)


class UpstreamConnectionError(UpstreamError):
    """502: the connection to the upstream failed. `sent` says whether the whole request
    had gone out first: if not, the upstream cannot have started on it; if so, it may
    have generated an answer nobody will see (docs/reliability.md R1)."""

    def __init__(self, message: str, *, sent: bool, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.sent = sent


class UpstreamTimeout(UpstreamError):
    """504: the upstream did not answer within our deadline, or said it timed out
    itself (its own 504): one code for both, `upstream_timeout`."""

    status = 504
    default_code = "upstream_timeout"


class UpstreamConnectTimeout(UpstreamTimeout):
    """504: no connection to the upstream within `connect_timeout_s`: nothing was sent."""


class UpstreamFirstByteTimeout(UpstreamTimeout):
    """504: a stream's upstream sent nothing within `first_byte_timeout_s`."""


class UpstreamRejected(GatewayError):
    """An upstream 4xx passed through with its own status, type and message."""

    status = 400
    error_type = "invalid_request_error"
