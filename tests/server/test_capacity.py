"""File descriptors and connections (issue 10 item 9): a cap answered with 503, accept
pausing quietly when the process is out of descriptors, the gateway's own EMFILE
reported as its own (500) and not as the upstream's, and idle upstream connections
closed on a timer.

The out-of-descriptors cases run `gateway serve` in a process of its own with a low
RLIMIT_NOFILE, as an operator would meet them; the others serve the gateway app in
this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

import gateway.state
import gateway.upstream.h11_pool
from bench.fakes.openai import FakeOpenAI
from bench.fakes.threaded import run_fake_openai
from gateway.app import create_app
from gateway.config import Config, parse_config
from gateway.server.serve import ServerOptions, serve
from tests.conftest import free_port
from tests.server.wire import Client

KEY = "sk-capacity-0123456789"
CHAT = b"/v1/chat/completions"


def chat_request(model: str = "mock-fast") -> bytes:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    return (
        b"POST " + CHAT + b" HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


def config_toml(tmp_path: Path, upstream: str | None = None, **server: object) -> str:
    """The gateway's config: the mock, and the upstream at `upstream` as `up-model`."""
    lines = ["[server]", *(f"{k} = {json.dumps(v)}" for k, v in server.items())]
    lines += [
        "[state]",
        f"sqlite_path = {json.dumps(str(tmp_path / 'gateway.sqlite3'))}",
        "[providers.mock]",
        'kind = "mock"',
        '[models."mock-fast"]',
        'provider = "mock"',
        "[[keys]]",
        'name = "test"',
        f'key = "{KEY}"',
    ]
    if upstream is not None:
        lines += [
            "[providers.up]",
            'kind = "openai"',
            f'base_url = "{upstream}"',
            'api_key = "sk-up"',
            '[models."up-model"]',
            'provider = "up"',
        ]
    return "\n".join(lines) + "\n"


def config(tmp_path: Path, upstream: str | None = None, **server: object) -> Config:
    return parse_config(
        tomllib.loads(config_toml(tmp_path, upstream, **server)), env={}, source="t"
    )


# ------------------------------------------------------------------ the connection cap


async def test_a_connection_past_the_cap_gets_503_with_retry_after(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    app = create_app(config(tmp_path))
    opts = ServerOptions(keep_alive_timeout_s=5.0, max_connections=3)
    port = await nursery.start(partial(serve, app, "127.0.0.1", 0, opts))
    held = [await Client.connect(port) for _ in range(3)]
    for c in held:  # served, and kept open (keep-alive)
        assert (await c.request("GET", "/healthz")).status == 200
    extra = await Client.connect(port)
    await extra.send(chat_request())
    r = await extra.response()
    assert r.status == 503 and r.header(b"retry-after") == b"1"
    assert r.header(b"connection") == b"close"
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("gateway_unavailable_error", "overloaded")
    assert "3 connections" in error["message"]
    assert await extra.closed()
    await held[0].aclose()
    await trio.sleep(0.05)
    again = await Client.connect(port)  # a place is free again
    assert (await again.request("GET", "/healthz")).status == 200


# ------------------------------------------------------------------ out of descriptors


@contextlib.contextmanager
def gateway_process(
    tmp_path: Path, nofile: int, upstream: str | None = None, **server: object
) -> Iterator[tuple[int, Path]]:
    """`gateway serve` with RLIMIT_NOFILE `nofile`: its port and its log file."""
    port = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(config_toml(tmp_path, upstream, port=port, **server))
    log = tmp_path / "gateway.log"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard)),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 30
        # Ready, not only listening: a loaded machine may take seconds to get there,
        # and a request waiting on the start-up would read as a full descriptor table.
        while '"message":"ready"' not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def answered(sock: socket.socket, request: bytes, within_s: float) -> bytes | None:
    """The first bytes of the answer to `request`, or None if none came in time."""
    sock.settimeout(within_s)
    sock.sendall(request)
    try:
        return sock.recv(65536) or None
    except TimeoutError:
        return None


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


def fill(port: int, log: Path) -> list[socket.socket]:
    """Connections until the gateway accepts no more (its log says so); the last one
    is left waiting, the others were each served a request."""
    socks: list[socket.socket] = []
    for _ in range(500):
        sock = socket.create_connection(("127.0.0.1", port))
        socks.append(sock)
        if answered(sock, HEALTH, 5.0) is None:
            assert "cannot accept connections (EMFILE" in log.read_text()
            return socks
    raise AssertionError("the gateway never ran out of file descriptors")


def test_out_of_descriptors_accept_pauses_with_one_warning(tmp_path: Path) -> None:
    """Near the fd limit, trio's own accept loop logged a traceback every 100 ms and
    new connections waited for ever; now accept pauses, says so once, and picks up
    the waiting connections as soon as descriptors are free."""
    with gateway_process(tmp_path, nofile=96, max_connections=10_000) as (port, log):
        socks = fill(port, log)
        time.sleep(1.5)
        for sock in socks[:-1]:
            sock.close()
        waiting = socks[-1]
        waiting.settimeout(5)
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200")  # served once fds came back
        waiting.close()
        text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.count("cannot accept connections (EMFILE") == 1, text[-3000:]


def test_the_gateways_own_emfile_is_a_500_not_an_upstream_error(tmp_path: Path) -> None:
    """Connecting upstream with no descriptor left is the gateway's failure: 500
    internal_server_error, not 502 "could not reach the upstream"."""
    with (
        run_fake_openai(api_key="sk-up") as (_fake, url),
        gateway_process(tmp_path, nofile=96, upstream=url, max_connections=10_000) as (port, log),
    ):
        socks = fill(port, log)
        last_served = socks[-2]
        body = chat_request("up-model")
        reply = answered(last_served, body, 5.0)
        assert reply is not None
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500"), reply[:300]
        error = json.loads(rest)["error"]
        assert error["type"] == "internal_server_error" and "upstream" not in error["message"]
        for sock in socks:
            sock.close()


# ------------------------------------------------------------------ idle upstream connections


async def test_idle_upstream_connections_are_closed_on_a_timer(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections that expired were closed only when the pool was next used:
    after a load test, hundreds of descriptors stayed open until the next request."""
    monkeypatch.setattr(gateway.upstream.h11_pool, "IDLE_EXPIRY_S", 0.3)
    monkeypatch.setattr(gateway.state, "PRUNE_EVERY_S", 0.1)
    streams: list[trio.SocketStream] = []  # every connection accepted, here and upstream
    original = trio.SocketListener.accept

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        stream = await original(self)
        streams.append(stream)
        return stream

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    fake = FakeOpenAI(api_key="sk-up")
    upstream_port = await nursery.start(fake.serve)
    url = f"http://127.0.0.1:{upstream_port}/v1"
    app = create_app(config(tmp_path, url))
    port = await nursery.start(partial(serve, app, "127.0.0.1", 0, ServerOptions()))
    c = await Client.connect(port)
    await c.send(chat_request("up-model"))
    assert (await c.response()).status == 200
    accepted = [s for s in streams if s.socket.getsockname()[1] == upstream_port]
    assert len(accepted) == 1 and accepted[0].socket.fileno() != -1  # pooled, idle
    with trio.fail_after(2):
        while accepted[0].socket.fileno() != -1:  # noqa: ASYNC110 (the fake closes when we do)
            await trio.sleep(0.02)
