"""What every provider shares: how an upstream's HTTP error status maps to ours.

Each provider parses its vendor's error body (message, type, code, param) and hands
the pieces here, so that a 429 keeps its Retry-After, an upstream's refusal of the
gateway's own credentials never looks like the client's fault, and 5xx statuses map
the same way whatever the vendor.

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from gateway.errors import (
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.base import JSON

OVERLOADED = (503, 529)  # 529: Anthropic's "overloaded_error"
# What reading an upstream JSON value of an unexpected shape can raise (orjson's
# JSONEncodeError is a TypeError): mapped to a 502, never a crash of the request.
SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError)


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

    - 4xx keep their status (the SDKs key their exception classes off it), message,
      type, code and param, except:
      - 401/403: the client's key was accepted; it is the gateway's own upstream key
        that was refused. The status is kept but the message says so, the code is
        `upstream_auth_failed`, and the upstream's message is not echoed: it can hold
        a masked copy of our key (docs/reliability.md R22).
      - 402 and OpenAI's 429 `insufficient_quota`: the gateway's upstream account is
        out of credit; the status is kept and the code says so
        (`upstream_billing_error`, `insufficient_quota`).
      - 429 keeps the upstream's `retry-after` / `retry-after-ms`; code
        `rate_limit_exceeded` (unless it was `insufficient_quota`).
    - 503/529 become 503, 504 stays 504, every other 5xx becomes 502; the retry hint
      travels with them too (SDKs retry 5xx).
    """
    headers = headers or {}
    kept = {k: headers[k] for k in ("retry-after", "retry-after-ms") if k in headers}
    if status in (401, 403):
        return UpstreamRejected(
            f"The upstream provider refused the gateway's own credentials (HTTP {status}); "
            "the client's key was accepted. The gateway's operator must fix the upstream key.",
            status=status,
            error_type="authentication_error" if status == 401 else "permission_error",
            code="upstream_auth_failed",
        )
    if status == 402:
        return UpstreamRejected(
            f"The upstream provider refused the request for billing reasons: {message}",
            status=402,
            error_type="billing_error",
            code="upstream_billing_error",
        )
    if status == 429:
        quota = code == "insufficient_quota" or error_type == "insufficient_quota"
        return RateLimited(
            message, headers=kept, code="insufficient_quota" if quota else "rate_limit_exceeded"
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


_HEIC_BRANDS = {b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif"}


def sniff_media_type(raw: bytes) -> str | None:
    """The type that `raw` starts like: PNG, JPEG, GIF, WebP, HEIC/HEIF or PDF.

    Clients mislabel media often (a PNG sent as image/jpeg) and vendors refuse a
    mismatch, so translators send the type the bytes show; the fetcher uses it for
    bodies served untyped. Only unambiguous signatures are recognised.
    """
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    if raw[4:8] == b"ftyp" and raw[8:12] in _HEIC_BRANDS:
        return _HEIC_BRANDS[raw[8:12]]
    if raw.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def load_json_object(body: bytes) -> JSON:
    """A non-streamed upstream body as a JSON object, or a 502 saying what it was."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError("The upstream returned a body that is not JSON.") from None
    if not isinstance(obj, dict):
        raise UpstreamError("The upstream returned JSON that is not an object.")
    return obj


COMPACT_UP_TO = 64 * 1024


def encode_body(payload: object) -> bytes:
    """The JSON bytes of an upstream request body, held in memory no larger than they are.

    orjson (3.12 on) returns bytes that keep its whole output buffer: a 150-byte body
    occupies ~4 KiB, and a request's body lives as long as its stream (measured with
    tracemalloc: 4,098 bytes each against 195 for a copy; 10,000 idle streams would hold
    40 MB of it). Bodies up to COMPACT_UP_TO are copied to an exact-size object; past
    that the slack is a small share and a copy would cost more than it saves.
    """
    data = orjson.dumps(payload)
    return bytes(memoryview(data)) if len(data) <= COMPACT_UP_TO else data
