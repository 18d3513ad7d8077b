"""Calendar periods that spend limits count in: UTC days and months.

The ledger's queries and the limiter's budgets use these same bounds, so that they
agree on every boundary. Pure module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

SpendPeriod = Literal["day", "month"]
PERIODS: tuple[SpendPeriod, ...] = get_args(SpendPeriod)

_DAY_S = 86_400


def period_start(period: SpendPeriod | None, now: float) -> int:
    """Unix seconds at which the UTC day or month containing `now` began (0 for None)."""
    if period is None:
        return 0
    if period == "day":
        return int(now // _DAY_S) * _DAY_S
    t = datetime.fromtimestamp(now, tz=UTC)
    return int(datetime(t.year, t.month, 1, tzinfo=UTC).timestamp())


def period_end(period: SpendPeriod, now: float) -> int:
    """Unix seconds at which the UTC day or month containing `now` ends."""
    if period == "day":
        return period_start("day", now) + _DAY_S
    t = datetime.fromtimestamp(now, tz=UTC)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def period_bounds(period: SpendPeriod, now: float) -> tuple[float, float]:
    """[start, end) in unix seconds of the calendar UTC day or month containing `now`."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    return float(period_start(period, now)), float(period_end(period, now))
