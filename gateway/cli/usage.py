"""`gateway usage`: requests, refusals, errors, tokens and cost, grouped and filtered.

    gateway usage [--by key|model|provider|day|status] [--since T] [--until T]
                  [--key ID|NAME] [--csv | --json] [--db PATH | --config FILE]

It reads the SQLite database the gateway writes (as `gateway keys` does), so it sees
what the gateway has committed: admitted requests within about 0.2 s, refused ones
within about a second. `GET /admin/usage` answers the same report from a running
gateway, flushed first. Times are UTC dates, ISO times, times ago (`7d`) or unix
seconds (gateway/billing/report.py).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time

import orjson

from gateway.billing.report import USAGE_GROUPS, Report, parse_when
from gateway.cli.common import CliError, config_path, open_database, sqlite_path
from gateway.store.records import StoreError

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    usage = subparsers.add_parser(
        "usage", help="requests, refusals, errors, tokens and cost, grouped and filtered"
    )
    usage.add_argument("--by", choices=USAGE_GROUPS, default="key", help="group by (default: key)")
    usage.add_argument("--since", metavar="T", help="from T: 2026-12-01, 2026-12-01T10:00, 7d...")
    usage.add_argument("--until", metavar="T", help="up to T (excluded); default: now")
    usage.add_argument(
        "--key", metavar="ID|NAME", help="one managed key's id, or a config key's name"
    )
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print CSV")
    output.add_argument("--json", action="store_true", help="print JSON")
    usage.add_argument(
        "--db", metavar="PATH|URL", help="SQLite file or postgresql:// URL (default: the config's)"
    )
    usage.add_argument("--config", metavar="PATH", help="config to read [state] sqlite_path from")
    usage.set_defaults(func=run)
    return usage


def run(args: argparse.Namespace) -> int:
    """Print the report; the exit status."""
    now = time.time()
    try:
        since = None if args.since is None else _when("--since", args.since, now)
        until = None if args.until is None else _when("--until", args.until, now)
        path, origin = (args.db, "--db") if args.db else sqlite_path(config_path(args.config))
        store = open_database(path, origin, create=False, command="gateway usage")
    except CliError as e:
        print(f"gateway usage: {e}", file=sys.stderr)
        return e.code
    try:
        lines = store.usage_report(args.by, since, until, args.key)
    except (StoreError, sqlite3.Error) as e:
        print(f"gateway usage: {path}: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    report = Report(args.by, since, until, args.key, lines)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.csv:
        sys.stdout.write(report.to_csv())
    else:
        print(report.to_text())
    return 0


def _when(flag: str, text: str, now: float) -> float:
    try:
        return parse_when(text, now)
    except ValueError as e:
        raise CliError(f"{flag}: {e}", 2) from None
