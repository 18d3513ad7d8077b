"""Usage reports: the ledger's rows and the refusals' counts added up per key, model,
provider, UTC day or status, in one query (each store runs it in a read transaction).
Refusals count by their minute: a report's bounds cut at minutes. The SQL is the same
on SQLite and PostgreSQL but for a `Dialect`: the parameter mark and the UTC day.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gateway.store.records import PENDING, UsageLine, UsageTotals

__all__ = ["POSTGRES", "SQLITE", "Dialect", "usage_report"]


class _Rows(Protocol):
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What a report needs of a connection: sqlite3's and psycopg's both fit."""

    def execute(self, sql: Any, params: Any = ..., /) -> _Rows: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the two SQLs: the parameter mark, and the UTC day
    (YYYY-MM-DD) of a unix-seconds column."""

    mark: str
    day: Callable[[str], str]


SQLITE: Final = Dialect("?", lambda column: f"strftime('%Y-%m-%d', {column}, 'unixepoch')")
POSTGRES: Final = Dialect(
    "%s", lambda column: f"to_char(to_timestamp({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
)

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
    "day": ("{day_created}", "NULL", "{day_minute}", "NULL"),
    "status": ("status", "NULL", "code", "NULL"),
}
_NOT_ERRORS: Final = ("ok", PENDING, "client_gone")  # statuses that are not failures


def _filters(
    time_column: str, since: float | None, until: float | None, key: str | None, mark: str
) -> list[tuple[str, list[Any]]]:
    """The WHERE clauses of a usage report's rows, in `usage` or `refusals`: one, or
    for `key` two, each on an index. `key` is a managed key's id (`key_id`, the key's
    time index) or a config key's name (`key_name` where there is no id: NULL in
    `usage`, '' in `refusals`; their own indexes). An OR of the two would defeat both
    indexes: the report scans the table."""
    where: list[str] = []
    args: list[Any] = []
    if since is not None:
        where.append(f"{time_column} >= {mark}")
        args.append(since)
    if until is not None:
        where.append(f"{time_column} < {mark}")
        args.append(until)
    if key is None:
        return [(" AND ".join(where) or "1 = 1", args)]
    no_id = "key_id IS NULL" if time_column == "created_at" else "key_id = ''"
    return [
        (" AND ".join([f"key_id = {mark}", *where]), [key, *args]),
        (" AND ".join([no_id, f"key_name = {mark}", *where]), [key, *args]),
    ]


def _marks(mark: str, n: int) -> str:
    return ", ".join([mark] * n)


def usage_report(
    c: Connection,
    by: str,
    since: float | None = None,
    until: float | None = None,
    key: str | None = None,
    dialect: Dialect = SQLITE,
) -> list[UsageLine]:
    """Requests, refusals, errors, tokens and cost over [since, until), grouped `by`
    one of USAGE_GROUPS, of every key or of `key` (a managed key's id or a config
    key's name); a managed key shows its current name. Biggest cost first (by day: in
    date order)."""
    days = {"day_created": dialect.day("created_at"), "day_minute": dialect.day("minute")}
    usage_group, usage_name, refused_group, refused_name = (
        part.format(**days) for part in _REPORT_GROUPS[by]
    )
    mark = dialect.mark
    errors = _marks(mark, len(_NOT_ERRORS))
    parts: list[str] = []
    args: list[Any] = []
    for where, where_args in _filters("created_at", since, until, key, mark):
        parts.append(f"""
            SELECT {usage_group} AS g, {usage_name} AS n, 1 AS requests, 0 AS refused,
                   CASE WHEN status NOT IN ({errors}) THEN 1 ELSE 0 END AS errors,
                   prompt_tokens AS p,
                   completion_tokens AS c, cached_tokens AS ca, cost_micros AS cost
            FROM usage WHERE {where}""")
        args += [*_NOT_ERRORS, *where_args]
    for where, where_args in _filters("minute", since, until, key, mark):
        parts.append(f"""
            SELECT {refused_group}, {refused_name}, count, count, 0, 0, 0, 0, 0
            FROM refusals WHERE {where}""")
        args += where_args
    union = "\n            UNION ALL".join(parts)
    sql = f"""
        SELECT g, n, SUM(requests), SUM(refused), SUM(errors), SUM(p), SUM(c), SUM(ca),
               SUM(cost)
        FROM ({union}
        ) AS u
        GROUP BY g, n
    """
    rows = c.execute(sql, args).fetchall()
    names: dict[str, str] = {}
    if by == "key":
        ids = [r[0] for r in rows if r[0] is not None]
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = _marks(mark, len(chunk))
            names.update(
                c.execute(
                    f"SELECT key_id, name FROM keys WHERE key_id IN ({marks})", chunk
                ).fetchall()
            )
    lines = [  # int(): PostgreSQL's SUM of integers is a numeric
        UsageLine(group, names.get(group, name) if group else name, _totals(totals))
        for group, name, *totals in rows
    ]
    if by == "day":
        lines.sort(key=lambda line: line.group or "")
    else:
        lines.sort(key=lambda line: (-line.totals.cost_micros, -line.totals.requests))
    return lines


def _totals(values: Sequence[Any]) -> UsageTotals:
    return UsageTotals(*(int(v) for v in values))
