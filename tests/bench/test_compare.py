"""``python -m bench compare``: short real runs (direct, gateway with 1 and 2 workers,
half saturation, Portkey when installed), their clean-up, and the summaries."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.compare import (
    add_parser,
    format_half_saturation_table,
    format_table,
    run,
    summarise,
    summarise_half_saturation,
)
from bench.peers import PORTKEY_NPX
from bench.procfs import process_tree
from bench.scenarios import LLM_STREAMS, SCENARIOS, Scenario
from bench.targets import gateway_config
from tests.bench.leftover_processes import processes_under

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

PORTKEY_EXE = Path("/tmp/portkey/node_modules/.bin/gateway")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", *argv])


def _assert_all_stopped(tmp_path: Path) -> None:
    """Every process compare started is gone: no child of ours, nothing from its dir."""
    assert process_tree(os.getpid()) == [os.getpid()]
    assert processes_under(tmp_path) == []


def _table_cells(printed: str) -> set[tuple[str, ...]]:
    """(scenario, conns, workers, target) of each row of the main table."""
    return {tuple(line.split()[:4]) for line in printed.splitlines() if len(line.split()) >= 12}


def test_compare_workers_direct_vs_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis = shutil.which("redis-server") is not None
    logs = tmp_path / "logs"
    out = tmp_path / "compare.json"
    args = _parse(
        ["--rounds", "1", "--duration", "1", "--warmup", "0.2", "--connections", "16",
         "--scenarios", "json,stream", "--targets", "direct,gateway", "--workers", "1,2",
         "--log-dir", str(logs), "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed

    header = printed.splitlines()[0]
    for column in ("workers", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "CPU/req ms",
                   "peak RSS MB"):  # fmt: skip
        assert column in header
    cells = _table_cells(printed)
    expected = {("direct", 1), ("gateway", 1), ("direct", 2)} | (
        {("gateway", 2)} if redis else set()
    )
    for target, workers in expected:
        for scenario in ("json", "stream"):
            assert (scenario, "16", str(workers), target) in cells, printed

    doc = orjson.loads(out.read_bytes())
    assert set(doc) >= {"options", "targets", "skipped", "rows", "runs", "half_saturation"}
    assert doc["options"]["workers"] == [1, 2]
    assert doc["options"]["scenarios"] == ["json", "stream"]
    assert doc["targets"] == ["direct", "gateway"]
    if not redis:
        assert "redis-server" in doc["skipped"]["gateway (workers 2)"]
    rows = {(r["scenario"], r["workers"], r["target"]): r for r in doc["rows"]}
    assert {(t, w) for _, w, t in rows} == expected
    for row in rows.values():
        assert set(row) >= {
            "scenario", "connections", "workers", "throughput_rps", "p50_s", "p99_s",
            "added_p50_s", "added_p99_s", "cpu_per_request_s", "peak_rss_bytes", "failed",
            "gateway_over_this",
        }  # fmt: skip
        assert row["connections"] == 16
        assert row["throughput_rps"] > 0
        assert row["failed"] == 0
        assert row["cpu_per_request_s"] is not None and row["cpu_per_request_s"] >= 0
        assert row["peak_rss_bytes"] > 0
        if row["target"] == "direct":
            assert row["added_p50_s"] is None
        else:  # over the direct run of the same scenario and block
            direct = rows[(row["scenario"], row["workers"], "direct")]
            assert row["added_p50_s"] == pytest.approx(row["p50_s"] - direct["p50_s"])
            assert row["added_p99_s"] == pytest.approx(row["p99_s"] - direct["p99_s"])
    assert len(doc["runs"]) == 2 * len(expected)
    assert {r["workers"] for r in doc["runs"]} == {1, 2}
    if redis:  # two workers are two processes under hypercorn's supervisor
        gw2 = [r for r in doc["runs"] if r["target"] == "gateway" and r["workers"] == 2]
        assert all(r["processes"] >= 3 for r in gw2), gw2
        assert (
            'redis_url = "redis://127.0.0.1:' in (logs / "workers-2" / "gateway.toml").read_text()
        )
    assert "redis_url" not in (logs / "workers-1" / "gateway.toml").read_text()
    _assert_all_stopped(tmp_path)


def test_compare_half_saturation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compare.json"
    args = _parse(
        ["--rounds", "1", "--duration", "1", "--warmup", "0.2", "--connections", "16",
         "--scenarios", "json", "--targets", "direct,gateway", "--half-saturation",
         "--log-dir", str(tmp_path / "logs"), "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "half saturation: open loop" in printed
    assert "gateway, 1 worker: added p50" in printed

    doc = orjson.loads(out.read_bytes())
    saturation = next(r for r in doc["rows"] if r["target"] == "gateway")["throughput_rps"]
    half = {r["target"]: r for r in doc["half_saturation"]["rows"]}
    assert set(half) == {"direct", "gateway"}
    for row in half.values():
        assert row["workers"] == 1 and row["scenario"] == "json"
        assert row["rate_rps"] == pytest.approx(saturation / 2)
        assert row["ok"] > 0 and row["failed"] == 0 and row["dropped"] == 0
        assert row["p50_s"] is not None and row["p99_s"] is not None
    gw = half["gateway"]
    assert gw["added_p50_s"] == pytest.approx(gw["p50_s"] - half["direct"]["p50_s"])
    assert gw["added_p99_s"] == pytest.approx(gw["p99_s"] - half["direct"]["p99_s"])
    assert set(gw["meets_target"]) == {"added_p50", "added_p99"}
    assert half["direct"]["added_p50_s"] is None and half["direct"]["meets_target"] is None
    assert all(r["mode"] == "open" for r in doc["half_saturation"]["runs"])
    _assert_all_stopped(tmp_path)


@pytest.mark.skipif(
    not PORTKEY_EXE.exists() or shutil.which("node") is None, reason="Portkey not installed"
)
def test_compare_portkey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    out = tmp_path / "compare.json"
    args = _parse(
        ["--rounds", "1", "--duration", "1", "--warmup", "0.2", "--connections", "8",
         "--scenarios", "json,stream", "--targets", "direct,portkey",
         "--portkey", str(PORTKEY_EXE), "--log-dir", str(logs), "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    doc = orjson.loads(out.read_bytes())
    rows = {(r["scenario"], r["target"]): r for r in doc["rows"]}
    for scenario in ("json", "stream"):
        row = rows[(scenario, "portkey")]
        assert row["ok"] > 0 and row["failed"] == 0, row
        assert row["added_p50_s"] is not None
    log = (logs / "workers-1" / "portkey.log").read_text(errors="replace")
    assert "bench-compare: blocked" not in log  # it never tried to leave the loopback
    assert "immutable" not in log
    _assert_all_stopped(tmp_path)


def test_parser_options() -> None:
    args = _parse([])
    assert args.portkey is None
    assert args.workers == [1]
    assert args.scenarios == ["json", "stream"]
    assert args.half_saturation is False
    assert _parse(["--portkey"]).portkey == PORTKEY_NPX
    assert _parse(["--portkey", "--rounds", "3"]).portkey == PORTKEY_NPX
    assert _parse(["--portkey", "/opt/pk/gateway"]).portkey == "/opt/pk/gateway"
    assert _parse(["--workers", "1,2", "--scenarios", "paced"]).workers == [1, 2]
    with pytest.raises(SystemExit):
        _parse(["--workers", "0"])
    assert SCENARIOS["stream"].upstream_model == "fake-model@chunks=50"
    assert SCENARIOS["paced"].upstream_model == "fake-model@chunks=50&chunk_interval_ms=1"
    assert SCENARIOS["paced200"].upstream_model == "fake-model@chunks=200&chunk_interval_ms=1"
    assert SCENARIOS["json"].upstream_model == "fake-model"


def test_gateway_config_redis() -> None:
    one = gateway_config(8000, "http://127.0.0.1:1/v1", Path("/tmp/x.sqlite3"), 1)
    assert "workers = 1" in one and "redis_url" not in one
    two = gateway_config(
        8000, "http://127.0.0.1:1/v1", Path("/tmp/x.sqlite3"), 2, "redis://127.0.0.1:6390/0"
    )
    state = two.split("[state]")[1].split("[providers")[0]
    assert 'redis_url = "redis://127.0.0.1:6390/0"' in state
    assert "workers = 2" in two


def _fake_run(
    target: str, rps: float, p50: float, cpu: float, workers: int | None = None
) -> dict[str, Any]:
    run_ = {
        "target": target, "scenario": "json", "connections": 16, "ok": 100, "failed": 0,
        "throughput_rps": rps, "p50_s": p50, "p99_s": p50 * 2, "cpu_per_request_s": cpu,
        "peak_rss_bytes": 2**20,
    }  # fmt: skip
    if workers is not None:
        run_["workers"] = workers
    return run_


def test_summarise_ratios_and_table() -> None:
    rows = summarise(
        [
            _fake_run("direct", 5000, 0.002, 0.0001),
            _fake_run("gateway", 1000, 0.005, 0.0005),
            _fake_run("gateway", 1200, 0.007, 0.0007),
            _fake_run("litellm", 100, 0.050, 0.010),
        ]
    )
    by = {r["target"]: r for r in rows}
    assert by["gateway"]["workers"] == 1  # runs without "workers" count as 1
    assert by["gateway"]["throughput_rps"] == 1100
    assert by["gateway"]["added_p50_s"] == pytest.approx(0.004)
    assert by["litellm"]["gateway_over_this"]["throughput"] == pytest.approx(11.0)
    assert by["litellm"]["gateway_over_this"]["cpu_per_request"] == pytest.approx(0.06)
    assert "gateway/litellm json 16 conns, 1 worker: throughput 11.00x" in format_table(rows)


def test_summarise_with_workers() -> None:
    rows = summarise(
        [
            _fake_run("direct", 5000, 0.002, 0.0001, workers=1),
            _fake_run("gateway", 1000, 0.005, 0.0005, workers=1),
            _fake_run("litellm", 100, 0.050, 0.010, workers=1),
            _fake_run("direct", 5000, 0.003, 0.0001, workers=2),
            _fake_run("gateway", 1800, 0.004, 0.0006, workers=2),
            _fake_run("litellm", 200, 0.030, 0.012, workers=2),
        ]
    )
    by = {(r["workers"], r["target"]): r for r in rows}
    assert len(by) == 6
    # Added latency and ratios within the same workers count, never across.
    assert by[(1, "gateway")]["added_p50_s"] == pytest.approx(0.003)
    assert by[(2, "gateway")]["added_p50_s"] == pytest.approx(0.001)
    assert by[(2, "litellm")]["added_p99_s"] == pytest.approx(0.054)
    assert by[(1, "litellm")]["gateway_over_this"]["throughput"] == pytest.approx(10.0)
    assert by[(2, "litellm")]["gateway_over_this"]["throughput"] == pytest.approx(9.0)
    table = format_table(rows)
    assert table.splitlines()[0].split()[:4] == ["scenario", "conns", "workers", "target"]
    assert ("json", "16", "2", "gateway") in _table_cells(table)
    assert "gateway/litellm json 16 conns, 2 workers: throughput 9.00x" in table

    half = summarise_half_saturation(
        [
            {**_fake_run("direct", 500, 0.0010, 0.0001, workers=2), "rate_rps": 500.0},
            {**_fake_run("gateway", 500, 0.0014, 0.0005, workers=2), "rate_rps": 500.0},
        ]
    )
    gw = next(r for r in half if r["target"] == "gateway")
    assert gw["added_p50_s"] == pytest.approx(0.0004)
    assert gw["meets_target"] == {"added_p50": True, "added_p99": True}
    assert "gateway, 2 workers: added p50 +0.40 ms < 1 ms ok" in format_half_saturation_table(half)


def test_compare_paced_llm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short real paced-llm run (its directives shortened: the real one lasts 6-32 s
    a stream): its streams count, its own table, CPU per 1,000 tokens and added ITL."""
    short = Scenario(
        "paced-llm",
        True,
        "ttft_ms=50&chunk_interval_ms=10&chunk_jitter_ms=5&chunks=10&chunks_max=30",
        "m-paced-llm",
        LLM_STREAMS,
        max_tokens=1024,
    )
    monkeypatch.setitem(SCENARIOS, "paced-llm", short)
    out = tmp_path / "compare.json"
    args = _parse(
        ["--rounds", "1", "--scenarios", "paced-llm", "--targets", "direct,gateway",
         "--llm-streams", "8", "--llm-duration", "1", "--log-dir", str(tmp_path / "logs"),
         "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "paced-llm: first token after 300 ms" in printed
    assert "CPU/1k tok ms" in printed and "+ITL p99 ms" in printed
    rows = {r["target"]: r for r in orjson.loads(out.read_bytes())["rows"]}
    for target in ("direct", "gateway"):
        row = rows[target]
        assert row["connections"] == 8 and row["failed"] == 0
        assert row["output_tokens"] >= 8 * 10
        assert row["cpu_per_ktok_s"] is not None and row["cpu_per_ktok_s"] > 0
        assert row["itl_p99_s"] is not None and row["itl_p99_s"] >= row["itl_p50_s"]
        assert row["rss_bytes"] > 0


def test_compare_gateway_on_postgres(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--targets gateway-pg`: the gateway with its state in a throwaway PostgreSQL that
    compare starts and removes, beside the SQLite one, ratios between them."""
    from tests.postgres_server import require_postgres

    require_postgres()
    args = _parse(
        ["--rounds", "1", "--duration", "1", "--warmup", "0.2", "--connections", "16",
         "--scenarios", "json", "--targets", "direct,gateway,gateway-pg",
         "--log-dir", str(tmp_path / "logs")]
    )  # fmt: skip
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert ("json", "16", "1", "gateway-pg") in _table_cells(printed), printed
    assert "gateway/gateway-pg json 16 conns" in printed
    config = (tmp_path / "logs" / "workers-1" / "gateway-pg.toml").read_text()
    assert 'postgres_url = "postgresql://' in config
    _assert_all_stopped(tmp_path)
