"""Command line: `gateway serve`, `gateway reload`, `gateway check-config`, and the
`keys` and `usage` commands (gateway/cli/)."""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.cli import db as db_cli
from gateway.cli import keys as keys_cli
from gateway.cli import usage as usage_cli
from gateway.cli.common import CliError, config_path, pid_file_path
from gateway.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    ConfigError,
    embedded_config,
    load_config,
    missing_extras,
)
from gateway.config.environment import CONFIG_ENV, DEV_ADMIN_KEY_ENV, DEV_KEY_ENV, METRICS_DIR_ENV
from gateway.config.load import config_from_bytes, read_config_file
from gateway.config.model import EMBEDDED
from gateway.config.reload import reloaded
from gateway.observability import logs
from gateway.server import hangup
from gateway.server.pidfile import PidFileError, holding_pid_file, read_pid

# What `serve` loads is imported where it is used: the supervisor of `--workers N`
# binds, starts and watches worker processes and checks configs, nothing more, so it
# never imports trio, the app or its libraries (~30 MB; docs/performance.md).
if TYPE_CHECKING:
    import trio

    from gateway.app import GatewayApp
    from gateway.server.serve import ServerOptions


log = logging.getLogger("gateway")


def _load(path: str | None) -> tuple[Config, bytes | None]:
    """The config at `path` (with its bytes), or the embedded defaults (None)."""
    if path:
        raw = read_config_file(path)
        return config_from_bytes(raw, path), raw
    dev_key = os.environ.get(DEV_KEY_ENV) or "sk-dev-" + secrets.token_urlsafe(24)
    os.environ[DEV_KEY_ENV] = dev_key  # worker processes read it back
    admin_key = os.environ.get(DEV_ADMIN_KEY_ENV) or "sk-admin-dev-" + secrets.token_urlsafe(24)
    os.environ[DEV_ADMIN_KEY_ENV] = admin_key
    return embedded_config(dev_key, admin_key), None


def describe(config: Config) -> str:
    """What a config would serve, for people."""
    lines = [f"config: {config.source}", "providers:"]
    for p in config.providers.values():
        lines.append(f"  {p.name:<16} kind={p.kind:<9} {p.base_url}")
    lines.append("models:")
    for m in config.models.values():
        upstream = "" if m.upstream_model == m.id else f" -> {m.upstream_model}"
        then = f", then {', '.join(m.fallbacks)}" if m.fallbacks else ""
        lines.append(f"  {m.id:<24} via {m.provider}{upstream}{then}")
    for r in config.routed.values():
        targets = ", ".join(f"{t.model} ({t.weight:g})" for t in r.targets)
        then = f", then {', '.join(r.fallbacks)}" if r.fallbacks else ""
        lines.append(f"  {r.id:<24} {r.strategy}: {targets}{then}")
    if config.providers:
        names = ", ".join(f"{n}/<model>" for n in config.providers)
        lines.append(f"  (and any {names})")
    lines.append("keys:")
    for k in config.keys:
        scope = "all models" if k.models is None else ", ".join(k.models)
        lines.append(f"  {k.name:<16} {scope}")
    if not config.keys:
        lines.append("  none in the file: only managed keys (gateway keys create) are accepted")
    return "\n".join(lines)


def _banner(config: Config, host: str, port: int) -> str:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    text = [f"gateway listening on {url}", describe(config)]
    dev_key = os.environ.get(DEV_KEY_ENV)
    if config.source == EMBEDDED and dev_key:
        body = '{"model": "mock-gpt", "messages": [{"role": "user", "content": "Hello!"}]}'
        curl = (
            f"curl {url}/v1/chat/completions -H {shlex.quote('Authorization: Bearer ' + dev_key)}"
            f" -H 'Content-Type: application/json' -d {shlex.quote(body)}"
        )
        text += [
            "",
            f"dev key: {dev_key}",
            "try it:",
            f"  {curl}",
            f"  or with the OpenAI SDK: OpenAI(base_url='{url}/v1', api_key='{dev_key}')",
        ]
        admin_key = config.state.admin_key
        if admin_key and config.console.enabled:
            text += [
                "",
                f"console: {url}/console/  (log in with the admin key {admin_key})",
            ]
    return "\n".join(text)


log = logging.getLogger("gateway")


@contextmanager
def metrics_dir(config: Config, workers: int) -> Iterator[None]:
    """With several workers, the directory where each writes its metrics for the others'
    scrapes (observability/metrics.py), made for this run and removed after it."""
    os.environ.pop(METRICS_DIR_ENV, None)  # never one left in the environment by someone else
    if workers < 2 or not config.observability.metrics:
        yield
        return
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(METRICS_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _configure_logs(args: argparse.Namespace, config: Config) -> bool:
    """Log format and level: --log-format/--log-level, then the environment, then the
    config; passed on to worker processes through the environment."""
    try:
        fmt, level = logs.resolve(
            args.log_format,
            args.log_level,
            config.server.log_format,
            config.server.log_level,
            os.environ,
        )
    except ValueError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return False
    os.environ[logs.FORMAT_ENV] = fmt
    os.environ[logs.LEVEL_ENV] = level
    logs.configure(fmt, level)
    return True


def cmd_serve(args: argparse.Namespace) -> int:
    hangup.hold()  # a SIGHUP while we start is a reload once we can, never our end
    try:
        config, raw = _load(os.path.abspath(args.config) if args.config else None)
    except ConfigError as e:
        print("\n".join(f"gateway: invalid config: {p}" for p in e.problems), file=sys.stderr)
        return 2
    if missing := missing_extras(config):
        print("\n".join(f"gateway: invalid config: {m}" for m in missing), file=sys.stderr)
        return 2
    if not _configure_logs(args, config):
        return 2
    if args.config:
        os.environ[CONFIG_ENV] = config.source
    else:
        os.environ.pop(CONFIG_ENV, None)  # workers must serve what the banner shows
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    workers = args.workers or config.server.workers
    if workers > 1 and not config.state.redis_url:
        print(
            f"gateway: --workers {workers} needs [state] redis_url: without a shared store each"
            " worker would keep its own rate limits and budgets, silently multiplying them.",
            file=sys.stderr,
        )
        return 2

    if config.server.http_server == "hypercorn":
        print(_banner(config, host, port), flush=True)
        _log_start(config, host, port, workers)
        with metrics_dir(config, workers):
            return _serve_hypercorn(config, host, port, workers)
    from gateway.server.workers import listen_once, reserve

    try:  # bound before anything starts: a port in use is one clear line, not a traceback
        if workers > 1:
            listen = reserve(host, port, SERVER_BACKLOG)
        else:
            sock = listen_once(host, port, SERVER_BACKLOG)
    except OSError as e:
        print(_cannot_listen(host, port, e), file=sys.stderr)
        return 1
    if workers > 1:
        print(_banner(config, host, listen.port), flush=True)
        _log_start(config, host, listen.port, workers)
        with metrics_dir(config, workers), holding_pid_file(config.pid_path):
            return _supervise(config, raw, listen, workers)
    print(_banner(config, host, sock.getsockname()[1]), flush=True)
    _log_start(config, host, sock.getsockname()[1], workers)
    import trio

    with metrics_dir(config, workers):
        trio.run(_serve_builtin, config, lambda: sock, config.pid_path)
    return 0


def _cannot_listen(host: str, port: int, e: OSError) -> str:
    """Why the port cannot be had, and what to do about it."""
    line = f"gateway: cannot listen on {host}:{port}: {e.strerror or e}"
    if e.errno == errno.EADDRINUSE:
        line += (
            f". Another process holds port {port}: pick another with --port N"
            ' (make serve ARGS="--port N"), or [server] port in the config;'
            " --port 0 picks a free one"
        )
    elif e.errno == errno.EACCES and 0 < port < 1024:
        line += ". Ports below 1024 need privileges: pick one above 1023 with --port N"
    elif e.errno == errno.EADDRNOTAVAIL:
        line += f". {host} is not an address of this machine: check --host or [server] host"
    return line


def _supervise(config: Config, raw: bytes | None, listen: Any, workers: int) -> int:
    """`serve --workers N`: the parent checks a new config on SIGHUP (one line if it is
    refused), then passes the signal on; new workers start from the last good config."""
    from gateway.server.workers import supervise

    current = config

    def reload() -> bytes | None:
        nonlocal current
        try:
            new, new_raw = reloaded(current)
        except ConfigError as e:
            log.error("config reload refused, the workers keep the config they have: %s", e)
            return None
        current = new
        log.info("config reload: %s checked, passing SIGHUP on to the workers", new.source)
        return new_raw

    return supervise(
        listen,
        workers,
        config.server.graceful_timeout_s,
        reload=reload,
        worker_input=raw,
        worker_args=() if raw is None else ("--config-stdin",),
    )


def _log_start(config: Config, host: str, port: int, workers: int) -> None:
    """The start, once, with what an operator needs to know (never a secret)."""
    state = config.state
    obs = config.observability
    logs.event(
        log,
        logging.INFO,
        "starting",
        version=__version__,
        config=config.source,
        host=host,
        port=port,
        workers=workers,
        http_server=config.server.http_server,
        sqlite=state.sqlite_path,
        redis=state.redis_url is not None,  # its URL may hold a password
        providers=sorted(config.providers),
        models=len(config.models),
        config_keys=len(config.keys),
        admin_api=state.admin_key is not None,
        metrics=obs.metrics,
        traces=obs.traces,
    )


SERVER_BACKLOG = 1024


def server_options(config: Config) -> ServerOptions:
    """The built-in server's options from `[server]` (the limits no key sets are fixed)."""
    from gateway.server.serve import ServerOptions, default_max_connections

    s = config.server
    return ServerOptions(
        server_header=f"gateway/{__version__}",
        keep_alive_timeout_s=s.keep_alive_timeout_s,
        graceful_timeout_s=s.graceful_timeout_s,
        max_head_bytes=16 * 1024,  # request line + headers (docs/reliability.md R8)
        backlog=SERVER_BACKLOG,
        send_timeout_s=s.send_timeout_s,
        body_timeout_s=s.body_timeout_s,
        max_connections=s.max_connections or default_max_connections(),
        drain_delay_s=s.drain_delay_s,
    )


async def _until_signal() -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def _serve_builtin(
    config: Config, listen: Callable[[], socket.socket], pid_path: str | None
) -> None:
    """Serve with the built-in server in this process; SIGTERM or SIGINT stops accepting
    and drains in-flight requests for up to graceful_timeout_s, then returns; SIGHUP
    reloads the config. `pid_path`: the pid file to hold (None: a worker, whose parent
    holds it)."""
    import trio

    from gateway.app import create_app
    from gateway.server.serve import serve

    app = create_app(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(_reload_on_hangup, app)
        with holding_pid_file(pid_path):
            await serve(
                app,
                "",
                0,
                server_options(config),
                listen=listen,
                shutdown_trigger=_until_signal,
                draining=app,
            )
        nursery.cancel_scope.cancel()


async def _reload_on_hangup(app: GatewayApp, *, task_status: trio.TaskStatus[None]) -> None:
    await hangup.receive_hangups(app.reload, task_status=task_status)


def cmd_worker(args: argparse.Namespace) -> int:
    """One worker process of `serve --workers N` (started by gateway.server.workers),
    on the config its parent hands it on standard input (`--config-stdin`: the last
    one the parent checked), else the embedded defaults."""
    from gateway.server.workers import listen_socket, worker_socket

    if args.config_stdin:
        config = config_from_bytes(sys.stdin.buffer.read(), os.environ[CONFIG_ENV])
    else:
        config, _ = _load(None)
    import trio

    from gateway.app import setup_logging

    setup_logging(config)
    listen: Callable[[], socket.socket]
    if args.fd is not None:
        listen = functools.partial(worker_socket, args.fd)
    else:  # listen only once started: the kernel hands connections to every listener
        host, port = args.reuse_port
        listen = functools.partial(listen_socket, host, int(port), SERVER_BACKLOG)
    trio.run(_serve_builtin, config, listen, None)
    return 0


def _serve_hypercorn(config: Config, host: str, port: int, workers: int) -> int:
    from hypercorn.config import Config as HyperConfig
    from hypercorn.run import run

    hc = HyperConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.worker_class = "trio"
    hc.workers = workers
    hc.application_path = "gateway.app:app_from_env()"  # what worker processes load
    hc.keep_alive_timeout = config.server.keep_alive_timeout_s
    hc.graceful_timeout = config.server.graceful_timeout_s
    hc.h11_max_incomplete_size = 16 * 1024  # request line + headers (docs/reliability.md R8)
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our logging setup, once
    if workers > 1:
        # hypercorn's supervisor: SIGTERM/SIGINT drain every worker, and SIGHUP is its
        # own (it restarts the workers, which read the config file again).
        hangup.release()
        with holding_pid_file(config.pid_path):
            return run(hc)
    import trio

    trio.run(_serve_hypercorn_here, hc, config.pid_path)
    return 0


async def _serve_hypercorn_here(hc: Any, pid_path: str) -> None:
    """Hypercorn in this process, drained on SIGTERM/SIGINT and reloaded on SIGHUP like
    the built-in server."""
    import trio
    from hypercorn.trio import serve

    from gateway.app import app_from_env

    app = app_from_env()
    asgi: Any = app  # hypercorn types ASGI apps more narrowly than ours
    async with trio.open_nursery() as nursery:
        await nursery.start(_reload_on_hangup, app)
        with holding_pid_file(pid_path):
            await serve(asgi, hc, shutdown_trigger=_until_signal)
        nursery.cancel_scope.cancel()


def cmd_reload(args: argparse.Namespace) -> int:
    """`gateway reload`: SIGHUP to the gateway that holds the pid file."""
    try:
        path = args.pid_file or pid_file_path(config_path(args.config))
        pid = read_pid(path)
    except (PidFileError, CliError) as e:
        print(f"gateway reload: {e}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        print(f"gateway reload: cannot signal process {pid}: {e.strerror}", file=sys.stderr)
        return 1
    print(
        f"sent SIGHUP to the gateway (pid {pid}, from {path}): it re-reads its config file;"
        " its log says whether the new config was taken or refused"
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print("\n".join(f"invalid: {p}" for p in e.problems), file=sys.stderr)
        return 1
    if missing := missing_extras(config):
        print("\n".join(f"invalid: {m}" for m in missing), file=sys.stderr)
        return 1
    print(describe(config))
    print("ok")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", help="TOML config file (default: embedded mock defaults)")
    serve.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from config: 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log lines on stderr: json (default unless stderr is a terminal) or text",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default: info")
    serve.set_defaults(func=cmd_serve)
    reload = sub.add_parser(
        "reload", help="make a running gateway re-read its config file (SIGHUP)"
    )
    reload.add_argument(
        "--config", metavar="PATH", help=f"its config, for the pid file's place (${CONFIG_ENV})"
    )
    reload.add_argument(
        "--pid-file",
        metavar="PATH",
        help="its pid file (default: from the config, or ./gateway.pid)",
    )
    reload.set_defaults(func=cmd_reload)
    check = sub.add_parser("check-config", help="validate a config and print what it would serve")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)
    keys_cli.add_parser(sub)
    usage_cli.add_parser(sub)
    db_cli.add_parser(sub)
    worker = sub.add_parser("_worker", help=argparse.SUPPRESS)  # started by `serve --workers`
    where = worker.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int)
    where.add_argument("--reuse-port", nargs=2, metavar=("HOST", "PORT"))
    worker.add_argument("--config-stdin", action="store_true")
    worker.set_defaults(func=cmd_worker)
    args = parser.parse_args(argv)
    logs.configure_from_env(None, "info")  # again once the config is known
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
