"""Keys and usage as an operator sees them on a served gateway: a key update reaches
both workers within 2 s, and `gateway usage` / `GET /admin/usage` count what was served
and what was refused, config keys by name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.redis_server import require_redis_server, running_redis
from tests.test_cli import gateway as run_gateway
from tests.test_lifecycle import Running, serving, write_config

ADMIN = "sk-admin-usage-0123456789"


@contextmanager
def two_workers(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    require_redis_server()
    with running_redis() as redis:
        config = tmp_path / "gw.toml"
        write_config(config, state=f'redis_url = "{redis.url}"\nadmin_key = "{ADMIN}"')
        with serving(config, "--workers", "2") as gw:
            yield gw, config


def cli_json(*args: str) -> Any:
    r = run_gateway(*args, "--json")
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout)


def statuses(gw: Running, model: str, key: str, n: int = 16) -> list[int]:
    """The statuses of `n` requests, each on a new connection (the kernel spreads them
    over the workers)."""
    return [gw.chat(model, key).status_code for _ in range(n)]


def test_a_key_update_reaches_both_workers_within_2_s(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (gw, config):
        created = cli_json("keys", "create", "--config", str(config), "--name", "w")
        key, key_id = created["key"], created["id"]
        time.sleep(2.0)
        assert set(statuses(gw, "before", key)) == {200}

        r = httpx.patch(  # lands on one worker; the other hears it from the store
            f"{gw.base}/admin/keys/{key_id}",
            json={"models": ["slow"], "rpm": 3},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code == 200, r.text
        time.sleep(2.0)
        assert set(statuses(gw, "before", key)) == {403}
        served = statuses(gw, "slow", key, 10)
        assert served.count(200) == 3 and served.count(429) == 7, served

        run_gateway("keys", "update", key_id, "--config", str(config), "--models", "all")
        time.sleep(2.0)
        assert set(statuses(gw, "before", key)) == {429}  # in scope again, still over RPM
