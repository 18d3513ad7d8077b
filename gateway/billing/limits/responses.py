"""What the limiter says to a client: the 402 and 429 refusals, worded like OpenAI's
(money as dollars, durations in Go style), and the x-ratelimit-* header values.

Pure module: no I/O, no trio/httpx/quart imports.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.billing.limits.gcra import RateWindow, fits, rate_window, wait_ms
from gateway.errors import BillingError, RateLimited
from gateway.store.periods import period_end
from gateway.store.records import KeyLimits

__all__ = [
    "credit_error",
    "format_duration",
    "format_micros",
    "header_pairs",
    "rate_limited_error",
    "spend_limit_error",
]


def format_micros(micros: int) -> str:
    """Micro-dollars as dollars with at least 2 and at most 6 decimals: `$0.0125`."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{digits}"


def spend_limit_error(
    limits: KeyLimits, spent: int, reserved: int, worst: int, now: float
) -> BillingError:
    """402 for a request that would take the key past its spend limit for the period."""
    period = limits.spend_period or "day"
    resets = datetime.fromtimestamp(period_end(period, now), tz=UTC).strftime("%Y-%m-%d %H:%M")
    return BillingError(
        f"Spend limit for this {period} reached: limit "
        f"{format_micros(limits.spend_limit_micros or 0)}, spent {format_micros(spent)}, "
        f"{format_micros(reserved)} reserved by requests in flight, and this request may "
        f"cost up to {format_micros(worst)}. The limit resets at {resets} UTC.",
        code="spend_limit_exceeded",
    )


def credit_error(credit: int, reserved: int, worst: int) -> BillingError:
    """402 for a prepaid key whose credit cannot cover the request's worst case."""
    return BillingError(
        f"Insufficient credit: balance {format_micros(credit)}, "
        f"{format_micros(reserved)} reserved by requests in flight, and this request may "
        f"cost up to {format_micros(worst)}. Top up the key's credit.",
        code="insufficient_quota",
    )


def rate_limited_error(
    limits: KeyLimits,
    est_tokens: int,
    rq_level: int | None,
    tk_level: int | None,
) -> RateLimited:
    """429 naming the limit(s) hit, with Retry-After and x-ratelimit-* headers.

    `rq_level`/`tk_level` are the buckets' current backlogs (None where unlimited).
    """
    hit: list[str] = []
    names: list[str] = []
    retry_ms = 0
    windows: list[tuple[str, RateWindow]] = []
    if limits.rpm is not None and rq_level is not None:
        windows.append(("requests", rate_window(limits.rpm, rq_level)))
        if not fits(rq_level, 1, limits.rpm):
            hit.append(f"requests per minute (RPM): limit {limits.rpm}")
            names.append("rpm")
            retry_ms = max(retry_ms, wait_ms(rq_level, 1, limits.rpm))
    if limits.tpm is not None and tk_level is not None:
        window = rate_window(limits.tpm, tk_level)
        windows.append(("tokens", window))
        if not fits(tk_level, est_tokens, limits.tpm):
            hit.append(
                f"tokens per minute (TPM): limit {limits.tpm}, remaining {window.remaining}, "
                f"requested {est_tokens}"
            )
            names.append("tpm")
            retry_ms = max(retry_ms, wait_ms(tk_level, est_tokens, limits.tpm))
    headers = {name: value for name, value in header_pairs(windows)}
    return RateLimited(  # retry-after in whole seconds, retry-after-ms to the millisecond
        f"Rate limit reached for {' and '.join(hit)}. Try again in {format_duration(retry_ms)}.",
        retry_after_s=max(retry_ms, 1) / 1000,
        headers=headers,
        limits=tuple(names),
    )


def format_duration(ms: int) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it (Go style).

    `0s`, `12ms`, `1s`, `1.5s`, `6m0s`, `1h2m3.25s`.
    """
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    sec = f"{seconds}.{millis:03d}".rstrip("0") if millis else str(seconds)
    sec += "s"
    if hours:
        return f"{hours}h{minutes}m{sec}"
    if minutes:
        return f"{minutes}m{sec}"
    return sec


def header_pairs(windows: list[tuple[str, RateWindow]]) -> list[tuple[str, str]]:
    """The x-ratelimit-{limit,remaining,reset}-<dimension> headers of (dimension, window)s."""
    out: list[tuple[str, str]] = []
    for dim, w in windows:
        out.append((f"x-ratelimit-limit-{dim}", str(w.limit)))
        out.append((f"x-ratelimit-remaining-{dim}", str(w.remaining)))
        out.append((f"x-ratelimit-reset-{dim}", format_duration(w.reset_ms)))
    return out
