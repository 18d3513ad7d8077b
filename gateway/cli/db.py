"""`gateway db migrate|copy`: the schema of the durable store, and moving to PostgreSQL.

`migrate` brings the database the config names (or `--db PATH|URL`) to the schema this
gateway knows. A SQLite file migrates itself when opened, so for SQLite this only
opens it; PostgreSQL is never migrated by a serving gateway (it refuses to start on
a schema other than its own), so run `gateway db migrate` before starting a new
version. Several machines may run it at once: a lock makes each migration apply once.

`copy --from sqlite:PATH --to postgresql://...` moves a single-machine install to
PostgreSQL (gateway/store/copy.py): keys, top-ups, the ledger, refusal counts and
stored responses.
"""

from __future__ import annotations

import argparse
import os
import sys

from gateway.cli.common import CONFIG_ENV, CliError, config_path, is_postgres, sqlite_path
from gateway.store.records import StoreError


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `db` and its subcommands to the `gateway` parser's subparsers."""
    db = subparsers.add_parser("db", help="the durable store's schema; move to PostgreSQL")
    sub = db.add_subparsers(dest="db_command", required=True)
    migrate = sub.add_parser("migrate", help="bring the database to this gateway's schema")
    migrate.add_argument("--db", metavar="PATH|URL", help="SQLite file or postgresql:// URL")
    migrate.add_argument(
        "--config", metavar="PATH", help=f"config to read [state] from (${CONFIG_ENV})"
    )
    copy = sub.add_parser(
        "copy", help="copy a SQLite install's keys, credit, ledger and stored responses"
    )
    copy.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH")
    copy.add_argument("--to", dest="target", required=True, metavar="postgresql://...")
    db.set_defaults(func=run)
    return db


def run(args: argparse.Namespace) -> int:
    """Run one `gateway db` subcommand; the exit status."""
    try:
        if args.db_command == "migrate":
            return _migrate(args)
        return _copy(args)
    except (CliError, StoreError) as e:
        print(f"gateway db {args.db_command}: {e}", file=sys.stderr)
        return e.code if isinstance(e, CliError) else 1


def _migrate(args: argparse.Namespace) -> int:
    target, origin = (args.db, "--db") if args.db else sqlite_path(config_path(args.config))
    if is_postgres(target):
        from gateway.store.pg_schema import SCHEMA_VERSION
        from gateway.store.postgres import PostgresStore, where_of

        applied = PostgresStore.migrate_url(target)
        done = ", ".join(map(str, applied)) if applied else "none: it was up to date"
        print(f"{where_of(target)} ({origin}): schema version {SCHEMA_VERSION}; applied {done}")
        return 0
    from gateway.store.sqlite import SCHEMA_VERSION as SQLITE_VERSION
    from gateway.store.sqlite import SqliteStore

    if not os.path.exists(target):
        raise CliError(f"no database at {os.path.abspath(target)} ({origin})")
    SqliteStore(target).close()  # opening a SQLite file migrates it
    print(f"{os.path.abspath(target)} ({origin}): schema version {SQLITE_VERSION}")
    return 0


def _copy(args: argparse.Namespace) -> int:
    source: str = args.source
    if not source.startswith("sqlite:"):
        raise CliError("--from: give the SQLite file as sqlite:PATH", 2)
    path = source.removeprefix("sqlite:").removeprefix("//")
    if not path or not os.path.isfile(path):
        raise CliError(f"--from: no SQLite database at {os.path.abspath(path or '.')}", 2)
    if not is_postgres(args.target):
        raise CliError("--to: give the PostgreSQL database as postgresql://...", 2)
    from gateway.store.copy import copy_sqlite_to_postgres
    from gateway.store.postgres import where_of

    result = copy_sqlite_to_postgres(path, args.target)
    for table, read in result.read.items():
        written = result.written[table]
        kept = f" ({read - written} already there)" if read != written else ""
        print(f"{table}: {written} rows copied{kept}")
    print(f"copied {os.path.abspath(path)} to {where_of(args.target)}")
    return 0
