"""What the `gateway keys`, `gateway usage` and `gateway reload` commands share: how a
command fails, and where the state of the gateway it acts on lives.

The state's places come from the same config file the gateway serves (`--config`, or
$GATEWAY_CONFIG): only `[state] sqlite_path`, `postgres_url` (or the variable named by
`postgres_url_env`) and `[server] pid_file` are read from it, so a command works where
the gateway's other secrets are not set. A database given as a `postgresql://` URL
(or set by `postgres_url`) is PostgreSQL, anything else a SQLite file.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gateway.config.environment import CONFIG_ENV as CONFIG_ENV
from gateway.config.model import StateConfig, pid_path
from gateway.store.records import StoreError

if TYPE_CHECKING:  # the store (and trio) only once a command opens it
    from gateway.store.base import Store

DEFAULT_DB: Final = StateConfig().sqlite_path
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def is_postgres(target: str) -> bool:
    return target.startswith(POSTGRES_SCHEMES)


class CliError(Exception):
    """A user mistake or a missing key: printed as one line, exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def config_path(given: str | None) -> str | None:
    """The config file a command reads: `--config`, else $GATEWAY_CONFIG, else none."""
    return given or os.environ.get(CONFIG_ENV) or None


def _table(config: str, data: dict[str, Any], name: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise CliError(f"{config}: [{name}] must be a table", 2)
    return table


def _text(config: str, table: dict[str, Any], where: str, key: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise CliError(f"{config}: {where}.{key} must be a non-empty string", 2)
    return value


def _read(config: str) -> dict[str, Any]:
    try:
        with open(config, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise CliError(f"{config}: cannot read: {e.strerror}", 2) from None
    except tomllib.TOMLDecodeError as e:
        raise CliError(f"{config}: not valid TOML: {e}", 2) from None


def sqlite_path(config: str | None) -> tuple[str, str]:
    """The SQLite database of the config file `config` (None: the default), and where
    that came from, for the line saying which database a command used."""
    if config is None:
        return DEFAULT_DB, "the default: no --config or $GATEWAY_CONFIG"
    state = _table(config, _read(config), "state")
    url = _text(config, state, "state", "postgres_url")
    if url is not None:
        return url, f"[state] postgres_url of {config}"
    env_name = _text(config, state, "state", "postgres_url_env")
    if env_name is not None:
        url = os.environ.get(env_name)
        if not url:
            raise CliError(f"{config}: state.postgres_url_env: {env_name} is not set", 2)
        return url, f"[state] postgres_url_env of {config}"
    path = _text(config, state, "state", "sqlite_path")
    if path is None:
        return DEFAULT_DB, f"the default: {config} sets no [state] sqlite_path"
    return path, f"[state] sqlite_path of {config}"


def pid_file_path(config: str | None) -> str:
    """The pid file of the gateway serving the config file `config` (None: the default)."""
    if config is None:
        return pid_path(None, DEFAULT_DB)
    data = _read(config)
    server = _text(config, _table(config, data, "server"), "server", "pid_file")
    db = _text(config, _table(config, data, "state"), "state", "sqlite_path")
    return pid_path(server, db or DEFAULT_DB)


def open_database(path: str, origin: str, *, create: bool, command: str) -> Store:
    """The database at `path` (a SQLite file or a PostgreSQL URL), after a line on
    stderr saying which it is (stdout stays for the answer, JSON included). Only a
    command that writes a key (`create`) makes a new SQLite file: for any other, a path
    without a database is an error saying so."""
    if is_postgres(path):
        from gateway.store.postgres import PostgresStore, where_of

        print(f"{command}: database {where_of(path)} ({origin})", file=sys.stderr)
        try:
            return PostgresStore.connect(path, pool_size=1)
        except StoreError as e:
            raise CliError(f"cannot use the database: {e}", 2) from None
    shown = os.path.abspath(path)
    print(f"{command}: database {shown} ({origin})", file=sys.stderr)
    if not create and not Path(path).exists():
        raise CliError(
            f"no database at {shown}: no key was ever created there. Point at the"
            " gateway's own with --config FILE (its [state] sqlite_path) or --db PATH;"
            " `gateway keys create` starts a new one"
        )
    from gateway.store.sqlite import SqliteStore

    try:
        return SqliteStore(path)
    except (sqlite3.Error, OSError) as e:  # not a database, no permission, no directory
        raise CliError(f"cannot open the database {shown}: {e}", 2) from None
