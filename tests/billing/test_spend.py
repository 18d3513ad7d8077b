"""Prices and costs in integer micro-dollars."""

from __future__ import annotations

import pytest

from gateway.billing.spend import Usage, cost_micros, usage_from_openai, usd, worst_case_micros
from gateway.config import FREE, Price, parse_config
from gateway.upstream.router import Router

GPT4O_MINI = Price(input_per_mtok=0.15, cached_input_per_mtok=0.075, output_per_mtok=0.60)


def test_cost_is_tokens_times_price_per_million_in_micros() -> None:
    # 1,000 prompt tokens at $0.15/M = $0.00015 = 150 micros; 500 output at $0.60/M = 300.
    assert cost_micros(GPT4O_MINI, Usage(1000, 500)) == 450


def test_cached_tokens_cost_the_cached_price() -> None:
    assert cost_micros(GPT4O_MINI, Usage(1000, 0, cached_tokens=400)) == 600 * 0.15 + 400 * 0.075
    no_cached_price = Price(input_per_mtok=1.0, output_per_mtok=2.0)
    assert cost_micros(no_cached_price, Usage(10, 0, cached_tokens=10)) == 10


def test_fractions_round_up_never_down() -> None:
    assert cost_micros(Price(input_per_mtok=0.15), Usage(1, 0)) == 1
    assert cost_micros(FREE, Usage(10**9, 10**9)) == 0


def test_worst_case_covers_every_actual_outcome() -> None:
    worst = worst_case_micros(GPT4O_MINI, prompt_tokens=1200, max_output_tokens=800)
    for out in (0, 1, 400, 800):
        assert cost_micros(GPT4O_MINI, Usage(1200, out, cached_tokens=300)) <= worst


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, None),
        ("x", None),
        ({}, Usage(0, 0, 0)),
        (
            {
                "prompt_tokens": 12,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 5},
            },
            Usage(12, 3, 5),
        ),
        ({"prompt_tokens": -4, "completion_tokens": True}, Usage(0, 0, 0)),
        ({"prompt_tokens": 2, "prompt_tokens_details": {"cached_tokens": 9}}, Usage(2, 0, 2)),
    ],
)
def test_usage_from_openai_tolerates_odd_shapes(usage: object, expected: Usage | None) -> None:
    assert usage_from_openai(usage) == expected  # type: ignore[arg-type]


def test_usd_for_people() -> None:
    assert usd(123) == "$0.000123" and usd(2_500_000) == "$2.500000"


def test_prices_resolve_model_over_provider() -> None:
    c = parse_config(
        {
            "providers": {
                "p": {"kind": "openai", "price_input_per_mtok": 1, "price_output_per_mtok": 2}
            },
            "models": {"m": {"provider": "p", "price_output_per_mtok": 4}},
        },
        env={},
        source="t",
    )
    router = Router(c)
    assert router.resolve("m").price == Price(1.0, None, 4.0)
    assert router.resolve("p/other").price == Price(1.0, None, 2.0)


def test_costs_are_exact_decimals_rounded_once() -> None:
    """50 tokens at $1.10/M is 55 micros; float arithmetic made it 56."""
    assert cost_micros(Price(input_per_mtok=1.10), Usage(50, 0)) == 55
    assert worst_case_micros(Price(input_per_mtok=1.10), 50, 0) == 55
    # Rounded once over the sum, not per component: 0.5 + 0.5 = 1, not 2.
    assert cost_micros(Price(input_per_mtok=0.5, output_per_mtok=0.5), Usage(1, 1)) == 1
