"""The command line, run as a user runs it: `gateway serve` and `gateway check-config`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import orjson
import pytest

from tests.conftest import free_port
from tests.redis_server import require_redis_server, running_redis

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "gateway.toml"


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_check_config_prints_what_it_would_serve() -> None:
    r = gateway("check-config", str(EXAMPLE), env={"OPENAI_API_KEY": "sk-x"})
    assert r.returncode == 0, r.stderr
    assert "fast" in r.stdout and "qwen2.5-7b-instruct" in r.stdout and r.stdout.endswith("ok\n")
    assert "sk-x" not in r.stdout and "sk-alice" not in r.stdout


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.local]\nkind = "openai"\ndeveloper_rol = false\n')
    r = gateway("check-config", str(bad))
    assert r.returncode == 1
    assert "providers.local.developer_rol: unknown key" in r.stderr


@contextmanager
def serving(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    banner: str = "  or with the OpenAI SDK",
    python_flags: tuple[str, ...] = (),
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    proc = subprocess.Popen(
        [sys.executable, *python_flags, "-m", "gateway", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,  # the embedded defaults keep their SQLite state in the working directory
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while not any(line.startswith(banner) for line in lines):
            line = proc.stdout.readline()
            assert line, "gateway exited early:\n" + "".join(lines)
            lines.append(line)
        # Keep reading: a gateway logs a line per request, and a pipe nobody reads
        # fills up and blocks its writes (and so the gateway) after 64 KiB.
        drain = threading.Thread(target=_read_into, args=(proc.stdout, lines), daemon=True)
        drain.start()
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _read_into(stream: IO[str], lines: list[str]) -> None:
    with contextlib.suppress(ValueError, OSError):  # closed under us at the end
        for line in stream:
            lines.append(line)


def wait_ready(base: str, in_a_row: int = 4) -> None:
    """Until /readyz answers 200 `in_a_row` times (with several workers, each must be up)."""
    deadline = time.monotonic() + 40
    streak = 0
    while time.monotonic() < deadline:
        try:
            ok = httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        if streak >= in_a_row:
            return
        time.sleep(0.05 if ok else 0.1)
    raise AssertionError("gateway did not become ready")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_serve_without_config_prints_a_curl_that_works_as_pasted(tmp_path: Path) -> None:
    port = free_port()
    # A GATEWAY_CONFIG left in the environment must not make workers serve another file.
    env = {"GATEWAY_DEV_KEY": "sk-dev-test-key", "GATEWAY_CONFIG": str(EXAMPLE)}
    with serving("--port", str(port), env=env, cwd=tmp_path) as (proc, lines):
        text = "".join(lines)
        assert "dev key: sk-dev-test-key" in text
        curl = next(line.strip() for line in lines if line.strip().startswith("curl "))
        wait_ready(f"http://127.0.0.1:{port}")
        out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        body = orjson.loads(out.stdout)
        assert body["object"] == "chat.completion", out.stdout
        assert body["choices"][0]["message"]["content"]
        # The console is there too, with the printed admin key as its login.
        console = next(line for line in lines if line.startswith("console: "))
        url, admin_key = console.split()[1], console.split()[-1].rstrip(")")
        assert url == f"http://127.0.0.1:{port}/console/" and admin_key.startswith("sk-admin-dev-")
        assert httpx.get(f"http://127.0.0.1:{port}/").headers["location"].startswith("/console")
        page = httpx.get(url, follow_redirects=True)
        assert page.status_code == 200 and "admin key" in page.text.lower()
        listed = httpx.get(
            f"http://127.0.0.1:{port}/admin/keys", headers={"authorization": f"Bearer {admin_key}"}
        )
        assert listed.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_several_workers_without_a_shared_store_are_refused(tmp_path: Path) -> None:
    """Per-process limits times N workers would silently multiply every limit."""
    r = gateway("serve", "--workers", "2", env={"GATEWAY_DEV_KEY": "sk-dev-2"})
    assert r.returncode == 2 and "needs [state] redis_url" in r.stderr


def test_serve_with_two_workers_on_redis(tmp_path: Path) -> None:
    require_redis_server()
    with running_redis() as redis:
        config = tmp_path / "gw.toml"
        config.write_text(
            f'[state]\nredis_url = "{redis.url}"\nsqlite_path = "{tmp_path}/gw.sqlite3"\n'
            '[providers.mock]\nkind = "mock"\n[models."mock-fast"]\nprovider = "mock"\n'
            '[[keys]]\nname = "t"\nkey = "sk-two-workers"\n'
        )
        port = free_port()
        args = ("--config", str(config), "--port", str(port), "--workers", "2")
        with serving(*args, env={}, cwd=tmp_path, banner="keys:") as (_, _lines):
            base = f"http://127.0.0.1:{port}"
            wait_ready(base)
            for _ in range(6):
                r = httpx.post(
                    f"{base}/v1/chat/completions",
                    json={"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": "Bearer sk-two-workers"},
                    timeout=10,
                )
                assert r.status_code == 200, r.text


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'x'\n")
    r = gateway("serve", "--config", str(bad))
    assert r.returncode == 2 and "server.port: expected an integer" in r.stderr
