"""`gateway serve --workers N` on the built-in server: N processes share one port,
a worker that dies is replaced, SIGTERM stops them all; and the hypercorn option."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.procfs import live_children
from tests.conftest import free_port
from tests.redis_server import require_redis_server, running_redis
from tests.test_cli import serving, wait_ready

CONFIG = """
[server]
graceful_timeout_s = 5
{server_extra}
[state]
sqlite_path = "{dir}/gw.sqlite3"
{state_extra}
[providers.mock]
kind = "mock"
[models."mock-fast"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0
[[keys]]
name = "t"
key = "sk-workers-test"
"""

BODY = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": "Bearer sk-workers-test"}


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def load(base: str, requests: int) -> None:
    """`requests` requests, each on a new connection (so the kernel spreads them)."""
    for _ in range(requests):
        r = httpx.post(f"{base}/v1/chat/completions", json=BODY, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text


@contextmanager
def two_workers(
    tmp_path: Path, python_flags: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[str], int, list[str]]]:
    """`gateway serve --workers 2` on a real redis-server, ready; (the parent, its port,
    the lines it and its workers print so far). `python_flags`: the parent's interpreter's."""
    require_redis_server()
    with running_redis() as redis:
        config = tmp_path / "gw.toml"
        config.write_text(
            CONFIG.format(dir=tmp_path, server_extra="", state_extra=f'redis_url = "{redis.url}"')
        )
        port = free_port()
        args = ("--config", str(config), "--port", str(port), "--workers", "2")
        flags = python_flags
        with serving(*args, env={}, cwd=tmp_path, banner="keys:", python_flags=flags) as served:
            proc, lines = served
            wait_ready(f"http://127.0.0.1:{port}")
            yield proc, port, lines


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_share_the_port_are_replaced_and_stop_on_sigterm(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (proc, port, _lines):
        base = f"http://127.0.0.1:{port}"
        workers = live_children(proc.pid)
        assert len(workers) == 2
        before = {w: cpu_ticks(w) for w in workers}
        deadline = time.monotonic() + 30
        # Both accept connections: each one's CPU time grows under load.
        while time.monotonic() < deadline:
            load(base, 40)
            if all(cpu_ticks(w) > before[w] for w in workers):
                break
        assert all(cpu_ticks(w) > before[w] for w in workers)

        os.kill(workers[0], signal.SIGKILL)  # a crash: the supervisor starts another
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = [w for w in live_children(proc.pid) if alive(w)]
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.1)
        replacement = [w for w in live_children(proc.pid) if alive(w)]
        assert len(replacement) == 2 and workers[0] not in replacement
        wait_ready(base)
        load(base, 10)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        for w in replacement:
            deadline = time.monotonic() + 5
            while alive(w) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(w)


# What a worker needs and the supervisor does not: each is several MB of its memory.
WORKER_ONLY = ("trio", "quart", "h11", "prometheus_client", "gateway.app", "gateway.state")


def _waits_for(lines: list[str], text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in lines):
        assert time.monotonic() < deadline, f"no line with {text!r}:\n" + "".join(lines)
        time.sleep(0.05)


def test_the_supervisor_imports_nothing_only_workers_need(tmp_path: Path) -> None:
    """The parent of `--workers N` binds, starts and watches workers and checks a
    reloaded config: it imports neither trio nor the app (they cost it ~30 MB, a whole
    worker's imports, for nothing; docs/performance.md). Its own imports, from start
    to stop through a reload, are listed by `python -X importtime`, which its workers
    (started without the flag) do not print."""
    with two_workers(tmp_path, ("-X", "importtime")) as (proc, port, lines):
        base = f"http://127.0.0.1:{port}"
        load(base, 4)
        proc.send_signal(signal.SIGHUP)  # the reload path: the parent checks the config
        _waits_for(lines, "config reload")
        load(base, 4)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        time.sleep(0.2)  # the reader thread takes the last lines
        imported = {
            line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")
        }
    assert "gateway.server.workers" in imported and "gateway.config.reload" in imported
    heavy = sorted(m for m in imported if m in WORKER_ONLY or m.split(".")[0] in WORKER_ONLY)
    assert heavy == []


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT groups are Linux's")
def test_requests_succeed_while_a_worker_is_replaced_and_it_joins_the_port(
    tmp_path: Path,
) -> None:
    """Every request succeeds during a replacement worker's start-up, and the new
    worker ends up with a listening socket of its own on the port. That it opens it
    only once its app has started is tested in test_serve.py (`listen`); what that
    saves clients in latency is measured by `python -m bench restart`."""
    with two_workers(tmp_path) as (proc, port, _lines):
        base = f"http://127.0.0.1:{port}"
        first = live_children(proc.pid)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not (set(live_children(proc.pid)) - set(first)) and time.monotonic() < deadline:
            time.sleep(0.01)
        new = set(live_children(proc.pid)) - set(first)
        assert new, "no replacement was started"
        until = time.monotonic() + 4  # the replacement's whole start-up
        while time.monotonic() < until:
            r = httpx.post(f"{base}/v1/chat/completions", json=BODY, headers=AUTH, timeout=10)
            assert r.status_code == 200, r.text
            time.sleep(0.02)
        [replacement] = new
        deadline = time.monotonic() + 20
        while not _sockets(replacement, port, LISTEN) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sockets(replacement, port, LISTEN) == 1


ESTABLISHED, LISTEN = "01", "0A"  # socket states in /proc/net/tcp


def _sockets(worker: int, port: int, state: str) -> int:
    """Sockets on local `port` in `state` that `worker` holds (/proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{worker}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{worker}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == state and fields[9] in inodes:
            count += 1
    return count


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreading is Linux's")
def test_keep_alive_connections_opened_together_spread_over_the_workers(tmp_path: Path) -> None:
    """One shared accept socket let the first worker awake take a whole burst of
    connections; with SO_REUSEPORT the kernel spreads them."""
    with two_workers(tmp_path) as (proc, port, _lines):
        clients = [
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10)
            for _ in range(16)
        ]
        try:
            for client in clients:
                assert client.get("/healthz").status_code == 200
            per_worker = [_sockets(w, port, ESTABLISHED) for w in live_children(proc.pid)]
            assert sum(per_worker) == 16 and min(per_worker) > 0, per_worker
        finally:
            for client in clients:
                client.close()


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    # The port is bound before anything else starts: the Redis URL is never dialled.
    redis_url = 'redis_url = "redis://127.0.0.1:1/0"'
    config.write_text(CONFIG.format(dir=tmp_path, server_extra="", state_extra=redis_url))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        for workers in ("1", "2"):
            command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
            command += ["--port", port, "--workers", workers]
            r = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert r.returncode == 1, r.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
            assert "Traceback" not in r.stderr


def test_hypercorn_stays_available(tmp_path: Path) -> None:
    """`[server] http_server = "hypercorn"` serves the same API, drains on SIGTERM."""
    config = tmp_path / "gw.toml"
    config.write_text(
        CONFIG.format(dir=tmp_path, server_extra='http_server = "hypercorn"', state_extra="")
    )
    port = free_port()
    args = ("--config", str(config), "--port", str(port))
    with serving(*args, env={}, cwd=tmp_path, banner="keys:") as (proc, _lines):
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        load(base, 3)
        r = httpx.post(f"{base}/v1/chat/completions", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
