"""Durable state and its records: the store interface (base.py) with SQLite and PostgreSQL
behind it (keys, top-ups, the ledger), the Redis client,
and the shapes every backend shares. Knows nothing of requests or policy."""
