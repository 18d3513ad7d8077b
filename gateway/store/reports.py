"""Usage reports: the ledger's rows and the refusals' counts added up per key, model,
provider, UTC day or status, in one query (the SQLite store runs it in a read
transaction). Refusals count by their minute: a report's bounds cut at minutes.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from gateway.store.records import PENDING, UsageLine, UsageTotals

__all__ = ["usage_report"]

_IN_CHUNK: Final = 500  # bound the parameters of one `IN (...)` list

# Per grouping: (the group, the key's name) in `usage`, then in `refusals` (which store
# "" for what was not known, reported as None).
_REPORT_GROUPS: Final = {
    "key": (
        "key_id",
        "CASE WHEN key_id IS NULL THEN key_name END",
        "NULLIF(key_id, '')",
        "CASE WHEN key_id = '' THEN NULLIF(key_name, '') END",
    ),
    "model": ("model", "NULL", "NULLIF(model, '')", "NULL"),
    "provider": ("provider", "NULL", "NULLIF(provider, '')", "NULL"),
    "day": (
        "strftime('%Y-%m-%d', created_at, 'unixepoch')",
        "NULL",
        "strftime('%Y-%m-%d', minute, 'unixepoch')",
        "NULL",
    ),
    "status": ("status", "NULL", "code", "NULL"),
}
_NOT_ERRORS: Final = ("ok", PENDING, "client_gone")  # statuses that are not failures


def _filters(
    time_column: str, since: float | None, until: float | None, key: str | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of a usage report's rows, in `usage` or `refusals` (whose "" is
    `usage`'s NULL)."""
    where: list[str] = ["1"]
    args: list[Any] = []
    if since is not None:
        where.append(f"{time_column} >= ?")
        args.append(since)
    if until is not None:
        where.append(f"{time_column} < ?")
        args.append(until)
    if key is not None:  # a managed key's id, or a config key's name
        where.append("(key_id = ? OR (COALESCE(key_id, '') = '' AND key_name = ?))")
        args += [key, key]
    return " AND ".join(where), args


def usage_report(
    c: sqlite3.Connection,
    by: str,
    since: float | None = None,
    until: float | None = None,
    key: str | None = None,
) -> list[UsageLine]:
    """Requests, refusals, errors, tokens and cost over [since, until), grouped `by`
    one of USAGE_GROUPS, of every key or of `key` (a managed key's id or a config
    key's name); a managed key shows its current name. Biggest cost first (by day: in
    date order)."""
    usage_group, usage_name, refused_group, refused_name = _REPORT_GROUPS[by]
    usage_where, usage_args = _filters("created_at", since, until, key)
    refused_where, refused_args = _filters("minute", since, until, key)
    errors = ", ".join("?" * len(_NOT_ERRORS))
    sql = f"""
        SELECT g, n, SUM(requests), SUM(refused), SUM(errors), SUM(p), SUM(c), SUM(ca),
               SUM(cost)
        FROM (
            SELECT {usage_group} AS g, {usage_name} AS n, 1 AS requests, 0 AS refused,
                   status NOT IN ({errors}) AS errors, prompt_tokens AS p,
                   completion_tokens AS c, cached_tokens AS ca, cost_micros AS cost
            FROM usage WHERE {usage_where}
            UNION ALL
            SELECT {refused_group}, {refused_name}, count, count, 0, 0, 0, 0, 0
            FROM refusals WHERE {refused_where}
        )
        GROUP BY g, n
    """
    rows = c.execute(sql, [*_NOT_ERRORS, *usage_args, *refused_args]).fetchall()
    names: dict[str, str] = {}
    if by == "key":
        ids = [r[0] for r in rows if r[0] is not None]
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            names.update(
                c.execute(
                    f"SELECT key_id, name FROM keys WHERE key_id IN ({marks})", chunk
                ).fetchall()
            )
    lines = [
        UsageLine(group, names.get(group, name) if group else name, UsageTotals(*totals))
        for group, name, *totals in rows
    ]
    if by == "day":
        lines.sort(key=lambda line: line.group or "")
    else:
        lines.sort(key=lambda line: (-line.totals.cost_micros, -line.totals.requests))
    return lines
