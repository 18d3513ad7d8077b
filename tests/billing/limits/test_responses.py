"""How the limiter words money and durations for clients (limits/responses.py)."""

from __future__ import annotations

import pytest

from gateway.billing.limits.responses import format_duration, format_micros


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (12, "12ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (1020, "1.02s"),
        (60_000, "1m0s"),
        (360_000, "6m0s"),
        (3_723_250, "1h2m3.25s"),
        (7_200_000, "2h0m0s"),
    ],
)
def test_durations_are_written_like_openai(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_money_is_rendered_in_dollars() -> None:
    assert format_micros(0) == "$0.00"
    assert format_micros(5_000_000) == "$5.00"
    assert format_micros(12_500) == "$0.0125"
    assert format_micros(1) == "$0.000001"
    assert format_micros(-2_500_000) == "-$2.50"
