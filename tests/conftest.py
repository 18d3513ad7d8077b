"""Shared fixtures: real servers on loopback ports, run in background trio threads.

The gateway runs on the built-in HTTP server exactly as `gateway serve` runs it; the
fake upstreams from bench/ speak the OpenAI wire format over real sockets. Tests
then talk to the gateway with the official `openai` SDK (synchronous client).
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from bench.fakes.openai import FakeOpenAI
from bench.fakes.threaded import BackgroundTrio, run_fake_openai
from gateway.__main__ import server_options
from gateway.app import GatewayApp, create_app
from gateway.config import Config, load_config
from gateway.server.serve import serve
from tests.postgres_server import PostgresServer, running_postgres
from tests.redis_server import RedisServer, running_redis

UPSTREAM_KEY = "sk-fake-upstream"
KEY_ALL = "sk-test-all-0123456789"
KEY_SCOPED = "sk-test-scoped-0123456789"
ADMIN_KEY = "sk-admin-test-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve_app(app: GatewayApp, *, task_status: trio.TaskStatus[int]) -> None:
    """Serve the gateway app on a free loopback port until cancelled."""
    options = server_options(app.gateway.config)
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve, app, "127.0.0.1", 0, options))
            task_status.started(port)
    finally:
        with trio.CancelScope(shield=True):
            await app.gateway.aclose()


@dataclass
class Stack:
    """A running gateway with its fake upstreams."""

    url: str  # the gateway's base URL, ending in /v1
    fake: FakeOpenAI  # lenient, modern OpenAI-compatible upstream
    strict: FakeOpenAI  # an old server: no developer role, no max_completion_tokens
    config: Config


TEST_CONFIG = """
[server]
max_body_bytes = 65536
body_timeout_s = 1

[state]
sqlite_path = "{state_dir}/gateway.sqlite3"
admin_key = "{admin_key}"

[routing]
# One attempt: these tests see each upstream failure's own answer and timing. Routing
# (retries, fallbacks, health) has its own tests: tests/api/test_routing.py.
max_attempts = 1

[providers.fake]
kind = "openai"
base_url = "{fake}"
api_key = "{upstream_key}"
first_byte_timeout_s = 1.5
idle_timeout_s = 1.5
total_timeout_s = 20

[providers.old]
kind = "openai"
base_url = "{strict}"
api_key_env = "TEST_OLD_UPSTREAM_KEY"
developer_role = false
max_tokens_field = "max_tokens"

[providers.down]
kind = "openai"
base_url = "http://127.0.0.1:{closed_port}/v1"
api_key = "unused"
connect_timeout_s = 1

[providers.mock]
kind = "mock"

[providers.gem]
kind = "gemini"
base_url = "http://127.0.0.1:{closed_port}/v1beta"
api_key = "unused"

[models."gpt-test"]
provider = "fake"
upstream_model = "fake-model"

[models."old-test"]
provider = "old"
upstream_model = "fake-model"

[models."mock-fast"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0

[models."mock-priced"]
provider = "mock"
ttft_ms = 0
tokens_per_s = 0
price_input_per_mtok = 10        # 10 micro-dollars per prompt token
price_output_per_mtok = 100      # 100 micro-dollars per completion token

[models."mock-paced"]
provider = "mock"
ttft_ms = 20
tokens_per_s = 200

[[keys]]
name = "all"
key = "{key_all}"

[[keys]]
name = "scoped"
key_env = "TEST_SCOPED_KEY"
models = ["mock-fast", "fake/*"]
"""


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One gateway for the session, configured from a real TOML file."""
    with (
        run_fake_openai(api_key=UPSTREAM_KEY) as (fake, fake_url),
        run_fake_openai(api_key=UPSTREAM_KEY, strict_roles=True) as (strict, strict_url),
    ):
        path: Path = tmp_path_factory.mktemp("config") / "gateway.toml"
        path.write_text(
            TEST_CONFIG.format(
                fake=fake_url,
                strict=strict_url,
                upstream_key=UPSTREAM_KEY,
                closed_port=free_port(),
                key_all=KEY_ALL,
                state_dir=path.parent,
                admin_key=ADMIN_KEY,
            )
        )
        env = {"TEST_OLD_UPSTREAM_KEY": UPSTREAM_KEY, "TEST_SCOPED_KEY": KEY_SCOPED}
        config = load_config(path, env=env)
        app = create_app(config)
        with BackgroundTrio[int](partial(serve_app, app), name="gateway") as port:
            yield Stack(f"http://127.0.0.1:{port}/v1", fake, strict, config)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A real redis-server shared by a module's tests that neither kill it nor count its
    clients (skips when redis-server is not installed)."""
    with running_redis() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill and restart."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole run (skips when PostgreSQL is not
    installed); each test takes a database of its own (`pg_url`)."""
    with running_postgres() as server:
        yield server


_databases = itertools.count()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a fresh database with the gateway's schema, this test's own."""
    return postgres.new_database(f"t{os.getpid()}_{next(_databases)}")
