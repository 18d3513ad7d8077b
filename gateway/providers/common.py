"""What every provider shares: how an upstream's HTTP error status maps to ours.

Each provider parses its vendor's error body (message, type, code, param) and hands
the pieces here, so that a 429 keeps its Retry-After, an upstream's refusal of the
gateway's own credentials never looks like the client's fault, and 5xx statuses map
the same way whatever the vendor.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import (
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

OVERLOADED = (503, 529)  # 529: Anthropic's "overloaded_error"


def upstream_status_error(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> GatewayError:
    """The gateway error for an upstream's non-2xx answer.

    - 429 keeps its status and the upstream's `retry-after` / `retry-after-ms` (so do
      the 5xx answers, which SDKs retry too); its code is `rate_limit_exceeded`.
    - 401/403 become 502 `upstream_auth_failed`: the client's key is fine, ours was
      refused, and the upstream message is not echoed (it can hold a masked key).
    - 402, and OpenAI's 429 `insufficient_quota`, become 502 `upstream_billing_error`:
      the gateway's upstream account is out of credit; passing them on would read as
      the client's own limit (and SDKs would retry the 429 in vain).
    - other 4xx keep status, message, type, code and param.
    - 503/529 become 503, 504 stays 504, every other 5xx becomes 502.
    """
    headers = headers or {}
    # The upstream's retry hint travels with every answer an SDK retries (429, 5xx).
    kept = {k: headers[k] for k in ("retry-after", "retry-after-ms") if k in headers}
    if (status == 429 and code == "insufficient_quota") or status == 402:
        # The gateway's own upstream account is out of credit (OpenAI says so with a
        # 429): not the client's limit, and retrying will not help.
        return UpstreamError(
            f"The upstream refused the request for billing reasons (HTTP {status}).",
            code="upstream_billing_error",
        )
    if status == 429:
        return RateLimited(message, headers=kept, code="rate_limit_exceeded")
    if status in (401, 403):
        return UpstreamError(
            f"The upstream refused the gateway's credentials (HTTP {status}).",
            code="upstream_auth_failed",
        )
    if 400 <= status < 500:
        return UpstreamRejected(
            message,
            status=status,
            error_type=error_type or "invalid_request_error",
            code=code,
            param=param,
        )
    if status in OVERLOADED:
        return UpstreamUnavailable(
            f"The upstream is unavailable (HTTP {status}): {message}",
            code=code or "upstream_overloaded",
            headers=kept,
        )
    if status == 504:
        return UpstreamTimeout(f"The upstream timed out (HTTP 504): {message}", headers=kept)
    return UpstreamError(f"The upstream failed (HTTP {status}): {message}", code=code, headers=kept)


def media_url_params(body: Mapping[str, object]) -> dict[str, str]:
    """Every http(s) URL in the messages' content parts -> the field path of its first use.

    The routes use it to name the field when fetching a URL a provider asked for fails.
    """
    found: dict[str, str] = {}
    messages = body.get("messages")
    if not isinstance(messages, list):
        return found
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            for key, field in (("image_url", "url"), ("file", "file_data")):
                holder = part.get(key)
                url = holder.get(field) if isinstance(holder, dict) else None
                if isinstance(url, str) and url.startswith(("http://", "https://")):
                    found.setdefault(url, f"messages[{i}].content[{j}].{key}.{field}")
    return found
