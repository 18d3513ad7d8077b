"""What a failed attempt means: may it be retried, does it count against the deployment,
and how long to wait (docs/reliability.md R1, R2).

The rule: retry only what cannot have produced a billed answer the client will not see.

- `connect`: the connection failed before the request was fully sent (refused, reset
  while sending, TLS, connect timeout): the upstream never saw it. Retried when
  `retry_on` has "connect".
- `lost`: the connection broke after the request was sent and before anything went
  downstream. A stream's generation stops with its connection, so a stream is
  retried like `connect`; a non-streamed request may have been answered and billed
  upstream, so it is retried only when the model sets `retry_after_send`.
- `first_byte_timeout`: a stream sent nothing within `first_byte_timeout_s` (closing
  it stops the generation). Retried when `retry_on` has "first_byte_timeout".
- `status`: the upstream answered with an error status (or an error event before any
  content, standing for its status): retried when the status is in `retry_on`.
  Answers about the request itself (400, 401, 403, 404, 413, 422, a content filter's
  refusal) never are: `retry_on` cannot name them.
- `final`: everything else (a total deadline, a 2xx body that does not parse, a
  translation refusal): returned at once.

Nothing reaches this module once a byte went downstream: the relay ends such a stream
itself (R3).

Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from gateway.config import RoutingConfig
from gateway.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamConnectTimeout,
    UpstreamFirstByteTimeout,
)

Kind = Literal["connect", "lost", "first_byte_timeout", "status", "final"]
MAX_DOUBLINGS = 16  # backoff_base_ms * 2**16 is already longer than any deadline


def failure_kind(error: GatewayError) -> Kind:
    """Which of the cases above `error` (raised by the relay) is."""
    if isinstance(error, UpstreamConnectTimeout):
        return "connect"
    if isinstance(error, UpstreamConnectionError):
        return "lost" if error.sent else "connect"
    if isinstance(error, UpstreamFirstByteTimeout):
        return "first_byte_timeout"
    if error.upstream_status is not None:
        return "status"
    return "final"


def retryable(kind: Kind, error: GatewayError, *, stream: bool, policy: RoutingConfig) -> bool:
    """Whether a failure of `kind` may be tried again (here or elsewhere)."""
    if kind == "status":
        return error.upstream_status in policy.retry_on_statuses
    if kind == "connect":
        return policy.retry_on_connect
    if kind == "lost":
        return policy.retry_on_connect and (stream or policy.retry_after_send)
    if kind == "first_byte_timeout":
        return policy.retry_on_first_byte_timeout
    return False


def hurts_health(kind: Kind, error: GatewayError) -> bool:
    """Whether the failure says something is wrong with the deployment (not the request)."""
    if kind == "status":
        status = error.upstream_status or 0
        return status == 429 or status >= 500
    return kind != "final"


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The upstream's retry hint in seconds: `retry-after-ms`, else a numeric
    `retry-after` (an HTTP-date is not read: None)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0 and seconds == seconds and seconds != float("inf"):
            return seconds
    return None


def backoff_s(tries: int, base_ms: float, rand: float) -> float:
    """Full jitter: a uniform wait in [0, base * 2**(tries-1)), for the `tries`-th retry
    of one deployment (`rand` in [0, 1) from the caller)."""
    if tries <= 0 or base_ms <= 0:
        return 0.0
    return rand * base_ms / 1000.0 * 2.0 ** min(tries - 1, MAX_DOUBLINGS)
