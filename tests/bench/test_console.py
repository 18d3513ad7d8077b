"""``python -m bench console``: its config, summary and a short real run."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import orjson
import pytest

from bench import console
from gateway.config import parse_config
from tests.bench.leftover_processes import processes_under


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    console.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_the_config_has_an_admin_key_and_the_chat_model(tmp_path: Path) -> None:
    text = console.gateway_config(8080, "http://127.0.0.1:9/v1", tmp_path / "g.sqlite3")
    c = parse_config(tomllib.loads(text), env={}, source="t")
    assert c.state.admin_key and set(c.models) == {"chat"}


def test_the_summary_charges_pages_what_chat_did_not_cost() -> None:
    def run(condition: str, ok: int, cpu: float, pages: int) -> dict[str, object]:
        return {
            "round": 1,
            "condition": condition,
            "ok": ok,
            "rps": ok / 2,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "gateway_cpu_s": cpu,
            "pages": pages,
            "pages_per_s": pages / 2,
        }

    runs = [run("alone", 1000, 0.5, 0), run("console 2/s", 900, 0.49, 4)]
    alone, paced = console.summarise(runs, ["alone", "console 2/s"])
    assert alone["cpu_ms_per_chat"] == 0.5 and alone["cpu_ms_per_page"] is None
    assert paced["rps_ratio"] == 0.9
    assert paced["cpu_ms_per_page"] == pytest.approx((0.49 - 0.45) / 4 * 1000)
    assert "console 2/s" in console.format_table({"summary": [alone, paced]})


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_console_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "console.json"
    args = _parse(
        ["console", "--concurrency", "2", "--duration", "1", "--rounds", "1",
         "--log-dir", str(tmp_path / "logs"), "--json", str(out)],
    )  # fmt: skip
    assert console.run(args) == 0, capsys.readouterr()
    doc = orjson.loads(out.read_bytes())
    rows = {row["condition"]: row for row in doc["summary"]}
    assert set(rows) == {"alone", "console 2/s", "console max"}
    assert rows["console max"]["pages_per_s"] > 0
    assert all(r.get("pages_failed", 0) == 0 for r in doc["runs"])
    # Every server it started is gone (the session's browser, if any, is not ours).
    assert processes_under(tmp_path) == []
