"""Stored responses (`store: true` on `POST /v1/responses`) in PostgreSQL, beside the
keys and the ledger, so that every gateway machine on one database knows every
stored response: a conversation started on one can be continued on any other.

`PostgresResponses` implements `ResponseStore` (gateway/store/responses.py) with the
same table and rules as SQLite's (owner, created_at, the response and its input as
JSON bytes; reads ignore rows older than the retention; `prune` deletes them). It
uses the gateway's PostgreSQL store: the same connection pool and the same bounded
worker threads (`AsyncPostgres.run`), so it adds no connections of its own, and it
does not close them (the store does). The table comes from migration 2
(gateway/store/pg_schema.py).
"""

from __future__ import annotations

from typing import Final

from gateway.store.postgres import AsyncPostgres, PostgresStore
from gateway.store.responses import StoredResponse

__all__ = ["PostgresResponses"]

_COLUMNS: Final = "response_id, owner, created_at, response, input_items"
PRUNE_BATCH: Final = 5000  # rows per DELETE statement of the retention sweep


def _put(store: PostgresStore, r: StoredResponse) -> None:
    with store.connection() as c:
        c.execute(
            f"INSERT INTO responses ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (response_id) DO UPDATE SET owner = excluded.owner,"
            " created_at = excluded.created_at, response = excluded.response,"
            " input_items = excluded.input_items",
            (r.response_id, r.owner, r.created_at, r.response, r.input_items),
        )


def _get(store: PostgresStore, response_id: str, owner: str, since: float) -> StoredResponse | None:
    with store.connection() as c:
        row = c.execute(
            f"SELECT {_COLUMNS} FROM responses"
            " WHERE response_id = %s AND owner = %s AND created_at >= %s",
            (response_id, owner, since),
        ).fetchone()
    if row is None:
        return None
    return StoredResponse(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]))


def _delete(store: PostgresStore, response_id: str, owner: str) -> bool:
    with store.connection() as c:
        cur = c.execute(
            "DELETE FROM responses WHERE response_id = %s AND owner = %s", (response_id, owner)
        )
        return cur.rowcount > 0


def _prune(store: PostgresStore, before: float, batch: int) -> int:
    """Delete in batches, each its own statement: one DELETE of a long backlog could
    outlast the statement timeout and then never succeed."""
    deleted = 0
    with store.connection() as c:
        while True:
            n = c.execute(
                "DELETE FROM responses WHERE response_id IN (SELECT response_id FROM responses"
                " WHERE created_at < %s LIMIT %s)",
                (before, batch),
            ).rowcount
            deleted += n
            if n < batch:
                return deleted


class PostgresResponses:
    """`ResponseStore` in the gateway's PostgreSQL database, for trio code."""

    def __init__(self, db: AsyncPostgres, *, prune_batch: int = PRUNE_BATCH) -> None:
        self.db = db
        self.prune_batch = prune_batch

    async def put(self, record: StoredResponse) -> None:
        await self.db.run(_put, self.db.store, record)

    async def get(self, response_id: str, owner: str, since: float) -> StoredResponse | None:
        return await self.db.run(_get, self.db.store, response_id, owner, since)

    async def delete(self, response_id: str, owner: str) -> bool:
        return await self.db.run(_delete, self.db.store, response_id, owner)

    async def prune(self, before: float) -> int:
        return await self.db.run(_prune, self.db.store, before, self.prune_batch)

    async def aclose(self) -> None:
        """Nothing of its own to close: the pool is the store's."""
