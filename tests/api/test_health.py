"""`/readyz` on a served gateway with a real Redis: it says why it is not ready, and a
storm of probes costs Redis one PING a second at most."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx

from bench.fakes.threaded import BackgroundTrio
from gateway.api.health import CACHE_S
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import serve_app
from tests.redis_server import RedisServer

CONFIG = """
[state]
sqlite_path = "{dir}/gw.sqlite3"
redis_url = "{redis}"
redis_timeout_s = 0.5
[providers.mock]
kind = "mock"
"""


@contextmanager
def served(tmp_path: Path, redis: RedisServer) -> Iterator[str]:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.format(dir=tmp_path, redis=redis.url))
    app = create_app(load_config(path))
    with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
        yield f"http://127.0.0.1:{port}"


def pings(redis: RedisServer) -> int:
    """How many PINGs the Redis server has answered (INFO commandstats)."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, _, data = data.partition(b"\r\n")  # a bulk string: $LENGTH
        while len(data) < int(head[1:]):
            data += sock.recv(65536)
    for line in data.decode().splitlines():
        if line.startswith("cmdstat_ping:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def readyz(base: str) -> tuple[int, dict[str, object]]:
    r = httpx.get(f"{base}/readyz", timeout=5)
    return r.status_code, r.json()


def test_readiness_checks_the_store_and_redis(tmp_path: Path, own_redis: RedisServer) -> None:
    with served(tmp_path, own_redis) as base:
        assert readyz(base) == (200, {"status": "ready", "checks": {"store": "ok", "redis": "ok"}})
        own_redis.kill()
        deadline = time.monotonic() + CACHE_S + 5
        while (answer := readyz(base))[0] == 200:
            assert time.monotonic() < deadline, answer
            time.sleep(0.1)
        status, body = answer
        assert status == 503 and body["status"] == "unavailable", body
        assert str(body["reason"]).startswith("redis: "), body
        assert body["checks"] == {"store": "ok", "redis": str(body["reason"])[7:]}
        assert httpx.get(f"{base}/healthz").status_code == 200  # alive all the same
        own_redis.start()
        deadline = time.monotonic() + CACHE_S + 5
        while readyz(base)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_probe_storm_costs_redis_one_ping_a_second(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    with served(tmp_path, own_redis) as base, httpx.Client(base_url=base) as client:
        assert client.get("/readyz").status_code == 200
        before, started = pings(own_redis), time.monotonic()
        for _ in range(300):
            assert client.get("/readyz").status_code == 200
        seconds = time.monotonic() - started
        assert pings(own_redis) - before <= seconds / CACHE_S + 1
