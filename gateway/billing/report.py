"""Usage reports as `gateway usage` and `GET /admin/usage` show them: the filters read
the same way, and the same rows as JSON, CSV or a table.

A report adds up the ledger (admitted requests: tokens, cost, errors) and the counts
of refused requests (401/402/403/429, gateway/billing/refusals.py) per key, model,
provider, UTC day or status. Config keys appear by name; a 401 under no key, and
with no model (it is refused before its body is read).

Pure module: no I/O.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.billing.spend import usd
from gateway.store.records import USAGE_GROUPS, UsageLine, UsageTotals

__all__ = ["USAGE_GROUPS", "Report", "parse_when"]

_RELATIVE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.ASCII)
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
NONE: Final = "-"  # a group not known (no key, no model), in a table or CSV


def parse_when(text: str, now: float) -> float:
    """A point in time, as unix seconds: a UTC date (`2026-12-01`), an ISO date and
    time (`2026-12-01T10:00`, UTC unless it says otherwise), a time ago (`30m`, `24h`,
    `7d`, `2w`) or unix seconds. ValueError saying what is accepted."""
    text = text.strip()
    if m := _RELATIVE.fullmatch(text):
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give a date (2026-12-01), a date and time "
            "(2026-12-01T10:00, UTC), a time ago (30m, 24h, 7d) or unix seconds"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: str) -> str:
    """A name as a spreadsheet cell that is never run as a formula: key and model names
    come from operators and clients, and `=HYPERLINK(...)` opened in a spreadsheet
    would run (CSV injection); a leading `'` makes the cell text."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _column(by: str) -> tuple[str, ...]:
    return ("key_id", "key_name") if by == "key" else (by,)


@dataclass(frozen=True, slots=True)
class Report:
    """One usage report: what it covers and its lines."""

    by: str
    since: float | None
    until: float | None
    key: str | None
    lines: list[UsageLine]

    def __post_init__(self) -> None:
        if self.by not in USAGE_GROUPS:
            raise ValueError(f"by: must be one of {', '.join(USAGE_GROUPS)}")

    @property
    def total(self) -> UsageTotals:
        total = UsageTotals()
        for line in self.lines:
            total.add(line.totals)
        return total

    def _groups(self, line: UsageLine) -> dict[str, str | None]:
        if self.by == "key":
            return {"key_id": line.group, "key_name": line.name}
        return {self.by: line.group}

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "usage",
            "by": self.by,
            "since": self.since,
            "until": self.until,
            "key": self.key,
            "data": [{**self._groups(line), **line.totals.to_dict()} for line in self.lines],
            "total": self.total.to_dict(),
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        measures = list(UsageTotals().to_dict())
        writer.writerow([*_column(self.by), *measures, "cost_usd"])
        for line in self.lines:
            groups = [NONE if v is None else _as_text(v) for v in self._groups(line).values()]
            totals = line.totals.to_dict()
            cost = f"{line.totals.cost_micros / 1_000_000:.6f}"
            writer.writerow([*groups, *(totals[m] for m in measures), cost])
        return out.getvalue()

    def to_text(self) -> str:
        """A table for people, with a total line, and what it covers."""
        heads = [c.upper().replace("_", " ") for c in _column(self.by)]
        rows = [[*heads, "REQUESTS", "REFUSED", "ERRORS", "PROMPT", "COMPLETION", "CACHED", "COST"]]
        for line in self.lines:
            rows.append([*self._cells(line), *_figures(line.totals)])
        blank = [""] * (len(heads) - 1)
        rows.append(["TOTAL", *blank, *_figures(self.total)])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        text = [
            "  ".join(
                cell.ljust(w) if i < len(heads) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        return "\n".join([self._covers(), *text])

    def _cells(self, line: UsageLine) -> list[str]:
        if self.by != "key":
            return [line.group or NONE]
        if line.group is not None:
            return [line.group, line.name or NONE]
        if line.name is not None:
            return ["(config key)", line.name]
        return ["(no key)", NONE]

    def _covers(self) -> str:
        def when(at: float | None, default: str) -> str:
            if at is None:
                return default
            return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")

        key = f", key {self.key}" if self.key else ""
        return (
            f"usage by {self.by}{key}, from {when(self.since, 'the start')} "
            f"to {when(self.until, 'now')}:"
        )


def _figures(t: UsageTotals) -> list[str]:
    return [
        str(t.requests),
        str(t.refused),
        str(t.errors),
        str(t.prompt_tokens),
        str(t.completion_tokens),
        str(t.cached_tokens),
        usd(t.cost_micros),
    ]
