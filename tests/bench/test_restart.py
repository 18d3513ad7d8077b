"""``python -m bench restart``: a short real run, its clean-up, and its summaries."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import orjson
import pytest

from bench.procfs import process_tree
from bench.restart import add_parser, format_table, run, summarise
from tests.bench.leftover_processes import processes_under

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["restart", *argv])


def test_summarise() -> None:
    row = summarise("during", [0.010, 0.030, 0.020], 1)
    assert row == {
        "phase": "during",
        "requests": 4,
        "failed": 1,
        "p50_ms": 20.0,
        "p99_ms": 30.0,
        "max_ms": 30.0,
    }
    empty = summarise("baseline", [], 0)
    assert empty["requests"] == 0 and empty["max_ms"] is None
    doc = {"rounds": [{"round": 1, "baseline": empty, "during": row}]}
    assert "during" in format_table(doc) and "30.0" in format_table(doc)


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_parse(["--workers", "1"])) == 2
    assert "--workers >= 2" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_restart_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    out = tmp_path / "restart.json"
    args = _parse(
        ["--rounds", "1", "--baseline", "0.3", "--during", "2", "--log-dir", str(logs),
         "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "baseline" in printed and "during" in printed
    doc = orjson.loads(out.read_bytes())
    [only] = doc["rounds"]
    assert only["during"]["failed"] == 0 and only["during"]["requests"] > 0
    assert only["replacement_started_s"] >= 0
    assert process_tree(os.getpid()) == [os.getpid()]
    assert processes_under(tmp_path) == []
