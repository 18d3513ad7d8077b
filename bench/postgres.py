"""A real PostgreSQL server in a throwaway cluster, for bench/ and the tests.

Tests need the real thing (LISTEN/NOTIFY, concurrent transactions, a server that
stops and comes back), not a fake. `initdb` makes a cluster in a temp dir with trust
authentication; the server listens on a free 127.0.0.1 port and a Unix socket in the
same dir; `stop()`/`start()` take it down and bring it back on the same port with its
data. PostgreSQL refuses to run as root: as root the cluster belongs to `nobody` and
every command runs as that user. The binaries are looked for under
/usr/lib/postgresql/*/bin (Debian's layout: not on PATH), newest first, then on PATH;
tests skip with a clear reason when there are none (`.ci/run` installs them with apt).
`durable=False` (the tests) turns fsync off; a measurement keeps the server's defaults.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMPLATE = "gw_template"  # a database with the gateway's schema, copied per test
_UNPRIVILEGED = "nobody"
_TIMEOUT_S = 30


def postgres_bin_dir() -> Path | None:
    """The directory of initdb/pg_ctl, or None if PostgreSQL is not installed."""

    def version(initdb: str) -> int:
        name = Path(initdb).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One cluster in `workdir`, served on 127.0.0.1:`port`."""

    def __init__(self, bin_dir: Path, workdir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = _free_port()
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            user = pwd.getpwnam(_UNPRIVILEGED)
            os.chown(workdir, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            cwd=self.workdir,
            check=False,
            **self._as,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{result.stdout}\n{result.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")  # fmt: skip

    def start(self) -> None:
        """Start (again, on the same port) and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.workdir / "log"), "-w",
                  "-t", str(_TIMEOUT_S), "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, name: str, *, empty: bool = False) -> str:
        """A fresh database (a copy of the migrated template, or `empty`); its URL."""
        template = "template0" if empty else TEMPLATE
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
        return self.url(name)


@contextlib.contextmanager
def running_postgres(bin_dir: Path, *, durable: bool = False) -> Iterator[PostgresServer]:
    """A started cluster with the migrated template database; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="gw-pg-") as tmp:
        server = PostgresServer(bin_dir, Path(tmp), durable=durable)
        server.init()
        server.start()
        try:
            server.execute(f"CREATE DATABASE {TEMPLATE}")
            from gateway.store.postgres import PostgresStore

            PostgresStore.migrate_url(server.url(TEMPLATE))
            yield server
        finally:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                server.stop("immediate")
