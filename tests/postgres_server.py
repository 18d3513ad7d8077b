"""PostgreSQL for tests: bench/postgres.py's throwaway cluster, or a skip saying why."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.postgres import PostgresServer, postgres_bin_dir
from bench.postgres import running_postgres as _running

__all__ = ["PostgresServer", "require_postgres", "running_postgres"]


def require_postgres() -> Path:
    """The binaries' directory; skips the calling test if PostgreSQL is not installed."""
    path = postgres_bin_dir()
    if path is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    return path


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """One cluster (fsync off) with the migrated template database; removed on exit."""
    with _running(require_postgres()) as server:
        yield server
