"""``python -m bench lag``: a short real run, its report and its figures."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from bench.lag import add_parser, run

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_lag_probe_reports_the_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "lag.json"
    args = parser.parse_args(
        ["lag", "--rate", "40", "--duration", "1", "--scenario", "stream", "--json", str(out),
         "--log-dir", str(tmp_path / "logs")]
    )  # fmt: skip
    assert run(args) == 0
    printed = capsys.readouterr().out
    for line in ("task steps:", "scheduler batches:", "oversleeps:", "main thread:", "gc pauses:"):
        assert line in printed
    doc = orjson.loads(out.read_bytes())
    assert doc["client"]["ok"] > 0
    assert doc["steps"]["count"] > 0 and doc["batches"]["count"] > 0
    assert doc["main_thread_cpu_s"] > 0 and doc["main_thread_runqueue_wait_s"] >= 0
    assert set(doc["gc"]) == {"0", "1", "2"}


def test_compare_pin_cpu_option() -> None:
    from bench.compare import add_parser as compare_parser

    parser = argparse.ArgumentParser()
    compare_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["compare", "--pin-cpu", "1"]).pin_cpu == 1
    assert parser.parse_args(["compare"]).pin_cpu is None
