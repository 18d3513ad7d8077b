"""The PostgreSQL schema, as numbered migrations, and the check a gateway makes at start.

Each migration runs once, in its own transaction, in order; `schema_migrations` lists
the ones applied. `migrate` (the `gateway db migrate` command) applies what is missing
under an advisory lock, so several machines running it at once apply each migration
once. A gateway does not migrate at start: `check` refuses to serve a schema newer
than it knows (an older gateway left running in a rolling upgrade) and one older than
it needs (run `gateway db migrate` first), each with a message saying so.

Migrations only ever add: a new table, a new column with a default, a new index. A
table added later (stored responses, version 2) is a new entry at the end.
"""

from __future__ import annotations

import time
from typing import Final, LiteralString

import psycopg

from gateway.store.records import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "applied_version", "check", "migrate"]

_LOCK: Final = 7_236_112_014  # pg_advisory_xact_lock id: "gateway migrations"

# (version, what it does, SQL). Version 1 is the SQLite schema 3 (keys, top-ups,
# usage with deployment, attempts, x_request_id and key_name, refusals); version 2 the
# stored responses (the SQLite file's `responses` table, gateway/store/responses.py);
# version 3 the indexes a usage report of one key reads (gateway/store/reports.py).
MIGRATIONS: Final[tuple[tuple[int, str, LiteralString], ...]] = (
    (
        1,
        "keys, top-ups, the usage ledger, refusal counts",
        """
CREATE TABLE keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    models TEXT,
    rpm BIGINT,
    tpm BIGINT,
    spend_limit_micros BIGINT,
    spend_period TEXT CHECK (spend_period IN ('day', 'month')),
    prepaid BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX keys_version ON keys (version);
CREATE TABLE topups (
    topup_id BIGINT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys (key_id),
    micros BIGINT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX topups_key ON topups (key_id);
CREATE TABLE usage (
    request_id TEXT PRIMARY KEY,
    key_id TEXT,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    status TEXT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    deployment TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 1,
    x_request_id TEXT,
    key_name TEXT
);
CREATE INDEX usage_key_time ON usage (key_id, created_at);
CREATE INDEX usage_time ON usage (created_at);
CREATE INDEX usage_x_request_id ON usage (x_request_id);
CREATE TABLE refusals (
    minute BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (minute, key_id, key_name, model, provider, status, code)
);
""",
    ),
    (
        2,
        "stored responses of the Responses API",
        """
CREATE TABLE responses (
    response_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    response BYTEA NOT NULL,
    input_items BYTEA NOT NULL
);
CREATE INDEX responses_created ON responses (created_at);
""",
    ),
    (
        3,
        "indexes for one key's usage report (a config key's rows, refusals by key)",
        """
CREATE INDEX usage_config_key_time ON usage (key_name, created_at) WHERE key_id IS NULL;
CREATE INDEX refusals_key ON refusals (key_id, key_name, minute);
""",
    ),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]

_TRACK: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


def applied_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The highest migration applied (0: none, an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def migrate(conn: psycopg.Connection[tuple[object, ...]], where: str) -> list[int]:
    """Apply the missing migrations, each in its own transaction, holding the lock for
    the whole run (so one runner applies all that is missing and the others, waiting,
    find nothing left); returns the versions applied. StoreError for a schema newer
    than this gateway's. `conn` is in autocommit mode."""
    done: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
    try:
        for version, name, sql in MIGRATIONS:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                conn.execute(_TRACK)
                current = applied_version(conn)
                if current > SCHEMA_VERSION:
                    raise StoreError(_newer(where, current))
                if version <= current:
                    continue
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (version, name, time.time()),
                )
                done.append(version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    return done


def _newer(where: str, version: int) -> str:
    return (
        f"{where}: schema version {version} is newer than this gateway's ({SCHEMA_VERSION});"
        " upgrade the gateway"
    )


def check(conn: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """StoreError unless the schema is exactly the one this gateway knows."""
    version = applied_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(_newer(where, version))
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{where}: schema version {version}, this gateway needs {SCHEMA_VERSION}:"
            " run `gateway db migrate` first"
        )
