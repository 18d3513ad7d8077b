"""``python -m bench compare``: a short real run of direct vs gateway, and its clean-up."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import orjson
import pytest

from bench.compare import add_parser, format_table, process_tree, run, summarise

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", *argv])


def _processes_under(path: Path) -> list[int]:
    """Live processes whose command line or working directory mention `path`."""
    found = []
    needle = str(path)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append(int(entry))
    return found


def test_compare_direct_vs_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    out = tmp_path / "compare.json"
    args = _parse(
        ["--rounds", "1", "--duration", "1", "--warmup", "0.2", "--connections", "16",
         "--scenarios", "json", "--targets", "direct,gateway",
         "--log-dir", str(logs), "--json", str(out)]
    )  # fmt: skip
    code = run(args)
    printed = capsys.readouterr().out
    assert code == 0, printed

    header = printed.splitlines()[0]
    for column in ("req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "CPU/req ms", "peak RSS MB"):
        assert column in header
    assert any(line.split()[2:3] == ["direct"] for line in printed.splitlines())
    assert any(line.split()[2:3] == ["gateway"] for line in printed.splitlines())

    doc = orjson.loads(out.read_bytes())
    assert set(doc) >= {"options", "targets", "skipped", "rows", "runs"}
    assert doc["targets"] == ["direct", "gateway"]
    rows = {row["target"]: row for row in doc["rows"]}
    assert set(rows) == {"direct", "gateway"}
    for row in rows.values():
        assert set(row) >= {
            "scenario", "connections", "throughput_rps", "p50_s", "p99_s", "added_p50_s",
            "added_p99_s", "cpu_per_request_s", "peak_rss_bytes", "failed", "gateway_over_this",
        }  # fmt: skip
        assert row["scenario"] == "json" and row["connections"] == 16
        assert row["throughput_rps"] > 0
        assert row["failed"] == 0
        assert row["cpu_per_request_s"] is not None and row["cpu_per_request_s"] >= 0
        assert row["peak_rss_bytes"] > 0
    assert rows["direct"]["added_p50_s"] is None
    assert rows["gateway"]["added_p50_s"] is not None
    assert len(doc["runs"]) == 2

    # Every process compare started is gone: no child of ours, nothing running from its dir.
    assert process_tree(os.getpid()) == [os.getpid()]
    assert _processes_under(tmp_path) == []


def test_summarise_ratios_and_table() -> None:
    def fake_run(target: str, rps: float, p50: float, cpu: float) -> dict[str, object]:
        return {
            "target": target, "scenario": "json", "connections": 16, "ok": 100, "failed": 0,
            "throughput_rps": rps, "p50_s": p50, "p99_s": p50 * 2, "cpu_per_request_s": cpu,
            "peak_rss_bytes": 2**20,
        }  # fmt: skip

    rows = summarise(
        [
            fake_run("direct", 5000, 0.002, 0.0001),
            fake_run("gateway", 1000, 0.005, 0.0005),
            fake_run("gateway", 1200, 0.007, 0.0007),
            fake_run("litellm", 100, 0.050, 0.010),
        ]
    )
    by = {r["target"]: r for r in rows}
    assert by["gateway"]["throughput_rps"] == 1100
    assert by["gateway"]["added_p50_s"] == pytest.approx(0.004)
    assert by["litellm"]["gateway_over_this"]["throughput"] == pytest.approx(11.0)
    assert by["litellm"]["gateway_over_this"]["cpu_per_request"] == pytest.approx(0.06)
    assert "gateway/litellm json 16: throughput 11.00x" in format_table(rows)
