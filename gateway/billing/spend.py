"""Prices and costs: usage in, integer micro-dollars out.

Money is integer micro-dollars (1e-6 USD) everywhere, so balances never drift. A
price is USD per million tokens, which makes the arithmetic exact: N tokens at P USD
per million cost N * P micro-dollars (rounded up to a whole micro-dollar).

Two costs matter per request (docs/reliability.md R15): the worst case, reserved at
admission (every prompt token at the input price plus the whole output cap at the
output price), and the actual cost from the usage the upstream reported, settled
afterwards. Cached prompt tokens are billed at the cached-input price where one is
set (OpenAI's `prompt_tokens` includes them; `cached_tokens` is the subset). Prices
are taken as the decimals they were written as, summed exactly, and rounded up once.

Pure module: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.config import Price

_ZERO = Decimal(0)


def _exact(per_mtok: float) -> Decimal:
    """A price as the decimal it was written as (1.10, not 1.1000000000000000888)."""
    return Decimal(repr(per_mtok)) if per_mtok > 0 else _ZERO


def _ceil_micros(amount: Decimal) -> int:
    """Round a micro-dollar amount up, once, at the end."""
    return math.ceil(amount) if amount > 0 else 0


def worst_case_micros(price: Price, prompt_tokens: int, max_output_tokens: int) -> int:
    """What a request can cost at most: reserved before it is sent."""
    return _ceil_micros(
        max(prompt_tokens, 0) * _exact(price.input_per_mtok)
        + max(max_output_tokens, 0) * _exact(price.output_per_mtok)
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request, in OpenAI's terms (prompt includes cached)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_from_openai(usage: Mapping[str, Any] | None) -> Usage | None:
    """The counts of an OpenAI `usage` object, tolerating missing or odd fields."""
    if not isinstance(usage, Mapping):
        return None

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    prompt = count(usage.get("prompt_tokens"))
    return Usage(prompt, count(usage.get("completion_tokens")), min(cached, prompt))


def cost_micros(price: Price, usage: Usage) -> int:
    """The actual cost of a request from its reported usage."""
    cached_price = (
        price.cached_input_per_mtok
        if price.cached_input_per_mtok is not None
        else price.input_per_mtok
    )
    uncached = usage.prompt_tokens - usage.cached_tokens
    return _ceil_micros(
        uncached * _exact(price.input_per_mtok)
        + usage.cached_tokens * _exact(cached_price)
        + usage.completion_tokens * _exact(price.output_per_mtok)
    )


def usd(micros: int) -> str:
    """A micro-dollar amount for people: '$0.000123'."""
    return f"${micros / 1_000_000:,.6f}"
