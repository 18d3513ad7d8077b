"""Durable state and its records: SQLite (keys, top-ups, the ledger), the Redis client,
and the shapes every backend shares. Knows nothing of requests or policy."""
