"""``python -m bench memory``: a real run of its probes: the stages, the packages, the streams."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from bench.memory import STAGES, add_parser, run

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def test_memory_reports_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "memory.json"
    argv = ["memory", "--top", "5", "--streams", "20", "--json", str(out)]
    assert run(parser.parse_args(argv)) == 0
    printed = capsys.readouterr().out
    for stage in STAGES:
        assert stage in printed
    doc = orjson.loads(out.read_bytes())
    rss = doc["rss_mb"]
    assert list(rss) == list(STAGES)
    assert all(rss[s]["rss"] > 0 for s in STAGES)
    assert len(doc["imports_by_package_mb"]) == 5 and doc["traced_imports_mb"] > 0
    streams = doc["streams"]
    assert streams["streams"] == 20 and streams["client"].startswith("opened 20 ")
    assert streams["traced_per_stream_kb"] > 0
    assert any(name.startswith("gateway/") for name in streams["per_stream_by_allocator_b"])
    assert "idle streams" in printed
