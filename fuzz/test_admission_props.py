"""Admission of any valid request on any limited key: an answer, never a crash.

For every body the validator admits (fuzz/test_validate_props.py's `valid_requests`,
with output caps and `n` pushed to their largest allowed values), on a key with any
mix of RPM, TPM, spend limit and prepaid credit, on a deployment with any price and
output cap, `accounting.admit` reaches the limiter, in process and on a real Redis,
and ends in an admission or a client refusal (400, 402, 429): never another
exception, so never a 500 (docs/reliability.md R13; issue: `max_tokens` of 1e15 made
`check_request` raise ValueError).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validate_props import valid_requests

from gateway.auth.principal import Principal
from gateway.billing.accounting import admit
from gateway.billing.limits.core import LimitBackend
from gateway.billing.limits.memory import MemoryLimitBackend
from gateway.billing.limits.redis import open_redis_backend
from gateway.config import Price
from gateway.errors import GatewayError
from gateway.openai.validate import MAX_OUTPUT_TOKENS, validate_chat_request
from gateway.providers.base import Deployment
from gateway.store.records import MAX_LIMIT, MAX_MICROS, KeyLimits
from tests.redis_server import RedisServer, running_redis

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class NoLedger:
    """The ledger's `record`, doing nothing: this property is about the limiter."""

    async def record(self, row: object) -> None:
        return None


big_ints = st.sampled_from([1, 2, 4096, 10**6, 2**31 - 2, MAX_OUTPUT_TOKENS])


@st.composite
def heavy_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body, often with the largest output cap and `n` the validator allows."""
    body = draw(valid_requests())
    for field in ("max_tokens", "max_completion_tokens"):
        if draw(st.booleans()):
            body[field] = draw(big_ints)
    if draw(st.booleans()):
        body["n"] = draw(st.sampled_from([1, 2, 127, 128]))
    return body


limits_st = st.builds(
    KeyLimits,
    rpm=st.none() | st.integers(1, MAX_LIMIT),
    tpm=st.none() | st.integers(1, MAX_LIMIT),
    spend_limit_micros=st.none() | st.integers(0, MAX_MICROS),
    spend_period=st.just("day"),
    prepaid=st.booleans(),
)
prices = st.builds(
    Price,
    input_per_mtok=st.sampled_from([0.0, 0.15, 10.0, 1e6]),
    output_per_mtok=st.sampled_from([0.0, 0.6, 100.0, 1e6]),
)
deployments = st.builds(
    lambda price, cap: Deployment("m", "p", "mock", "gpt-4o", max_output_tokens=cap, price=price),
    prices,
    st.none() | st.sampled_from([1, 4096, MAX_OUTPUT_TOKENS]),
)


async def admit_once(
    limiter: LimitBackend, body: dict[str, Any], limits: KeyLimits, dep: Deployment
) -> None:
    """Admit `body` once; a refusal must be the client's (4xx), anything else fails."""
    try:
        await admit(
            ledger=NoLedger(),  # type: ignore[arg-type]
            limiter=limiter,
            default_output_tokens=4096,
            principal=Principal(name="k", key_id="k", limits=limits),
            dep=dep,
            body=body,
            request_id="chatcmpl-prop",
        )
    except GatewayError as e:
        assert 400 <= e.http_status < 500, e


@PROPS
@given(body=heavy_requests(), limits=limits_st, dep=deployments)
def test_any_valid_body_reaches_the_in_process_limiter_without_an_exception(
    body: dict[str, Any], limits: KeyLimits, dep: Deployment
) -> None:
    validate_chat_request(body)
    trio.run(admit_once, MemoryLimitBackend(), body, limits, dep)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@settings(PROPS, max_examples=60)
@given(body=heavy_requests(), limits=limits_st, dep=deployments)
def test_any_valid_body_reaches_the_redis_limiter_without_an_exception(
    redis_server: RedisServer, body: dict[str, Any], limits: KeyLimits, dep: Deployment
) -> None:
    validate_chat_request(body)

    async def run() -> None:
        prefix = f"p{time.monotonic_ns()}:"
        async with open_redis_backend(redis_server.url, prefix=prefix, timeout_s=5) as limiter:
            await admit_once(limiter, body, limits, dep)
            assert limiter.stats.store_errors == 0

    trio.run(run)
