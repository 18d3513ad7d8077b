"""bench/soak.py: a few seconds of the soak, its samples, its checks, its CLI."""

from __future__ import annotations

import argparse

import pytest

from bench.__main__ import build_parser
from bench.soak import SoakOptions, format_report, parse_duration, soak, verdict


def test_a_tiny_soak_samples_and_finds_every_answer_in_the_ledger() -> None:
    doc = soak(SoakOptions(duration_s=4, rate=20, streams=3, sample_s=1, warmup_s=1, echo=False))
    assert len(doc["samples"]) >= 4
    for key in ("rss_bytes", "fds", "pooled_connections", "client_connections", "other_fds"):
        assert all(s[key] >= 0 for s in doc["samples"])
    assert doc["held_streams"] == 3
    assert doc["requests"]["plain"] > 40
    assert doc["answered"] == doc["ledger"]["final"]  # every answer has its final row
    # A 4 s run says nothing of leaks (RSS still grows as caches warm, more so on a
    # loaded machine): the ledger and fd checks hold; `verdict` is tested below.
    checks = doc["checks"]
    assert checks["ledger_ok"] and checks["fds_ok"], checks
    assert "in the ledger" in format_report(doc)


def test_the_checks_fail_on_growth_and_on_a_missing_row() -> None:
    def sample(t: float, rss: int, fds: int) -> dict[str, float]:
        return {"t_s": t, "rss_bytes": rss, "other_fds": fds}

    steady = [sample(t, 100, 50) for t in range(10)]
    doc = {"samples": steady, "answered": 10, "ledger": {"final": 10}}
    assert verdict(doc, 2)["ok"]
    growing = [sample(t, 100 + 3 * t, 50 + 5 * t) for t in range(10)]
    checks = verdict({**doc, "samples": growing}, 2)
    assert not checks["rss_ok"] and not checks["fds_ok"]
    assert not verdict({**doc, "ledger": {"final": 9}}, 2)["ledger_ok"]


def test_durations_and_the_command_line() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "1h")] == [90, 90, 1800, 3600]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("soon")
    args = build_parser().parse_args(["soak", "--duration", "30m"])
    assert args.duration_s == 1800 and args.rate is None and args.streams == 200
