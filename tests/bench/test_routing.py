"""``python -m bench routing`` and ``bench failover``: their figures and a short real run."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

import orjson
import pytest

from bench import failover, routing
from bench.procfs import process_tree
from gateway.config import parse_config
from tests.bench.leftover_processes import processes_under


def _parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="command"))  # type: ignore[attr-defined]
    return parser.parse_args(argv)


def test_the_routing_micro_benchmark_times_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert routing.run(_parse(routing, ["routing", "--calls", "100", "--repeat", "1"])) == 0
    printed = capsys.readouterr().out
    assert "plan: a [models] id, one deployment" in printed
    assert "routing's share of it" in printed
    rows = dict(routing.measure(100, 1))
    assert all(us > 0 for name, us in rows.items() if not name.startswith("  "))


def test_the_failover_config_has_the_three_models(tmp_path: Path) -> None:
    text = failover.gateway_config(8080, "http://127.0.0.1:9/v1", 10, tmp_path / "g.sqlite3")
    c = parse_config(tomllib.loads(text), env={}, source="t")
    assert set(c.routed) == set(failover.MODELS)
    flaky = [t.model for t in c.routed["flaky-dead"].targets]
    assert sum("fail_rate=0.2" in m for m in flaky) == 1 and "dead/fake-model" in flaky
    every = [t.model for r in c.routed.values() for t in r.targets]
    assert len(set(every)) == len(every)  # no deployment shared between the models


def test_the_failover_summary_compares_each_round_with_healthy() -> None:
    def run(model: str, rnd: int, p50: float, p99: float) -> dict[str, object]:
        return {
            "model": model,
            "round": rnd,
            "requests": 10,
            "ok": 10,
            "p50_ms": p50,
            "p99_ms": p99,
        }

    runs = [run("healthy", 1, 5, 10), run("flaky", 1, 6, 14), run("healthy", 2, 7, 10)]
    runs.append(run("flaky", 2, 7, 12))
    [healthy, flaky] = failover.summarise(runs, {"healthy": 1.0, "flaky": 1.07})
    assert healthy["added_p50_ms"] is None and healthy["ok_share"] == 1.0
    assert flaky["added_p50_ms"] == 0.5 and flaky["added_p99_ms"] == 3.0
    table = failover.format_table({"summary": [healthy, flaky]})
    assert "flaky" in table and "1.070" in table


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_failover_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "failover.json"
    args = _parse(
        failover,
        ["failover", "--rate", "50", "--duration", "1", "--rounds", "1",
         "--log-dir", str(tmp_path / "logs"), "--json", str(out)],
    )  # fmt: skip
    assert failover.run(args) == 0, capsys.readouterr()
    doc = orjson.loads(out.read_bytes())
    assert {row["model"] for row in doc["summary"]} == set(failover.MODELS)
    assert all(row["ok_share"] == 1.0 for row in doc["summary"])
    assert doc["attempts_per_request"]["healthy"] == 1.0
    assert process_tree(os.getpid()) == [os.getpid()]
    assert processes_under(tmp_path) == []
