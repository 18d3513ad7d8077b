"""What a reload may change, and the check a new config passes before it is served.

A reload (SIGHUP, `gateway reload`) re-reads the file the gateway started from and
swaps providers, models (routed ones and `[routing]` too), config keys and `[media]`
for new requests. What the
process set up once at its start cannot follow: where it listens and how (`[server]`:
address, workers, the HTTP server, its timeouts and caps, CORS, the pid file) and
its state (`[state]`: the SQLite file, the journal, Redis, the admin key) and what it
observes with (`[observability]`: the access log, metrics, traces), and the console's
sessions and login throttle (`[console]`). A config
that changes any of those is refused as a whole, naming them: the running config
stays, and a restart applies the file. `[state] default_output_tokens` and `[console]
enabled` and `public_models`, read by each request, are the exceptions.
"""

from __future__ import annotations

import dataclasses

from gateway.config.load import config_from_bytes, missing_extras, read_config_file
from gateway.config.model import EMBEDDED, Config
from gateway.config.reader import ConfigError

__all__ = ["RELOADABLE", "reloaded", "restart_needed"]

# Of the tables a reload otherwise refuses changes to: read per request.
RELOADABLE = frozenset({"state.default_output_tokens", "console.enabled", "console.public_models"})


def restart_needed(old: Config, new: Config) -> list[str]:
    """The `[server]`, `[state]`, `[observability]` and `[console]` keys whose change
    needs a restart (names only: some values are secrets)."""
    changed = []
    for table, before, after in (
        ("server", old.server, new.server),
        ("state", old.state, new.state),
        ("observability", old.observability, new.observability),
        ("console", old.console, new.console),
    ):
        for f in dataclasses.fields(before):
            name = f"{table}.{f.name}"
            if name not in RELOADABLE and getattr(before, f.name) != getattr(after, f.name):
                changed.append(name)
    return changed


def reloaded(old: Config) -> tuple[Config, bytes]:
    """The config file `old` came from, read again and checked to replace `old` in a
    running gateway, with its bytes; ConfigError saying why not."""
    if old.source == EMBEDDED:
        raise ConfigError("the gateway runs on its embedded defaults: no config file to re-read")
    raw = read_config_file(old.source)
    new = config_from_bytes(raw, old.source)
    if missing := missing_extras(new):
        raise ConfigError("; ".join(missing))
    if keys := restart_needed(old, new):
        raise ConfigError(f"{', '.join(keys)} changed, which needs a restart")
    return new, raw
