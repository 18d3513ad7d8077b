"""What a failed attempt means: the retry rules of docs/reliability.md R1, case by case."""

from __future__ import annotations

import pytest

from gateway.config import RoutingConfig
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamConnectionError,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamFirstByteTimeout,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.upstream.retry import (
    Kind,
    backoff_s,
    failure_kind,
    hurts_health,
    retry_after_s,
    retryable,
)

DEFAULT = RoutingConfig()


def answered(error: GatewayError, status: int) -> GatewayError:
    error.upstream_status = status
    return error


CASES: list[tuple[str, GatewayError, Kind, bool, bool]] = [
    # name, error, kind, retried (non-stream), retried (stream)
    ("refused", UpstreamConnectionError("x", sent=False), "connect", True, True),
    ("connect timeout", UpstreamConnectTimeout("x"), "connect", True, True),
    ("reset after send", UpstreamConnectionError("x", sent=True), "lost", False, True),
    ("first byte", UpstreamFirstByteTimeout("x"), "first_byte_timeout", True, True),
    ("total deadline", UpstreamTimeout("x"), "final", False, False),
    ("bad 200 body", UpstreamError("x"), "final", False, False),
    ("translation", InvalidRequest("x"), "final", False, False),
    ("429", answered(RateLimited("x"), 429), "status", True, True),
    ("500", answered(UpstreamError("x"), 500), "status", True, True),
    ("529", answered(UpstreamError("x"), 529), "status", True, True),
    ("501", answered(UpstreamError("x"), 501), "status", False, False),
]
NEVER = [400, 401, 403, 404, 413, 422]


@pytest.mark.parametrize(("name", "error", "kind", "plain", "streamed"), CASES)
def test_what_is_retried_by_default(
    name: str, error: GatewayError, kind: Kind, plain: bool, streamed: bool
) -> None:
    assert failure_kind(error) == kind
    assert retryable(kind, error, stream=False, policy=DEFAULT) is plain
    assert retryable(kind, error, stream=True, policy=DEFAULT) is streamed


@pytest.mark.parametrize("status", NEVER)
def test_answers_about_the_request_itself_are_never_retried(status: int) -> None:
    error = answered(UpstreamRejected("x", status=status), status)
    for stream in (False, True):
        assert not retryable("status", error, stream=stream, policy=DEFAULT)
    assert not hurts_health("status", error)


def test_a_model_may_opt_in_to_retrying_after_send() -> None:
    policy = RoutingConfig(retry_after_send=True)
    lost = UpstreamConnectionError("x", sent=True)
    assert retryable("lost", lost, stream=False, policy=policy)


def test_retry_on_decides_connect_and_first_byte_timeout() -> None:
    policy = RoutingConfig(retry_on_connect=False, retry_on_first_byte_timeout=False)
    assert not retryable("connect", UpstreamError("x"), stream=False, policy=policy)
    assert not retryable("lost", UpstreamError("x"), stream=True, policy=policy)
    assert not retryable("first_byte_timeout", UpstreamError("x"), stream=True, policy=policy)


def test_what_counts_against_a_deployment() -> None:
    assert hurts_health("connect", UpstreamError("x"))
    assert hurts_health("first_byte_timeout", UpstreamError("x"))
    assert hurts_health("status", answered(RateLimited("x"), 429))
    assert hurts_health("status", answered(UpstreamError("x"), 503))
    assert not hurts_health("final", UpstreamTimeout("x"))


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(headers) == seconds


def test_backoff_is_full_jitter_doubling() -> None:
    assert backoff_s(0, 100, 0.5) == 0
    assert backoff_s(1, 100, 0.5) == pytest.approx(0.05)
    assert backoff_s(3, 100, 0.999) == pytest.approx(0.3996)
    assert backoff_s(2, 100, 0.0) == 0
    assert backoff_s(1000, 100, 0.5) < 1e4  # bounded doublings
