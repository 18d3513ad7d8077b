"""The gateway's lifecycle as an operator drives it: `--version`, `/healthz`, `gateway
reload` and SIGHUP (one worker and two), the pid file, a port in use."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

import gateway
from tests.conftest import free_port
from tests.redis_server import require_redis_server, running_redis
from tests.test_cli import gateway as run_gateway
from tests.test_cli import wait_ready

KEY = "sk-lifecycle-0123456789"
NEW_KEY = "sk-lifecycle-new-0123456789"

CONFIG = """
[server]
graceful_timeout_s = 10
{server}
[state]
sqlite_path = "{dir}/gw.sqlite3"
{state}
[providers.mock]
kind = "mock"
ttft_ms = {provider_ttft}

[models."slow"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 12

[models."{model}"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0

[[keys]]
name = "ops"
key = "{key}"
"""


def write_config(
    path: Path,
    *,
    model: str = "before",
    key: str = KEY,
    provider_ttft: int = 0,
    server: str = "",
    state: str = "",
) -> None:
    path.write_text(
        CONFIG.format(
            dir=path.parent,
            model=model,
            key=key,
            provider_ttft=provider_ttft,
            server=server,
            state=state,
        )
    )


@dataclass
class Running:
    """A `gateway serve` process with its output collected line by line."""

    proc: subprocess.Popen[str]
    base: str
    lines: list[str] = field(default_factory=list)

    def wait_for(self, text: str, count: int = 1, timeout_s: float = 20) -> list[str]:
        """The output lines holding `text`, once there are `count` of them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if text in line]
            if len(found) >= count:
                return found
            assert self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"no {count} lines with {text!r} in:\n" + "".join(self.lines))

    def chat(self, model: str, key: str = KEY) -> httpx.Response:
        """One request on a new connection (so that several workers share them)."""
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {key}"}
        return httpx.post(f"{self.base}/v1/chat/completions", json=body, headers=headers)


@contextmanager
def serving(config: Path, *extra: str) -> Iterator[Running]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=config.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running = Running(proc, f"http://127.0.0.1:{port}")

    def collect() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.lines.append(line)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        running.wait_for("gateway listening")
        wait_ready(running.base)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


WORDS = " ".join(["one two three four five six seven eight"] * 5)  # ~3.5 s at 12 tokens/s


@dataclass
class Streamed:
    text: str
    complete: bool  # a finish reason and [DONE]
    ended: float  # time.monotonic() at its end


def stream_text(base: str, started: threading.Barrier | None = None) -> Streamed:
    """A streamed completion on the slow model on a connection of its own; `started`
    is passed once its first words arrived."""
    body = {"model": "slow", "messages": [{"role": "user", "content": WORDS}], "stream": True}
    text, finished, done = "", False, False
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = orjson.loads(line[6:])
            assert "error" not in event, event
            for choice in event["choices"]:
                text += choice["delta"].get("content") or ""
                finished = finished or choice.get("finish_reason") == "stop"
            if started is not None and text:
                started.wait(timeout=20)
                started = None
    return Streamed(text, finished and done, time.monotonic())


# ---------------------------------------------------------------- version, health


def test_version_on_the_command_line_in_healthz_and_the_server_header(tmp_path: Path) -> None:
    version = run_gateway("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"gateway {gateway.__version__}"
    config = tmp_path / "gw.toml"
    write_config(config)
    with serving(config) as gw:
        health = httpx.get(f"{gw.base}/healthz")
        assert health.json() == {"status": "ok", "version": gateway.__version__}
        for r in (health, gw.chat("before"), gw.chat("nope"), httpx.get(f"{gw.base}/x")):
            assert r.headers["server"] == f"gateway/{gateway.__version__}"


def test_a_port_in_use_says_how_to_pick_another(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    write_config(config)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        r = run_gateway("serve", "--config", str(config), "--port", port)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "pick another with --port N" in r.stderr and 'make serve ARGS="--port N"' in r.stderr
    assert "--port 0 picks a free one" in r.stderr
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert 'make serve ARGS="--port 8081"' in readme  # the README says it up front


# ---------------------------------------------------------------- reload, one worker


def test_sighup_swaps_models_and_config_keys_for_new_requests(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    write_config(config)
    with serving(config) as gw:
        assert gw.chat("before").status_code == 200
        write_config(config, model="after", key=NEW_KEY)
        gw.proc.send_signal(signal.SIGHUP)
        [line] = gw.wait_for("config reloaded")
        assert "1 providers, 2 models, 1 config keys (generation 2)" in line
        assert gw.chat("after", NEW_KEY).status_code == 200
        assert gw.chat("before", NEW_KEY).status_code == 404
        assert gw.chat("after", KEY).status_code == 401  # the old config key is gone


def test_a_bad_config_is_refused_in_one_line_and_the_old_one_stays(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    write_config(config)
    with serving(config) as gw:
        good = config.read_text()
        refusals = [
            ("[server\n", "not valid TOML"),
            (good.replace('kind = "mock"', 'kind = "mock"\nttft = 1'), "providers.mock.ttft"),
            (good + '[[keys]]\nname = "x"\nkey_env = "LIFECYCLE_UNSET"\n', "LIFECYCLE_UNSET"),
            (good.replace("[server]", "[server]\nport = 1"), ": server.port changed"),
            (
                good.replace(f"{tmp_path}/gw.sqlite3", f"{tmp_path}/other.sqlite3"),
                "state.sqlite_path changed, which needs a restart",
            ),
        ]
        for n, (text, reason) in enumerate(refusals, 1):
            config.write_text(text)
            gw.proc.send_signal(signal.SIGHUP)
            lines = gw.wait_for("config reload refused", count=n)
            assert reason in lines[-1], lines[-1]
            assert "still serving the config loaded at" in lines[-1]
            assert gw.chat("before").status_code == 200
        assert len(gw.wait_for("config reload refused")) == len(refusals)
        assert not [line for line in gw.lines if "Traceback" in line]


def test_gateway_reload_finds_the_gateway_by_its_pid_file(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    write_config(config)
    pid_file = tmp_path / "gateway.pid"  # the default: beside [state] sqlite_path
    with serving(config) as gw:
        assert pid_file.read_text() == f"{gw.proc.pid}\n"
        write_config(config, model="after")
        r = run_gateway("reload", "--config", str(config))
        assert r.returncode == 0, r.stderr
        assert f"sent SIGHUP to the gateway (pid {gw.proc.pid}, from {pid_file})" in r.stdout
        gw.wait_for("config reloaded")
        assert gw.chat("after").status_code == 200
    assert not pid_file.exists()  # removed at exit
    r = run_gateway("reload", "--config", str(config))
    assert r.returncode == 1 and f"no pid file at {pid_file}" in r.stderr

    elsewhere = tmp_path / "run" / "gw.pid"
    write_config(config, server=f'pid_file = "{elsewhere}"')
    with serving(config) as gw:
        assert elsewhere.read_text() == f"{gw.proc.pid}\n"
        r = run_gateway("reload", "--pid-file", str(elsewhere))
        assert r.returncode == 0, r.stderr
        gw.wait_for("config reloaded")


def test_a_stream_finishes_on_the_config_it_started_with(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    write_config(config)
    with serving(config) as gw, concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = threading.Barrier(2)
        stream = pool.submit(stream_text, gw.base, started)
        started.wait(timeout=20)
        # The provider changes (its relay is replaced) and the stream's model goes away.
        config.write_text(
            config.read_text()
            .replace('[models."slow"]', '[models."gone"]')
            .replace("ttft_ms = 0\n\n[models", "ttft_ms = 1\n\n[models", 1)
        )
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for("config reloaded")
        reloaded = time.monotonic()
        assert gw.chat("slow").status_code == 404
        streamed = stream.result(timeout=30)
        assert streamed.complete and streamed.text == f"Echo: {WORDS}", streamed
        assert streamed.ended > reloaded


# ---------------------------------------------------------------- reload, two workers


@contextmanager
def two_workers(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    require_redis_server()
    with running_redis() as redis:
        config = tmp_path / "gw.toml"
        write_config(config, state=f'redis_url = "{redis.url}"')
        with serving(config, "--workers", "2") as gw:
            yield gw, config


def test_two_workers_reload_during_open_streams_and_drop_none(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (gw, config), concurrent.futures.ThreadPoolExecutor(8) as pool:
        started = threading.Barrier(9)
        streams = [pool.submit(stream_text, gw.base, started) for _ in range(8)]
        started.wait(timeout=30)  # all 8 streaming, over both workers
        text = config.read_text().replace('"before"', '"after"')
        config.write_text(text.replace("ttft_ms = 0\n\n[models", "ttft_ms = 1\n\n[models", 1))
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for("passing SIGHUP on to the workers")
        gw.wait_for("config reloaded", count=2)  # each worker says so
        reloaded = time.monotonic()
        for stream in streams:
            streamed = stream.result(timeout=60)
            assert streamed.complete and streamed.text == f"Echo: {WORDS}", streamed
            assert streamed.ended > reloaded
        # Every new connection, whichever worker takes it, sees the new config.
        for _ in range(16):
            assert gw.chat("after").status_code == 200
            assert gw.chat("before").status_code == 404


def test_two_workers_refuse_a_bad_config_once_and_restart_workers_on_the_last_good_one(
    tmp_path: Path,
) -> None:
    with two_workers(tmp_path) as (gw, config):
        good = config.read_text()
        config.write_text(good.replace('kind = "mock"', 'kind = "mock"\nttft = 1'))
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for("config reload refused")
        time.sleep(1)  # no worker was asked: the parent refused it
        assert len(gw.wait_for("config reload refused")) == 1
        assert not [line for line in gw.lines if "config reloaded" in line]
        # A worker that dies now restarts on the last good config, not the bad file.
        from bench.procfs import live_children

        workers = live_children(gw.proc.pid)
        os.kill(workers[0], signal.SIGKILL)
        until(lambda: len(set(live_children(gw.proc.pid)) - set(workers)) == 1, 20)
        wait_ready(gw.base)
        for _ in range(8):
            assert gw.chat("before").status_code == 200


def test_gateway_reload_signals_no_process_but_a_gateway(tmp_path: Path) -> None:
    pid_file = tmp_path / "gateway.pid"
    other = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(f"{other.pid}\n")  # a stale pid file whose pid was reused
        r = run_gateway("reload", "--pid-file", str(pid_file))
        assert r.returncode == 1 and "which is not a gateway" in r.stderr
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()
    pid_file.write_text(f"{other.pid}\n")
    r = run_gateway("reload", "--pid-file", str(pid_file))
    assert r.returncode == 1 and "which is not running" in r.stderr
    pid_file.write_text("nonsense\n")
    r = run_gateway("reload", "--pid-file", str(pid_file))
    assert r.returncode == 1 and "does not hold a process id" in r.stderr


def test_sighup_brings_in_a_routed_model_and_refuses_an_observability_change(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gw.toml"
    write_config(config)
    with serving(config) as gw:
        assert gw.chat("spread").status_code == 404
        write_config(config)
        with config.open("a") as f:
            f.write(
                '\n[models."spread"]\nstrategy = "priority"\n'
                'targets = ["mock/first", "before"]\n\n[routing]\nmax_attempts = 2\n'
            )
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for("config reloaded")
        r = gw.chat("spread")
        assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "mock/first"
        with config.open("a") as f:
            f.write("\n[observability]\naccess_log = false\n")
        gw.proc.send_signal(signal.SIGHUP)
        [refused] = gw.wait_for("config reload refused")
        assert "observability.access_log changed, which needs a restart" in refused
        assert gw.chat("spread").status_code == 200  # the routed config stays
