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
from tests.test_lifecycle import KEY, Running, serving, write_config

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


def post(gw: Running, model: str, authorization: str | None) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {} if authorization is None else {"authorization": authorization}
    r = httpx.post(f"{gw.base}/v1/chat/completions", json=body, headers=headers)
    return r.status_code


def by(rows: list[dict[str, Any]], column: str) -> dict[Any, dict[str, Any]]:
    return {row[column]: row for row in rows}


def test_usage_counts_served_and_refused_requests_config_keys_by_name(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    write_config(config, state=f'admin_key = "{ADMIN}"')
    with serving(config) as gw:
        limited = cli_json("keys", "create", "--config", str(config), "--name", "lim", "--rpm", "1")
        scoped = cli_json(
            "keys", "create", "--config", str(config), "--name", "sc", "--models", "x"
        )
        time.sleep(1.5)  # the key cache's refresh
        assert [post(gw, "before", f"Bearer {KEY}") for _ in range(2)] == [200, 200]
        assert [post(gw, "before", f"Bearer {limited['key']}") for _ in range(2)] == [200, 429]
        assert post(gw, "before", f"Bearer {scoped['key']}") == 403
        assert post(gw, "before", "Bearer sk-wrong") == 401
        assert post(gw, "before", None) == 401

        admin = {"authorization": f"Bearer {ADMIN}"}
        r = httpx.get(f"{gw.base}/admin/usage", headers=admin)  # flushes first
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["object"] == "usage" and report["by"] == "key"
        keys = {(row["key_id"], row["key_name"]): row for row in report["data"]}
        ops = keys[(None, "ops")]  # the config key, by its name
        assert (ops["requests"], ops["refused"], ops["errors"]) == (2, 0, 0)
        assert ops["prompt_tokens"] > 0 and ops["completion_tokens"] > 0
        assert (
            keys[(limited["id"], "lim")]["requests"],
            keys[(limited["id"], "lim")]["refused"],
        ) == (2, 1)
        assert keys[(scoped["id"], "sc")]["refused"] == 1
        assert (keys[(None, None)]["requests"], keys[(None, None)]["refused"]) == (2, 2)
        assert report["total"]["requests"] == 7 and report["total"]["refused"] == 4

        models = by(
            httpx.get(f"{gw.base}/admin/usage?by=model", headers=admin).json()["data"], "model"
        )
        assert models["before"]["requests"] == 5 and models[None]["refused"] == 2  # the 401s
        statuses = by(
            httpx.get(f"{gw.base}/admin/usage?by=status", headers=admin).json()["data"], "status"
        )
        assert statuses["ok"]["requests"] == 3
        assert statuses["rate_limit_exceeded"]["refused"] == 1
        assert statuses["model_not_allowed"]["refused"] == 1
        assert statuses["invalid_api_key"]["refused"] == 2
        only_ops = httpx.get(f"{gw.base}/admin/usage?by=day&key=ops", headers=admin).json()
        assert only_ops["total"]["requests"] == 2 and len(only_ops["data"]) == 1
        future = httpx.get(f"{gw.base}/admin/usage?since=2999-01-01", headers=admin).json()
        assert future["data"] == [] and future["total"]["requests"] == 0
        for query, param in (("by=week", "by"), ("since=soon", "since"), ("x=1", "x")):
            r = httpx.get(f"{gw.base}/admin/usage?{query}", headers=admin)
            assert r.status_code == 400 and r.json()["error"]["param"] == param

        # The command line reads the same database.
        same = cli_json("usage", "--config", str(config))
        assert same["total"] == report["total"]
        cmd = run_gateway("usage", "--config", str(config), "--by", "model", "--csv")
        assert cmd.returncode == 0, cmd.stderr
        header, *rows = cmd.stdout.splitlines()
        assert header.startswith("model,requests,refused,errors,prompt_tokens")
        assert any(row.startswith("before,5,2,0,") for row in rows), rows
        assert any(row.startswith("-,2,2,0,") for row in rows), rows
        cmd = run_gateway("usage", "--config", str(config), "--key", limited["id"])
        assert cmd.returncode == 0, cmd.stderr
        assert f"database {tmp_path / 'gw.sqlite3'}" in cmd.stderr
        table = cmd.stdout.splitlines()
        assert table[0].startswith(f"usage by key, key {limited['id']}, from the start to now")
        assert table[1].split()[:3] == ["KEY", "ID", "KEY"]
        assert table[2].split()[:4] == [limited["id"], "lim", "2", "1"]
        assert table[-1].split()[:3] == ["TOTAL", "2", "1"]
        cmd = run_gateway("usage", "--config", str(config), "--since", "tomorrow")
        assert cmd.returncode == 2 and "--since: 'tomorrow' is not a time" in cmd.stderr


def test_usage_on_a_path_without_a_database_says_so(tmp_path: Path) -> None:
    cmd = run_gateway("usage", "--db", str(tmp_path / "none.sqlite3"))
    assert cmd.returncode == 1 and "no database at" in cmd.stderr
    assert not (tmp_path / "none.sqlite3").exists()


def test_a_csv_report_never_hands_a_spreadsheet_a_formula(tmp_path: Path) -> None:
    """Key and model names come from operators and clients: a cell a spreadsheet would
    run as a formula (`=`, `+`, `-`, `@`) is written as text."""
    import csv
    import io
    import time as clock

    from gateway.store.records import UsageRow
    from gateway.store.sqlite import SqliteStore

    config = tmp_path / "gw.toml"
    write_config(config)
    store = SqliteStore(tmp_path / "gw.sqlite3")
    now = clock.time()
    names = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "ok"]
    store.write_usage(
        [
            UsageRow(f"chatcmpl-{i}", None, name, "p", 1, 1, 0, 1, "ok", 1, now, key_name=name)
            for i, name in enumerate(names)
        ]
    )
    store.close()
    for by, column in (("key", "key_name"), ("model", "model")):
        cmd = run_gateway("usage", "--config", str(config), "--by", by, "--csv")
        assert cmd.returncode == 0, cmd.stderr
        cells = [row[column] for row in csv.DictReader(io.StringIO(cmd.stdout))]
        assert sorted(cells) == sorted(["'" + n for n in names[:4]] + ["ok"]), cells
