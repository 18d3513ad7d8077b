"""The servers of a measurement: the fake upstream, a throwaway Redis, our gateway.

``compare`` and ``idle`` both measure ``gateway serve`` in front of the fake OpenAI
upstream (``python -m bench upstream``), with a generated config and a managed key
with RPM, TPM and prepaid credit on priced models, so that auth, limits and accounting
are on as in production. With more than one worker the gateway needs a shared store:
`start_redis` runs a ``redis-server`` without persistence on a free loopback port.
Each start function waits until its server answers and returns where it listens
(`Server`, `Redis`; `start_stack` all three as a `Stack`); `bench.processes.Processes`
stops them. The peer gateways (LiteLLM, Portkey) are in `bench.peers`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.fakes.openai import DEFAULT_KEY as UPSTREAM_KEY
from bench.processes import (
    HOST,
    Processes,
    env_with_repo,
    free_port,
    log_tail,
    venv_bin,
    wait_listening,
)
from bench.scenarios import SCENARIOS
from bench.tls import TlsFiles, trust_env

__all__ = [
    "UPSTREAM_KEY",
    "GatewaySetup",
    "Redis",
    "Server",
    "Stack",
    "find_redis_server",
    "gateway_config",
    "start_floor",
    "start_gateway",
    "start_redis",
    "start_stack",
    "start_upstream",
    "trusting_env",
]


@dataclass
class Server:
    """One server process (group) under measurement, and how to address it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    base_url: str
    model_for: dict[str, str]  # scenario name -> model name to send
    api_key: str | None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    log_path: Path | None = None
    ca_file: Path | None = None  # https: the certificate a client must trust (self-signed)


def trusting_env(upstream: Server, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) plus, when `upstream` is HTTPS, the variables
    that make a child trust its certificate (`bench.tls.trust_env`)."""
    out = dict(os.environ if env is None else env)
    if upstream.ca_file is not None:
        out.update(trust_env(upstream.ca_file))
    return out


def start_upstream(procs: Processes, timeout_s: float, tls: TlsFiles | None = None) -> Server:
    """The fake OpenAI upstream on a free port (``direct``: measured as a target too);
    HTTPS with `tls`."""
    port = free_port()
    argv = [sys.executable, "-m", "bench", "upstream", "--kind", "openai",
            "--host", HOST, "--port", str(port)]  # fmt: skip
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    proc, log = procs.start("upstream", argv, env=env_with_repo())
    wait_listening(proc, port, timeout_s, "the fake upstream")
    models = {name: s.upstream_model for name, s in SCENARIOS.items()}
    scheme = "https" if tls is not None else "http"
    return Server(
        "direct", proc, port, f"{scheme}://{HOST}:{port}/v1", models, UPSTREAM_KEY,
        log_path=log, ca_file=tls.cert if tls is not None else None,
    )  # fmt: skip


def start_floor(procs: Processes, upstream: Server, timeout_s: float, mode: str) -> Server:
    """The bare trio relay (`bench.floor`, ``stream`` or ``raw``) in front of `upstream`:
    clients send it what they would send the upstream itself."""
    port = free_port()
    name = "floor" if mode == "stream" else f"floor-{mode}"
    proc, log = procs.start(
        name,
        [sys.executable, "-m", "bench", "floor", "--upstream", upstream.base_url,
         "--host", HOST, "--port", str(port), "--mode", mode],
        env=env_with_repo(),
    )  # fmt: skip
    wait_listening(proc, port, timeout_s, f"the {name} relay")
    return Server(
        name, proc, port, f"http://{HOST}:{port}/v1", dict(upstream.model_for),
        upstream.api_key, log_path=log,
    )  # fmt: skip


# -- redis (the gateway's shared store when it has more than one worker) -------------


@dataclass
class Redis:
    """A redis-server started by `start_redis`."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """The gateway's ``[state] redis_url`` for it."""
        return f"redis://{HOST}:{self.port}/0"

    def command(self, *args: str, timeout_s: float = 2.0) -> bytes:
        """Send one command; return its first reply line."""
        return _redis_command(self.port, *args, timeout_s=timeout_s)

    def flush(self) -> None:
        """Empty it (FLUSHALL), so that a new gateway starts from no state."""
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"redis FLUSHALL answered {reply!r}")


def find_redis_server() -> str | None:
    """The ``redis-server`` executable on PATH, or None."""
    return shutil.which("redis-server")


def _redis_command(port: int, *args: str, timeout_s: float = 2.0) -> bytes:
    """Send one command to the redis on HOST:`port`; return its first reply line."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


def start_redis(procs: Processes, binary: str, timeout_s: float) -> Redis:
    """Start `binary` (redis-server) on a free loopback port, without persistence or
    eviction; return once it answers PING."""
    port = free_port()
    proc, log = procs.start(
        "redis",
        [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
         "--maxmemory-policy", "noeviction", "--dir", str(procs.log_dir),
         "--protected-mode", "yes"],
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"redis-server exited with status {proc.returncode}:\n{log_tail(log)}"
            )
        with contextlib.suppress(OSError):
            if _redis_command(port, "PING", timeout_s=0.5) == b"+PONG":
                return Redis(proc, port, log)
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer on {HOST}:{port}:\n{log_tail(log)}")
        time.sleep(0.05)


# -- the gateway -----------------------------------------------------------------


@dataclass(frozen=True)
class GatewaySetup:
    """What a generated gateway config may set beyond the listener and the store; the
    defaults are compare's (one model per scenario, the gateway's own defaults)."""

    models: Mapping[str, str] | None = None  # model name -> upstream model; None: SCENARIOS'
    http_server: str | None = None  # [server] http_server; None: the gateway's default
    max_connections: int | None = None  # per worker to the upstream; None: the default
    idle_timeout_s: float | None = None  # [providers.fake] timeouts; None: the defaults
    total_timeout_s: float | None = None
    mock_model: str | None = None  # also serve the built-in mock, unpaced, under this name
    server_max_connections: int | None = None  # [server] max_connections; None: the default


def gateway_config(
    port: int,
    upstream_url: str,
    sqlite_path: Path,
    workers: int,
    redis_url: str | None = None,
    setup: GatewaySetup | None = None,
    postgres_url: str | None = None,
) -> str:
    """The gateway's TOML config: one provider, the fake at `upstream_url`, priced models."""
    setup = setup or GatewaySetup()
    lines = [
        "[server]",
        f'host = "{HOST}"',
        f"port = {port}",
        f"workers = {workers}",
        *([f'http_server = "{setup.http_server}"'] if setup.http_server else []),
        *(
            [f"max_connections = {setup.server_max_connections}"]
            if setup.server_max_connections
            else []
        ),
        "[state]",
        f'sqlite_path = "{sqlite_path}"',
    ]
    if redis_url is not None:
        lines.append(f'redis_url = "{redis_url}"')
    if postgres_url is not None:
        lines.append(f'postgres_url = "{postgres_url}"')
    lines += [
        "[providers.fake]",
        'kind = "openai"',
        f'base_url = "{upstream_url}"',
        f'api_key = "{UPSTREAM_KEY}"',
    ]
    if setup.max_connections is not None:
        lines.append(f"max_connections = {setup.max_connections}")
    if setup.idle_timeout_s is not None:
        lines.append(f"idle_timeout_s = {setup.idle_timeout_s:g}")
    if setup.total_timeout_s is not None:
        lines.append(f"total_timeout_s = {setup.total_timeout_s:g}")
    models = setup.models
    if models is None:
        models = {s.gateway_model: s.upstream_model for s in SCENARIOS.values()}
    for name, upstream_model in models.items():
        lines += [
            f'[models."{name}"]',
            'provider = "fake"',
            f'upstream_model = "{upstream_model}"',
            "price_input_per_mtok = 0.15",
            "price_output_per_mtok = 0.60",
        ]
    if setup.mock_model is not None:
        lines += [
            "[providers.mock]",
            'kind = "mock"',
            f'[models."{setup.mock_model}"]',
            'provider = "mock"',
            "ttft_ms = 0",
            "tokens_per_s = 0",
        ]
    return "\n".join(lines) + "\n"


def start_gateway(
    procs: Processes,
    upstream: Server,
    timeout_s: float,
    workers: int = 1,
    redis_url: str | None = None,
    setup: GatewaySetup | None = None,
    key_name: str = "bench-compare",
    postgres_url: str | None = None,
    name: str = "gateway",
) -> Server:
    """``gateway serve`` in front of `upstream`, with a managed key named `key_name`
    (RPM, TPM and credit far above what a run uses); its config and SQLite file are in
    the log directory. With `postgres_url` its keys, credit and ledger are there instead
    (the server is `name`d apart from the SQLite one)."""
    port = free_port()
    config = procs.log_dir / f"{name}.toml"
    config.write_text(
        gateway_config(
            port,
            upstream.base_url,
            procs.log_dir / f"{name}.sqlite3",
            workers,
            redis_url,
            setup,
            postgres_url,
        )
    )
    gw = venv_bin("gateway")
    created = subprocess.run(
        [gw, "keys", "create", "--config", str(config), "--name", key_name,
         "--rpm", "10000000", "--tpm", "1000000000", "--credit", "1000000", "--json"],
        capture_output=True, cwd=procs.log_dir, timeout=60, check=False,
    )  # fmt: skip
    if created.returncode != 0:
        raise RuntimeError(f"gateway keys create failed: {created.stderr.decode(errors='replace')}")
    key = orjson.loads(created.stdout)["key"]
    # SSL_CERT_FILE: its upstream client's ssl.create_default_context() trusts an HTTPS
    # fake's self-signed certificate.
    env = trusting_env(upstream) if upstream.ca_file is not None else None
    proc, log = procs.start(name, [gw, "serve", "--config", str(config)], env=env)
    wait_listening(proc, port, timeout_s, "the gateway")
    # The scenarios' names only when it serves the scenarios' models.
    custom = setup is not None and setup.models is not None
    models = {} if custom else {name: s.gateway_model for name, s in SCENARIOS.items()}
    return Server(name, proc, port, f"http://{HOST}:{port}/v1", models, key, log_path=log)


# -- all three -------------------------------------------------------------------


@dataclass
class Stack:
    """The fake upstream, the gateway in front of it, and its Redis (workers > 1)."""

    upstream: Server
    gateway: Server
    redis: Redis | None = None

    @property
    def logs(self) -> dict[str, Path | None]:
        """Each server's log, to show its end when a run fails."""
        logs = {"upstream": self.upstream.log_path, "gateway": self.gateway.log_path}
        if self.redis is not None:
            logs["redis"] = self.redis.log_path
        return logs


def start_stack(
    procs: Processes, timeout_s: float, workers: int, setup: GatewaySetup, key_name: str
) -> Stack:
    """The fake upstream, a Redis when `workers` > 1, and the gateway with `workers`
    workers, `setup` and a managed key named `key_name`."""
    upstream = start_upstream(procs, timeout_s)
    redis = None
    if workers > 1:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError(
                "--workers > 1 needs redis-server on PATH (apt-get install redis-server)"
            )
        redis = start_redis(procs, binary, timeout_s)
    redis_url = redis.url if redis is not None else None
    gateway = start_gateway(procs, upstream, timeout_s, workers, redis_url, setup, key_name)
    return Stack(upstream, gateway, redis)
