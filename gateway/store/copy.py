"""`gateway db copy`: move a single-machine install (SQLite) to PostgreSQL.

Every key (with its version and secret hash), top-up (with its id), usage row,
refusal count and stored response (Responses API, with its owner) is copied in ONE
PostgreSQL transaction, after the target's migrations: a copy that fails leaves the
target as it was. Rows already there are kept (`ON CONFLICT DO NOTHING`), so running
the copy again copies nothing twice. Stop the gateway (or let it drain) first: rows
written to the SQLite file during the copy may be missed, and its journal must have
been drained into the file (a stopped gateway drains it; a killed one replays it at
its next start).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import psycopg

from gateway.store.postgres import PostgresStore, where_of
from gateway.store.records import StoreError
from gateway.store.responses import SqliteResponseTable
from gateway.store.sqlite import SqliteStore

__all__ = ["TABLES", "copy_sqlite_to_postgres"]

# (table, columns, conflict target): in an order that satisfies the foreign keys.
TABLES: Final = (
    (
        "keys",
        "key_id, name, secret_hash, models, rpm, tpm, spend_limit_micros, spend_period, "
        "prepaid, expires_at, revoked_at, created_at, version",
        "(key_id)",
    ),
    ("topups", "topup_id, key_id, micros, note, created_at", "(topup_id)"),
    (
        "usage",
        "request_id, key_id, model, provider, prompt_tokens, completion_tokens, cached_tokens,"
        " cost_micros, status, latency_ms, created_at, deployment, attempts, x_request_id,"
        " key_name",
        "(request_id)",
    ),
    (
        "refusals",
        "minute, key_id, key_name, model, provider, status, code, count",
        "(minute, key_id, key_name, model, provider, status, code)",
    ),
    # Stored responses keep their owner (a key id copied above, or a config key's name).
    ("responses", "response_id, owner, created_at, response, input_items", "(response_id)"),
)


@dataclass(slots=True)
class CopyResult:
    """How many rows of each table were read, and how many of them were new."""

    read: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)


def copy_sqlite_to_postgres(sqlite_path: str, url: str) -> CopyResult:
    """Copy everything from the SQLite file to the PostgreSQL database (migrated first)."""
    PostgresStore.migrate_url(url)
    # A file whose gateway never stored a response has no table: make the empty one
    # (and refuse one newer than this gateway knows).
    SqliteResponseTable(sqlite_path).close()
    source = SqliteStore(sqlite_path)
    result = CopyResult()
    try:
        with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
            for table, columns, key in TABLES:
                marks = ", ".join(["%s"] * len(columns.split(",")))
                sql = (
                    f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT {key} DO NOTHING"
                )
                read = written = 0
                for rows in source.dump(table, columns):
                    if table == "keys":  # SQLite's 0/1 is PostgreSQL's boolean
                        rows = [(*r[:8], bool(r[8]), *r[9:]) for r in rows]
                    cur.executemany(sql, rows)
                    read += len(rows)
                    written += max(cur.rowcount, 0)
                result.read[table] = read
                result.written[table] = written
    except psycopg.Error as e:
        raise StoreError(f"{where_of(url)}: {e}") from e
    finally:
        source.close()
    return result
