"""Stored responses (`store: true` on `POST /v1/responses`): their own table, behind
a small interface.

A stored response is the response object the client got and the whole input its
model saw (the history it continued and its own input), owned by the key that made
it: only that key can read it, continue from it or delete it (another key gets the
same 404 as for an id that never existed). Reads ignore rows older than the
retention period, and `prune` deletes them.

`ResponseStore` is what the routes need; `SqliteResponses` implements it in the
server's SQLite file (WAL), on a connection of its own, through `ThreadedCalls`
(cancellable, one statement at a time). A PostgreSQL store implements the same five
methods. The table is created by its own versioned code (`responses_schema`, one
row): it does not share the ledger's `user_version`, so the two evolve apart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from gateway.store.records import StoreError
from gateway.store.threaded import ThreadedCalls

SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT_MS: Final = 5000

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS responses (
        response_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL,
        response BLOB NOT NULL,
        input_items BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at)",
    "CREATE TABLE IF NOT EXISTS responses_schema (version INTEGER NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response: JSON bytes as they were sent, and who owns them."""

    response_id: str
    owner: str  # the key that made it (a managed key's id, or a config key's name)
    created_at: float  # unix seconds
    response: bytes  # the response object, JSON
    input_items: bytes  # the input its model saw, history first: a JSON array


class ResponseStore(Protocol):
    """Where stored responses live (SQLite here; PostgreSQL implements the same)."""

    async def put(self, record: StoredResponse) -> None:
        """Store a response (a second put of one id replaces it)."""
        ...

    async def get(self, response_id: str, owner: str, since: float) -> StoredResponse | None:
        """The response if `owner` made it at or after `since` (unix seconds), else None."""
        ...

    async def delete(self, response_id: str, owner: str) -> bool:
        """Delete it if `owner` made it; whether there was one to delete."""
        ...

    async def prune(self, before: float) -> int:
        """Delete every response made before `before`; how many went."""
        ...

    async def aclose(self) -> None: ...


class SqliteResponseTable:
    """The `responses` table on a connection of its own. Synchronous."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,  # ThreadedCalls hands it between threads, serially
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._create()

    def _create(self) -> None:
        """Create the table, or check that a file's is one this gateway knows."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                c.execute(statement)
            row = c.execute("SELECT MAX(version) FROM responses_schema").fetchone()
            version = row[0]
            if version is None:
                c.execute("INSERT INTO responses_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: stored responses have schema version {version}, newer "
                    f"than this gateway's ({SCHEMA_VERSION}); upgrade the gateway"
                )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.rollback()
            raise

    def interrupt(self) -> None:
        self._conn.interrupt()

    def close(self) -> None:
        self._conn.close()

    def put(self, r: StoredResponse) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO responses "
            "(response_id, owner, created_at, response, input_items) VALUES (?, ?, ?, ?, ?)",
            (r.response_id, r.owner, r.created_at, r.response, r.input_items),
        )

    def get(self, response_id: str, owner: str, since: float) -> StoredResponse | None:
        row = self._conn.execute(
            "SELECT response_id, owner, created_at, response, input_items FROM responses "
            "WHERE response_id = ? AND owner = ? AND created_at >= ?",
            (response_id, owner, since),
        ).fetchone()
        if row is None:
            return None
        return StoredResponse(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]))

    def delete(self, response_id: str, owner: str) -> bool:
        cur = self._conn.execute(
            "DELETE FROM responses WHERE response_id = ? AND owner = ?", (response_id, owner)
        )
        return cur.rowcount > 0

    def prune(self, before: float) -> int:
        cur = self._conn.execute("DELETE FROM responses WHERE created_at < ?", (before,))
        return cur.rowcount


class SqliteResponses:
    """`ResponseStore` in the server's SQLite file, for trio code."""

    def __init__(self, table: SqliteResponseTable) -> None:
        self.table = table
        self._calls = ThreadedCalls(table)

    async def put(self, record: StoredResponse) -> None:
        await self._calls.run(self.table.put, record)

    async def get(self, response_id: str, owner: str, since: float) -> StoredResponse | None:
        return await self._calls.run(self.table.get, response_id, owner, since)

    async def delete(self, response_id: str, owner: str) -> bool:
        return await self._calls.run(self.table.delete, response_id, owner)

    async def prune(self, before: float) -> int:
        return await self._calls.run(self.table.prune, before)

    async def aclose(self) -> None:
        await self._calls.aclose()
